import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  assertAllowedUrl,
  type FetchImpl,
  isBlockedAddress,
  OutboundFetchError,
  type OutboundFetchReason,
  type SafeFetchOptions,
  safeFetch,
  safeFetchJson,
} from "../src/infra/http";

async function expectReason(p: Promise<unknown>, reason: OutboundFetchReason): Promise<OutboundFetchError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(OutboundFetchError);
    const e = err as OutboundFetchError;
    expect(e.reason).toBe(reason);
    expect(e.message).not.toContain("\n    at ");
    return e;
  }
  throw new Error(`expected OutboundFetchError(${reason}), but the promise resolved`);
}

// ---------------------------------------------------------------------------
// isBlockedAddress
// ---------------------------------------------------------------------------

describe("isBlockedAddress", () => {
  const blocked = [
    // 0.0.0.0/8
    "0.0.0.0",
    "0.255.255.255",
    // 10/8
    "10.0.0.0",
    "10.1.2.3",
    "10.255.255.255",
    // 100.64/10
    "100.64.0.0",
    "100.127.255.255",
    // 127/8
    "127.0.0.1",
    "127.255.255.254",
    // 169.254/16
    "169.254.169.254",
    "169.254.0.1",
    // 172.16/12
    "172.16.0.0",
    "172.31.255.255",
    // 192.0.0/24
    "192.0.0.1",
    "192.0.0.255",
    // 192.0.2/24
    "192.0.2.1",
    // 192.168/16
    "192.168.0.1",
    "192.168.255.255",
    // 198.18/15
    "198.18.0.1",
    "198.19.255.255",
    // 198.51.100/24
    "198.51.100.7",
    // 203.0.113/24
    "203.0.113.9",
    // 224/4
    "224.0.0.1",
    "239.255.255.255",
    // 240/4 and broadcast
    "240.0.0.1",
    "254.1.1.1",
    "255.255.255.255",
    // IPv6
    "::",
    "::1",
    "[::1]",
    "fc00::1",
    "fd12:3456:789a::1",
    "fe80::1",
    "fe80::1%eth0",
    "febf:ffff::1",
    "ff02::1",
    "ff00::",
    "2001:db8::1",
    "2001:0db8:ffff::1",
    "64:ff9b::1.2.3.4",
    "64:ff9b::808:808",
    "64:ff9b:1:1::1",
    // IPv4-mapped / compatible, dotted and hex
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::FFFF:7F00:0001",
    "::ffff:10.0.0.1",
    "::ffff:a9fe:a9fe",
    "0:0:0:0:0:ffff:c0a8:0101",
    "::127.0.0.1",
    "::7f00:1",
    "::a00:1",
    // 6to4 embedding a private IPv4
    "2002:7f00:1::",
    "2002:c0a8:101::1",
    // not an IP at all -> fail closed
    "",
    "localhost",
    "example.com",
    "1.2.3",
    "256.1.1.1",
    "1::2::3",
  ];
  const allowed = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "9.255.255.255",
    "11.0.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "126.255.255.255",
    "128.0.0.0",
    "169.253.255.255",
    "169.255.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.1",
    "192.0.3.1",
    "192.167.255.255",
    "192.169.0.0",
    "198.17.255.255",
    "198.20.0.0",
    "198.51.99.1",
    "198.51.101.1",
    "203.0.112.1",
    "203.0.114.1",
    "223.255.255.255",
    "2606:4700::1111",
    "2001:4860:4860::8888",
    "[2606:4700:4700::1111]",
    "fbff::1",
    "fec0::1",
    "2001:db9::1",
    "2001:db7::1",
    "64:ff9a::1",
    "64:ff9b:2::1",
    "64:ff9c::1",
    "::ffff:8.8.8.8",
    "::ffff:808:808",
    "::8.8.8.8",
    "2002:808:808::1",
  ];

  for (const ip of blocked) {
    test(`blocks ${JSON.stringify(ip)}`, () => {
      expect(isBlockedAddress(ip)).toBe(true);
    });
  }
  for (const ip of allowed) {
    test(`allows ${ip}`, () => {
      expect(isBlockedAddress(ip)).toBe(false);
    });
  }
});

// ---------------------------------------------------------------------------
// allowInsecure = true, against real loopback servers
// ---------------------------------------------------------------------------

describe("safeFetch with allowInsecure (local servers)", () => {
  const JSON_TEXT = '{ "name": "agent",\n  "n": 1.50, "u": "\\u00e9" }';
  let server: ReturnType<typeof Bun.serve>;
  let base = "";
  let refusedPort = 0;
  const pending = new Set<ReturnType<typeof setInterval>>();

  beforeAll(async () => {
    server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(req) {
        const path = new URL(req.url).pathname;
        switch (path) {
          case "/json":
            return new Response(JSON_TEXT, { headers: { "content-type": "application/json" } });
          case "/echo-headers":
            return Response.json({
              accept: req.headers.get("accept"),
              custom: req.headers.get("x-custom"),
            });
          case "/big":
            return new Response("x".repeat(2000), { headers: { "content-type": "application/json" } });
          case "/exact":
            return new Response("y".repeat(1000));
          case "/stream-forever": {
            let timer: ReturnType<typeof setInterval> | undefined;
            const stream = new ReadableStream<Uint8Array>({
              start(ctrl) {
                const chunk = new Uint8Array(256).fill(120);
                timer = setInterval(() => {
                  try {
                    ctrl.enqueue(chunk);
                  } catch {
                    if (timer) clearInterval(timer);
                  }
                }, 1);
                pending.add(timer);
              },
              cancel() {
                if (timer) clearInterval(timer);
              },
            });
            return new Response(stream, { headers: { "content-type": "application/json" } });
          }
          case "/slow-headers":
            return new Promise<Response>((resolve) => setTimeout(() => resolve(Response.json({})), 3000));
          case "/slow-body": {
            let timer: ReturnType<typeof setTimeout> | undefined;
            const stream = new ReadableStream<Uint8Array>({
              start(ctrl) {
                ctrl.enqueue(new TextEncoder().encode('{"a":'));
                timer = setTimeout(() => {
                  try {
                    ctrl.enqueue(new TextEncoder().encode("1}"));
                    ctrl.close();
                  } catch {}
                }, 3000);
              },
              cancel() {
                if (timer) clearTimeout(timer);
              },
            });
            return new Response(stream);
          }
          case "/redirect-abs":
            return new Response(null, { status: 302, headers: { location: `${base}/json` } });
          case "/redirect-rel":
            return new Response(null, { status: 301, headers: { location: "redirect-rel2" } });
          case "/redirect-rel2":
            return new Response(null, { status: 307, headers: { location: "/json" } });
          case "/redirect-303":
            return new Response(null, { status: 303, headers: { location: "/json" } });
          case "/redirect-308":
            return new Response(null, { status: 308, headers: { location: "/json" } });
          case "/loop":
            return new Response(null, { status: 302, headers: { location: "/loop" } });
          case "/chain1":
            return new Response(null, { status: 302, headers: { location: "/chain2" } });
          case "/chain2":
            return new Response(null, { status: 302, headers: { location: "/chain3" } });
          case "/chain3":
            return new Response(null, { status: 302, headers: { location: "/chain4" } });
          case "/chain4":
            return new Response(null, { status: 302, headers: { location: "/json" } });
          case "/redirect-file":
            return new Response(null, { status: 302, headers: { location: "file:///etc/passwd" } });
          case "/invalid-json":
            return new Response("{not json", { headers: { "content-type": "application/json" } });
          case "/server-error":
            return new Response("oops", { status: 500 });
          default:
            return new Response("not found", { status: 404 });
        }
      },
    });
    base = `http://127.0.0.1:${server.port}`;

    // A port with nothing listening: bind, note the port, close.
    const tmp = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
    refusedPort = tmp.port ?? 0;
    await tmp.stop(true);
  });

  afterAll(async () => {
    for (const t of pending) clearInterval(t);
    await server.stop(true);
  });

  const opts = (over: Partial<SafeFetchOptions> = {}): SafeFetchOptions => ({
    allowInsecure: true,
    maxBytes: 1000,
    timeoutMs: 2000,
    ...over,
  });

  test("fetches JSON and keeps the exact text", async () => {
    const r = await safeFetchJson(`${base}/json`, opts());
    expect(r.text).toBe(JSON_TEXT);
    expect(r.value).toEqual({ name: "agent", n: 1.5, u: "é" });
    expect(r.finalUrl).toBe(`${base}/json`);
  });

  test("sends the Accept header (default and custom) and extra headers", async () => {
    const d = await safeFetchJson(`${base}/echo-headers`, opts());
    expect(d.value).toEqual({ accept: "application/json", custom: null });
    const c = await safeFetchJson(
      `${base}/echo-headers`,
      opts({ accept: "application/a2a+json", headers: { "x-custom": "1" } }),
    );
    expect(c.value).toEqual({ accept: "application/a2a+json", custom: "1" });
  });

  test("safeFetch returns status, headers and body", async () => {
    const r = await safeFetch(`${base}/json`, opts());
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(new TextDecoder().decode(r.body)).toBe(JSON_TEXT);
  });

  test("body exactly maxBytes is accepted", async () => {
    const r = await safeFetch(`${base}/exact`, opts({ maxBytes: 1000 }));
    expect(r.body.byteLength).toBe(1000);
  });

  test("Content-Length over maxBytes -> too_large", async () => {
    await expectReason(safeFetch(`${base}/big`, opts()), "too_large");
  });

  test("endless streamed body -> too_large, aborted quickly", async () => {
    const t0 = performance.now();
    await expectReason(
      safeFetch(`${base}/stream-forever`, opts({ maxBytes: 4096, timeoutMs: 5000 })),
      "too_large",
    );
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  test("slow headers -> timeout", async () => {
    const t0 = performance.now();
    await expectReason(safeFetch(`${base}/slow-headers`, opts({ timeoutMs: 200 })), "timeout");
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  test("slow body -> timeout (deadline covers body streaming)", async () => {
    const t0 = performance.now();
    await expectReason(safeFetch(`${base}/slow-body`, opts({ timeoutMs: 300 })), "timeout");
    expect(performance.now() - t0).toBeLessThan(1500);
  });

  test("follows absolute and relative redirects (301/302/303/307/308)", async () => {
    for (const p of ["/redirect-abs", "/redirect-rel", "/redirect-303", "/redirect-308"]) {
      const r = await safeFetchJson(`${base}${p}`, opts());
      expect(r.text).toBe(JSON_TEXT);
      expect(r.finalUrl).toBe(`${base}/json`);
    }
  });

  test("redirect loop -> too_many_redirects", async () => {
    await expectReason(safeFetch(`${base}/loop`, opts()), "too_many_redirects");
  });

  test("maxRedirects is honoured (4 hops refused by default, allowed with 4)", async () => {
    await expectReason(safeFetch(`${base}/chain1`, opts()), "too_many_redirects");
    const r = await safeFetchJson(`${base}/chain1`, opts({ maxRedirects: 4 }));
    expect(r.text).toBe(JSON_TEXT);
    await expectReason(safeFetch(`${base}/redirect-abs`, opts({ maxRedirects: 0 })), "too_many_redirects");
  });

  test("redirect to file: -> scheme_not_allowed", async () => {
    await expectReason(safeFetch(`${base}/redirect-file`, opts()), "scheme_not_allowed");
  });

  test("404 -> safeFetch returns it, safeFetchJson throws http_status", async () => {
    const r = await safeFetch(`${base}/missing`, opts());
    expect(r.status).toBe(404);
    const e = await expectReason(safeFetchJson(`${base}/missing`, opts()), "http_status");
    expect(e.message).toContain("404");
    const e500 = await expectReason(safeFetchJson(`${base}/server-error`, opts()), "http_status");
    expect(e500.message).toContain("500");
  });

  test("invalid JSON -> invalid_json", async () => {
    await expectReason(safeFetchJson(`${base}/invalid-json`, opts()), "invalid_json");
  });

  test("connection refused -> network with a user-safe message", async () => {
    const e = await expectReason(safeFetch(`http://127.0.0.1:${refusedPort}/`, opts()), "network");
    expect(e.message).toContain(`127.0.0.1:${refusedPort}`);
    expect(e.message).not.toContain("\n");
  });

  test("credentials in URL -> invalid_url; garbage -> invalid_url", async () => {
    await expectReason(safeFetch(`http://user:pass@127.0.0.1:${server.port}/json`, opts()), "invalid_url");
    await expectReason(safeFetch("not a url", opts()), "invalid_url");
  });

  test("non-http schemes refused even with allowInsecure", async () => {
    for (const u of [
      "file:///etc/passwd",
      "ftp://127.0.0.1/",
      "data:,hi",
      "gopher://127.0.0.1/",
      "javascript:alert(1)",
    ]) {
      await expectReason(safeFetch(u, opts()), "scheme_not_allowed");
    }
  });
});

// ---------------------------------------------------------------------------
// allowInsecure = false: everything must be refused before connecting.
// Every call goes through recording stubs; no traffic leaves the process.
// ---------------------------------------------------------------------------

describe("safeFetch without allowInsecure (stubbed, no traffic)", () => {
  type Calls = { fetch: string[]; lookup: string[] };

  function guarded(
    dns: Record<string, string[]> = {},
    respond: (url: string) => Response = () => {
      throw new Error("unexpected fetch");
    },
  ): { opts: SafeFetchOptions; calls: Calls } {
    const calls: Calls = { fetch: [], lookup: [] };
    const fetchImpl: FetchImpl = async (url) => {
      calls.fetch.push(url);
      return respond(url);
    };
    const opts: SafeFetchOptions = {
      allowInsecure: false,
      maxBytes: 1000,
      timeoutMs: 1000,
      fetchImpl,
      lookup: async (host) => {
        calls.lookup.push(host);
        const r = dns[host];
        if (!r) throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
        return r;
      },
    };
    return { opts, calls };
  }

  test("http://127.0.0.1 -> scheme_not_allowed", async () => {
    const { opts, calls } = guarded();
    await expectReason(safeFetch("http://127.0.0.1/", opts), "scheme_not_allowed");
    expect(calls).toEqual({ fetch: [], lookup: [] });
  });

  test("http: to a public host is refused too", async () => {
    const { opts, calls } = guarded({ "public.test": ["93.184.216.34"] });
    await expectReason(safeFetch("http://public.test/", opts), "scheme_not_allowed");
    expect(calls.fetch).toEqual([]);
  });

  const literals = [
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/x",
    "https://10.0.0.1/",
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:7f00:1]/",
    "https://[fe80::1]/",
    "https://[fd00::1]/",
    "https://0x7f000001/",
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://0/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
  ];
  for (const u of literals) {
    test(`${u} -> address_not_allowed without lookup or connect`, async () => {
      const { opts, calls } = guarded();
      await expectReason(safeFetch(u, opts), "address_not_allowed");
      expect(calls).toEqual({ fetch: [], lookup: [] });
    });
  }

  for (const u of [
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://a.b.localhost:444/",
  ]) {
    test(`${u} -> address_not_allowed without resolving`, async () => {
      const { opts, calls } = guarded({ localhost: ["93.184.216.34"] });
      await expectReason(safeFetch(u, opts), "address_not_allowed");
      expect(calls).toEqual({ fetch: [], lookup: [] });
    });
  }

  test("file:///etc/passwd and ftp: -> scheme_not_allowed", async () => {
    const { opts, calls } = guarded();
    await expectReason(safeFetch("file:///etc/passwd", opts), "scheme_not_allowed");
    await expectReason(safeFetch("ftp://ftp.example.com/pub", opts), "scheme_not_allowed");
    await expectReason(safeFetchJson("data:application/json,{}", opts), "scheme_not_allowed");
    expect(calls).toEqual({ fetch: [], lookup: [] });
  });

  test("credentials in URL -> invalid_url", async () => {
    const { opts, calls } = guarded({ "public.test": ["93.184.216.34"] });
    await expectReason(safeFetch("https://user:pw@public.test/", opts), "invalid_url");
    await expectReason(safeFetch("https://user@public.test/", opts), "invalid_url");
    expect(calls.fetch).toEqual([]);
  });

  test("hostname resolving to 10.1.2.3 -> address_not_allowed, no connection", async () => {
    const { opts, calls } = guarded({ "internal.test": ["10.1.2.3"] });
    await expectReason(safeFetch("https://internal.test/card.json", opts), "address_not_allowed");
    expect(calls.lookup).toEqual(["internal.test"]);
    expect(calls.fetch).toEqual([]);
  });

  test("hostname resolving to a public AND a private address -> refused", async () => {
    const { opts, calls } = guarded({ "mixed.test": ["93.184.216.34", "192.168.0.10"] });
    await expectReason(safeFetch("https://mixed.test/", opts), "address_not_allowed");
    const v6 = guarded({ "mixed6.test": ["2606:4700::1111", "::ffff:7f00:1"] });
    await expectReason(safeFetch("https://mixed6.test/", v6.opts), "address_not_allowed");
    expect(calls.fetch).toEqual([]);
    expect(v6.calls.fetch).toEqual([]);
  });

  test("DNS failure / empty answer -> dns_failed", async () => {
    const { opts, calls } = guarded({ "empty.test": [] });
    await expectReason(safeFetch("https://nxdomain.test/", opts), "dns_failed");
    await expectReason(safeFetch("https://empty.test/", opts), "dns_failed");
    expect(calls.fetch).toEqual([]);
  });

  test("hanging DNS lookup counts against the deadline -> timeout", async () => {
    const { opts, calls } = guarded();
    const t0 = performance.now();
    await expectReason(
      safeFetch("https://hang.test/", {
        ...opts,
        timeoutMs: 100,
        lookup: () => new Promise<string[]>(() => {}),
      }),
      "timeout",
    );
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(calls.fetch).toEqual([]);
  });

  test("public host is fetched (stubbed) with manual redirects and the abort signal", async () => {
    const seen: RequestInit[] = [];
    const { opts, calls } = guarded({ "public.test": ["93.184.216.34", "2606:4700::1111"] });
    const r = await safeFetchJson("https://public.test/.well-known/agent-card.json", {
      ...opts,
      fetchImpl: async (url, init) => {
        calls.fetch.push(url);
        seen.push(init);
        return new Response('{"ok":true}', { status: 200 });
      },
    });
    expect(r.value).toEqual({ ok: true });
    expect(r.finalUrl).toBe("https://public.test/.well-known/agent-card.json");
    expect(calls.fetch).toEqual(["https://public.test/.well-known/agent-card.json"]);
    expect(seen[0]?.redirect).toBe("manual");
    expect(seen[0]?.signal).toBeInstanceOf(AbortSignal);
  });

  test("redirect to a hostname resolving privately -> address_not_allowed, second hop never fetched", async () => {
    const { opts, calls } = guarded(
      { "public.test": ["93.184.216.34"], "internal.test": ["10.0.0.5"] },
      () => new Response(null, { status: 302, headers: { location: "https://internal.test/secret" } }),
    );
    await expectReason(safeFetch("https://public.test/card", opts), "address_not_allowed");
    expect(calls.fetch).toEqual(["https://public.test/card"]);
    expect(calls.lookup).toEqual(["public.test", "internal.test"]);
  });

  test("redirect to metadata IP literal -> address_not_allowed", async () => {
    const { opts, calls } = guarded(
      { "public.test": ["93.184.216.34"] },
      () =>
        new Response(null, {
          status: 307,
          headers: { location: "https://169.254.169.254/latest/meta-data/" },
        }),
    );
    await expectReason(safeFetch("https://public.test/card", opts), "address_not_allowed");
    expect(calls.fetch).toEqual(["https://public.test/card"]);
  });

  test("redirect to https://[::ffff:127.0.0.1] and to localhost -> address_not_allowed", async () => {
    for (const loc of ["https://[::ffff:127.0.0.1]/", "https://localhost/", "https://2130706433/"]) {
      const { opts, calls } = guarded(
        { "public.test": ["93.184.216.34"] },
        () => new Response(null, { status: 301, headers: { location: loc } }),
      );
      await expectReason(safeFetch("https://public.test/", opts), "address_not_allowed");
      expect(calls.fetch).toEqual(["https://public.test/"]);
    }
  });

  test("https -> http downgrade on redirect -> scheme_not_allowed", async () => {
    const { opts, calls } = guarded(
      { "public.test": ["93.184.216.34"], "other.test": ["1.1.1.1"] },
      () => new Response(null, { status: 302, headers: { location: "http://other.test/card" } }),
    );
    await expectReason(safeFetch("https://public.test/", opts), "scheme_not_allowed");
    expect(calls.fetch).toEqual(["https://public.test/"]);
  });

  test("public -> public redirect is followed; credential headers dropped across origins", async () => {
    const seen: { url: string; headers: Headers }[] = [];
    const { opts, calls } = guarded({ "public.test": ["93.184.216.34"], "cdn.test": ["1.1.1.1"] });
    const r = await safeFetchJson("https://public.test/card", {
      ...opts,
      headers: { authorization: "Bearer secret", "x-trace": "t" },
      fetchImpl: async (url, init) => {
        calls.fetch.push(url);
        seen.push({ url, headers: new Headers(init.headers) });
        return url.startsWith("https://public.test/")
          ? new Response(null, { status: 308, headers: { location: "https://cdn.test/card" } })
          : new Response("[1]", { status: 200 });
      },
    });
    expect(r.value).toEqual([1]);
    expect(r.finalUrl).toBe("https://cdn.test/card");
    expect(calls.fetch).toEqual(["https://public.test/card", "https://cdn.test/card"]);
    expect(seen[0]?.headers.get("authorization")).toBe("Bearer secret");
    expect(seen[1]?.headers.get("authorization")).toBeNull();
    expect(seen[1]?.headers.get("x-trace")).toBe("t");
  });

  test("stubbed redirect loop -> too_many_redirects after maxRedirects + 1 requests", async () => {
    const { opts, calls } = guarded(
      { "public.test": ["93.184.216.34"] },
      () => new Response(null, { status: 302, headers: { location: "/again" } }),
    );
    await expectReason(safeFetch("https://public.test/", opts), "too_many_redirects");
    expect(calls.fetch.length).toBe(4);
  });

  test("assertAllowedUrl validates without connecting", async () => {
    const { opts, calls } = guarded({ "public.test": ["93.184.216.34"] });
    const u = await assertAllowedUrl("https://public.test/a", opts);
    expect(u.href).toBe("https://public.test/a");
    await expectReason(assertAllowedUrl("https://[::1]/", opts), "address_not_allowed");
    expect(calls.fetch).toEqual([]);
  });
});
