import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { FetchImpl } from "../src/infra/http";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures/agent-cards");
const weatherText = readFileSync(join(FIXTURES, "valid/weather-0.3.json"), "utf8");

/** A local agent host: serves cards, redirects, oversized and slow bodies. */
function startCardServer() {
  let counter = 0;
  return Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const url = new URL(request.url);
      switch (url.pathname) {
        case "/card.json": {
          counter++;
          const card = JSON.parse(weatherText);
          card.url = `https://fetched-${counter}-${Date.now()}.example.com/a2a`;
          // pretty-printed with a trailing newline: stored verbatim, minus surrounding whitespace
          return new Response(`${JSON.stringify(card, null, 2)}\n`, {
            headers: { "content-type": "application/json" },
          });
        }
        case "/redirect":
          return Response.redirect(`http://127.0.0.1:${url.port}/card.json`, 302);
        case "/invalid.json":
          return Response.json({ name: "No url", version: "1" });
        case "/not-json":
          return new Response("<html>hello</html>", { headers: { "content-type": "text/html" } });
        case "/missing":
          return new Response("nope", { status: 404 });
        case "/huge":
          return new Response(`{"pad":"${"x".repeat(300 * 1024)}"}`, {
            headers: { "content-type": "application/json" },
          });
        case "/slow":
          await Bun.sleep(3000);
          return Response.json({});
        default:
          return new Response("not found", { status: 404 });
      }
    },
  });
}

for (const backend of BACKENDS) {
  describe(`publish by cardUrl [${backend}]`, () => {
    let t: TestApp;
    let server: ReturnType<typeof Bun.serve>;
    let writer: { token: string };
    let base: string;

    beforeAll(async () => {
      server = startCardServer();
      base = `http://127.0.0.1:${server.port}`;
      // DEBUG allows plain http and loopback targets, which a local test server needs.
      t = await createTestApp(backend, { config: { debug: true, cardFetchTimeoutMs: 1000 } });
      writer = await t.client(["agents:write"]);
    });
    afterAll(async () => {
      server.stop(true);
      await t.close();
    });

    const publishUrl = (cardUrl: string) =>
      t.request("/v1/agents", { method: "POST", json: { cardUrl }, token: writer.token });

    test("happy: the registry fetches, validates and stores the served card verbatim", async () => {
      const res = await publishUrl(`${base}/card.json`);
      expect(res.status).toBe(201);
      const record = await json<{ id: string; url: string; name: string }>(res);
      expect(record.name).toBe("Weather Forecaster");
      const card = await t.request(`/v1/agents/${record.id}/card`);
      const text = await card.text();
      expect(text.startsWith('{\n  "protocolVersion"')).toBe(true);
      expect(JSON.parse(text).url).toBe(record.url);
    });

    test("happy: redirects are followed", async () => {
      expect((await publishUrl(`${base}/redirect`)).status).toBe(201);
    });

    test("errors: invalid card 422 with paths; non-JSON, 404, oversized and slow are 422 naming cardUrl", async () => {
      const invalid = await publishUrl(`${base}/invalid.json`);
      expect(invalid.status).toBe(422);
      expect((await json<{ errors: { path: string }[] }>(invalid)).errors.map((e) => e.path)).toContain(
        "/url",
      );
      for (const path of ["/not-json", "/missing", "/huge", "/slow"]) {
        const started = performance.now();
        const res = await publishUrl(`${base}${path}`);
        expect({ path, status: res.status }).toEqual({ path, status: 422 });
        const body = await json<{ code: string; errors: { path: string }[] }>(res);
        expect(body.code).toBe("INVALID_AGENT_CARD");
        expect(body.errors[0]!.path).toBe("/cardUrl");
        expect(performance.now() - started).toBeLessThan(2900);
      }
    });

    test("errors: connection refused is 422, not a 5xx", async () => {
      const probe = Bun.serve({ port: 0, fetch: () => new Response("") });
      const port = probe.port;
      probe.stop(true);
      const res = await publishUrl(`http://127.0.0.1:${port}/card.json`);
      expect(res.status).toBe(422);
    });
  });

  describe(`cardUrl SSRF guard with DEBUG off [${backend}]`, () => {
    let t: TestApp;
    let writer: { token: string };
    const attempted: string[] = [];
    // No test here may reach beyond loopback: every lookup and fetch is stubbed and recorded.
    const lookup = async (host: string) => {
      if (host === "public.test") return ["93.184.216.34"];
      if (host === "internal.test") return ["10.1.2.3"];
      if (host === "mixed.test") return ["93.184.216.34", "192.168.1.10"];
      throw new Error(`ENOTFOUND ${host}`);
    };
    const fetchImpl: FetchImpl = async (url) => {
      attempted.push(url);
      const target = new URL(url);
      if (target.pathname === "/to-private")
        return new Response(null, { status: 302, headers: { location: "https://10.0.0.5/card.json" } });
      if (target.pathname === "/to-metadata")
        return new Response(null, {
          status: 301,
          headers: { location: "https://169.254.169.254/latest/meta-data/" },
        });
      if (target.pathname === "/to-loopback-name")
        return new Response(null, { status: 307, headers: { location: "https://internal.test/card.json" } });
      if (target.pathname === "/to-http")
        return new Response(null, { status: 302, headers: { location: "http://public.test/card.json" } });
      return new Response("{}", { headers: { "content-type": "application/json" } });
    };

    beforeAll(async () => {
      t = await createTestApp(backend, { config: { debug: false }, fetchOptions: { lookup, fetchImpl } });
      writer = await t.client(["agents:write"]);
    });
    afterAll(() => t.close());

    const refused = [
      "http://127.0.0.1/card.json",
      "https://127.0.0.1/card.json",
      "https://127.1/card.json",
      "https://localhost/card.json",
      "https://10.0.0.1/card.json",
      "https://172.16.5.4/card.json",
      "https://192.168.0.1/card.json",
      "https://169.254.169.254/latest/meta-data/",
      "https://[::1]/card.json",
      "https://[::ffff:127.0.0.1]/card.json",
      "https://[fd00::1]/card.json",
      "https://0x7f000001/card.json",
      "https://2130706433/card.json",
      "https://internal.test/card.json",
      "https://mixed.test/card.json",
      "file:///etc/passwd",
      "ftp://public.test/card.json",
      "gopher://public.test/",
      "https://user:pass@public.test/card.json",
      "not a url",
    ];
    for (const cardUrl of refused) {
      test(`refuses ${cardUrl} before connecting`, async () => {
        attempted.length = 0;
        const res = await t.request("/v1/agents", { method: "POST", json: { cardUrl }, token: writer.token });
        expect(res.status).toBe(400);
        const body = await json<{ code: string; errors: { path: string }[] }>(res);
        expect(body.code).toBe("VALIDATION_FAILED");
        expect(body.errors[0]!.path).toBe("/cardUrl");
        expect(attempted).toEqual([]);
      });
    }

    for (const path of ["/to-private", "/to-metadata", "/to-loopback-name", "/to-http"]) {
      test(`refuses a redirect ${path} from a public host to a forbidden target`, async () => {
        attempted.length = 0;
        const res = await t.request("/v1/agents", {
          method: "POST",
          json: { cardUrl: `https://public.test${path}` },
          token: writer.token,
        });
        expect(res.status).toBe(400);
        expect((await json(res)).code).toBe("VALIDATION_FAILED");
        // only the first, public hop was requested; the forbidden target never was
        expect(attempted).toEqual([`https://public.test${path}`]);
      });
    }

    test("anonymous and read-only callers cannot make the registry fetch anything", async () => {
      attempted.length = 0;
      const reader = await t.client(["agents:read"]);
      expect(
        (
          await t.request("/v1/agents", {
            method: "POST",
            json: { cardUrl: "https://public.test/card.json" },
          })
        ).status,
      ).toBe(401);
      expect(
        (
          await t.request("/v1/agents", {
            method: "POST",
            json: { cardUrl: "https://public.test/card.json" },
            token: reader.token,
          })
        ).status,
      ).toBe(403);
      expect(attempted).toEqual([]);
    });
  });
}
