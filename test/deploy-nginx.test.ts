import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ERROR_CODES } from "../src/errors";
import {
  describeWithTools,
  type NginxSetup,
  nginxTest,
  prepareNginx,
  type Registry,
  read,
  run,
  startNginx,
  startRegistry,
  templatePlaceholders,
} from "./support/deploy";
import { eventually, freePort } from "./support/redis";

const SECURITY_HEADERS = {
  "strict-transport-security": "max-age=63072000; includeSubDomains",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};
const DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'";
const ADMIN = { id: "deploy-admin", secret: "deploy-admin-secret-0123456789" };
const WEATHER_CARD = JSON.parse(
  readFileSync(join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
);

function expectSecurityHeaders(response: Response) {
  // fetch joins repeated headers with ", ": an exact match also proves each appears once.
  for (const [name, value] of Object.entries(SECURITY_HEADERS))
    expect(response.headers.get(name)).toBe(value);
  expect(response.headers.get("content-security-policy")).toBeTruthy();
  expect(response.headers.get("x-request-id")).toMatch(/^[A-Za-z0-9._:@-]{1,128}$/);
}

/** A problem+json body nginx wrote itself, in the registry's shape for the given code. */
async function expectProblem(response: Response, code: keyof typeof ERROR_CODES) {
  expect(response.headers.get("content-type")).toBe("application/problem+json");
  const body = (await response.json()) as Record<string, unknown>;
  expect(body).toMatchObject({ code, status: ERROR_CODES[code].status, title: ERROR_CODES[code].title });
  expect(body.type).toBe(`https://a2a-registry.dev/problems/${code.toLowerCase().replaceAll("_", "-")}`);
  expect(body.requestId).toBe(response.headers.get("x-request-id")!);
  return body;
}

describeWithTools("nginx configuration", ["nginx", "openssl"], () => {
  test("nginx -t accepts the shipped files, rendered as the nginx image renders them", async () => {
    const setup = await prepareNginx({ upstream: "127.0.0.1:8000" });
    try {
      const result = await nginxTest(setup);
      expect(result.stderr).toContain("syntax is ok");
      expect(result.stderr).toContain("test is successful");
      expect(result.stderr).not.toMatch(/\[(emerg|alert|crit|error)\]/);
      expect(result.code).toBe(0);
    } finally {
      await run(["rm", "-rf", setup.dir]);
    }
  });

  test("the template's placeholders are exactly the five the compose file sets", () => {
    expect([...templatePlaceholders(read("nginx/templates/registry.conf.template"))].sort()).toEqual([
      "NGINX_HTTPS_LISTEN",
      "NGINX_HTTP_LISTEN",
      "NGINX_MAX_BODY_BYTES",
      "NGINX_SERVER_NAME",
      "REGISTRY_UPSTREAM",
    ]);
    // nginx.conf and the snippets are copied verbatim: nothing there may look like a placeholder.
    for (const file of ["nginx/nginx.conf", "nginx/snippets/proxy.conf", "nginx/snippets/errors.conf"])
      expect(templatePlaceholders(read(file)).size).toBe(0);
  });

  test("the guide's cipher names do not exist in OpenSSL; the shipped ones all do, all ECDHE with AEAD", async () => {
    const guide = await run(["openssl", "ciphers", "ECDHE-RSA-AES256-GCM-SHA512:DHE-RSA-AES256-GCM-SHA512"]);
    expect(guide.code).not.toBe(0);
    const line = /^ssl_ciphers (\S+);$/m.exec(read("nginx/snippets/tls.conf"))![1]!;
    const names = line.split(":");
    expect(names.length).toBeGreaterThanOrEqual(4);
    expect(names).toContain("ECDHE-RSA-AES256-GCM-SHA384");
    for (const name of names) {
      expect(name).toMatch(/^ECDHE-(RSA|ECDSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
      const known = await run(["openssl", "ciphers", "-tls1_2", name]);
      expect(known.code).toBe(0);
    }
    expect(read("nginx/snippets/tls.conf")).toMatch(/^ssl_protocols TLSv1\.2 TLSv1\.3;$/m);
  });
});

describeWithTools("nginx in front of a running registry", ["nginx", "openssl", "curl"], () => {
  let registry: Registry;
  let setup: NginxSetup;
  let nginx: Awaited<ReturnType<typeof startNginx>>;
  let https: string;

  const get = (path: string, init: RequestInit = {}) =>
    fetch(`${https}${path}`, { ...init, tls: { ca: setup.certPem }, redirect: "manual" });
  /** curl to nginx's name, trusting the test certificate. */
  const curlTls = (args: string[]) =>
    run([
      "curl",
      "-sS",
      "--cacert",
      `${setup.dir}/ssl/cert.pem`,
      "--resolve",
      `${setup.serverName}:${setup.httpsPort}:127.0.0.1`,
      ...args,
    ]);
  /** The raw response head (and the body, unless args send it elsewhere). */
  const curl = async (args: string[]) => {
    const result = await curlTls(["-D", "-", ...args]);
    expect(result.stderr).toBe("");
    return result.stdout;
  };

  beforeAll(async () => {
    registry = await startRegistry({
      DEBUG: "false",
      SECRET_KEY: "deploy-test-secret-key-0123456789abcdef",
      TRUST_PROXY: "true",
      ADMIN_CLIENT_ID: ADMIN.id,
      ADMIN_CLIENT_SECRET: ADMIN.secret,
      // The registry's own limits out of the way: every 429 below is nginx's.
      RATE_LIMIT_TOKEN: "1000000/1s",
      RATE_LIMIT_READ: "1000000/1s",
      RATE_LIMIT_ADMIN: "1000000/1s",
    });
    setup = await prepareNginx({ upstream: `127.0.0.1:${registry.port}` });
    nginx = await startNginx(setup);
    https = `https://${setup.serverName}:${setup.httpsPort}`;
  }, 120_000);

  /** An admin token, asked of the registry directly (nginx's token endpoint limit is tested below). */
  const adminToken = async () => {
    const response = await fetch(`${registry.base}/oauth/token`, {
      method: "POST",
      headers: { authorization: `Basic ${btoa(`${ADMIN.id}:${ADMIN.secret}`)}` },
      body: new URLSearchParams({ grant_type: "client_credentials" }),
    });
    return ((await response.json()) as { access_token: string }).access_token;
  };

  afterAll(async () => {
    await nginx?.stop();
    await registry?.stop();
  });

  test("HTTPS request succeeds with every security header and a request id", async () => {
    const response = await get("/health");
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ status: "ok" });
    expectSecurityHeaders(response);
    expect(response.headers.get("content-security-policy")).toBe(DEFAULT_CSP);
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    expect(response.headers.get("server")).toBe("nginx");
  });

  test("each security header and X-Request-ID appears exactly once on proxied responses", async () => {
    const head = await curl(["-o", "/dev/null", `${https}/.well-known/agent-card.json`]);
    expect(head).toMatch(/^HTTP\/2 200/);
    for (const name of [...Object.keys(SECURITY_HEADERS), "content-security-policy", "x-request-id"]) {
      const lines = head.split("\r\n").filter((line) => line.toLowerCase().startsWith(`${name}:`));
      expect({ name, count: lines.length }).toEqual({ name, count: 1 });
    }
  });

  test("the registry's own CSP for /docs passes through; others get the default policy", async () => {
    const docs = await get("/docs");
    expect(docs.status).toBe(200);
    expect(docs.headers.get("content-security-policy")).toContain("https://unpkg.com");
    expect(docs.headers.get("content-security-policy")!.split("default-src").length).toBe(2);
  });

  test("X-Request-ID: a caller's sane id reaches the registry and comes back; others are replaced", async () => {
    // The registry writes the id it received into problem bodies: that is what nginx sent upstream.
    const given = await get("/v1/agents/00000000-0000-0000-0000-000000000000", {
      headers: { "x-request-id": "deploy-test.req:42" },
    });
    expect(given.status).toBe(404);
    expect(given.headers.get("x-request-id")).toBe("deploy-test.req:42");
    expect(((await given.json()) as { requestId: string }).requestId).toBe("deploy-test.req:42");

    const generated = await get("/v1/agents/00000000-0000-0000-0000-000000000000");
    const id = generated.headers.get("x-request-id")!;
    expect(id).toMatch(/^[0-9a-f]{32}$/);
    expect(((await generated.json()) as { requestId: string }).requestId).toBe(id);

    const bogus = await get("/health", { headers: { "x-request-id": "not a <valid> id" } });
    expect(bogus.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
    const long = await get("/health", { headers: { "x-request-id": "x".repeat(129) } });
    expect(long.headers.get("x-request-id")).toMatch(/^[0-9a-f]{32}$/);
  });

  test("plain HTTP redirects permanently to the HTTPS name, path and query kept", async () => {
    const response = await fetch(`http://127.0.0.1:${setup.httpPort}/v1/agents?limit=1&tag=a%20b`, {
      redirect: "manual",
    });
    expect(response.status).toBe(301);
    expect(response.headers.get("location")).toBe(`https://${setup.serverName}/v1/agents?limit=1&tag=a%20b`);
    // The Host header does not pick the redirect target.
    const spoofed = await fetch(`http://127.0.0.1:${setup.httpPort}/x`, {
      redirect: "manual",
      headers: { host: "evil.example" },
    });
    expect(spoofed.headers.get("location")).toBe(`https://${setup.serverName}/x`);
    // Plain HTTP sent to the TLS port is redirected too, not answered with nginx's 400 page.
    const wrongPort = await fetch(`http://127.0.0.1:${setup.httpsPort}/health`, {
      redirect: "manual",
      headers: { host: `${setup.serverName}:${setup.httpsPort}` },
    });
    expect(wrongPort.status).toBe(301);
    expect(wrongPort.headers.get("location")).toBe(`https://${setup.serverName}/health`);
  });

  test("the port-80 liveness answer used by the container health check", async () => {
    const response = await fetch(`http://127.0.0.1:${setup.httpPort}/nginx-health`);
    expect(response.status).toBe(200);
    expect(await response.text()).toBe("ok\n");
  });

  test("/metrics and /health/* are not served from outside, however the path is spelled", async () => {
    // Control: the registry itself does serve them.
    expect(await (await fetch(`${registry.base}/metrics`)).text()).toContain("a2a_registry_requests_total");
    for (const path of [
      "/metrics",
      "/metrics/",
      "/metrics?format=openmetrics",
      "//metrics",
      "/./metrics",
      "/%6Detrics",
      "/x/../metrics",
      "/health/ready",
      "/health/ready/",
      "/health/%72eady",
    ]) {
      const head = await curl(["--path-as-is", `${https}${path}`]);
      expect({ path, status: head.split(" ")[1] }).toEqual({ path, status: "404" });
      expect(head).not.toContain("a2a_registry_");
      expect(head).not.toContain('"checks"');
    }
    const response = await get("/metrics");
    await expectProblem(response, "NOT_FOUND");
    expectSecurityHeaders(response);
  });

  test("the caller's address reaches the registry; a forged X-Forwarded-For does not", async () => {
    // From 127.0.0.2 (all of 127/8 is loopback), a failed token request with a forged header.
    const id = `deploy-ip-${Date.now()}`;
    const denied = await curlTls([
      "-o",
      "/dev/null",
      "-w",
      "%{http_code}",
      "--interface",
      "127.0.0.2",
      "-H",
      "X-Forwarded-For: 6.6.6.6",
      "-H",
      `X-Request-ID: ${id}`,
      "-u",
      "nobody:wrong-secret-wrong-secret",
      "-d",
      "grant_type=client_credentials",
      `${https}/oauth/token`,
    ]);
    expect(denied.stdout).toBe("401");
    const audit = (await (
      await get("/v1/audit?action=token.denied&limit=20", {
        headers: { authorization: `Bearer ${await adminToken()}` },
      })
    ).json()) as { items: { requestId: string; ip: string }[] };
    const entry = audit.items.find((item) => item.requestId === id);
    expect(entry?.ip).toBe("127.0.0.2");
  });

  test("limit_req answers a burst on /oauth/token with 429 problem+json and Retry-After", async () => {
    const started = performance.now();
    const responses = await Promise.all(
      Array.from({ length: 40 }, () =>
        get("/oauth/token", {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: "grant_type=client_credentials&client_id=nobody&client_secret=wrong-secret-1234",
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const statuses = responses.map((r) => r.status);
    const limited = responses.filter((r) => r.status === 429);
    // burst=10 nodelay at 5 r/s: at most 11 pass at once and 5 more per second the burst lasted; the
    // rest are refused by nginx before they reach the registry (which answers 401 to the others).
    const allowed = 11 + Math.ceil(5 * seconds);
    expect(statuses.filter((s) => s === 401).length).toBeLessThanOrEqual(allowed);
    expect(limited.length).toBeGreaterThanOrEqual(Math.max(1, 40 - allowed));
    expect(statuses.filter((s) => s === 401).length).toBeGreaterThanOrEqual(5);
    expect(statuses.every((s) => s === 401 || s === 429)).toBe(true);
    const first = limited[0]!;
    expect(first.headers.get("retry-after")).toBe("1");
    expect(first.headers.get("ratelimit-limit")).toBe("11");
    expect(first.headers.get("ratelimit-remaining")).toBe("0");
    expectSecurityHeaders(first);
    const body = await expectProblem(first, "RATE_LIMITED");
    expect(body.detail).toContain("Retry-After");
    for (const r of responses) if (r !== first) await r.arrayBuffer();
  });

  test("limit_req answers a burst on the API with 429 too; /health is not limited", async () => {
    const started = performance.now();
    const burst = await Promise.all(
      Array.from({ length: 300 }, () =>
        get("/.well-known/agent-card.json").then(async (r) => {
          await r.arrayBuffer();
          return { status: r.status, limit: r.headers.get("ratelimit-limit") };
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const passed = burst.filter((r) => r.status === 200).length;
    // burst=100 nodelay at 50 r/s.
    expect(passed).toBeLessThanOrEqual(101 + Math.ceil(50 * seconds));
    expect(passed).toBeGreaterThanOrEqual(90);
    expect(burst.filter((r) => r.status === 429).length).toBe(300 - passed);
    expect(passed).toBeLessThan(300);
    expect(burst.find((r) => r.status === 429)?.limit).toBe("101");
    const health = await Promise.all(Array.from({ length: 150 }, () => get("/health").then((r) => r.status)));
    expect(health.every((s) => s === 200)).toBe(true);
  });

  test("gzip for compressible responses; an agent's ETag still revalidates", async () => {
    const head = await curl(["-o", "/dev/null", "-H", "Accept-Encoding: gzip", `${https}/docs/json`]);
    expect(head.toLowerCase()).toContain("content-encoding: gzip");
    expect(head.toLowerCase()).toContain("vary: accept-encoding");
    const small = await curl(["-o", "/dev/null", "-H", "Accept-Encoding: gzip", `${https}/health`]);
    expect(small.toLowerCase()).not.toContain("content-encoding: gzip");

    // A compressed agent record carries a weak ETag (nginx weakens it); sending it back still gets 304.
    const created = await fetch(`${registry.base}/v1/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${await adminToken()}`, "content-type": "application/json" },
      body: JSON.stringify({
        card: { ...WEATHER_CARD, url: `https://deploy-gzip-${Date.now()}.example.com/a2a` },
      }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    const zipped = await curl([
      "-o",
      "/dev/null",
      "-H",
      "Accept-Encoding: gzip",
      `${https}/v1/agents/${id}/card`,
    ]);
    expect(zipped.toLowerCase()).toContain("content-encoding: gzip");
    const etag = /^etag: (.+)$/im.exec(zipped)![1]!.trim();
    expect(etag).toMatch(/^W\/"/);
    const revalidated = await curl([
      "-o",
      "/dev/null",
      "-H",
      "Accept-Encoding: gzip",
      "-H",
      `If-None-Match: ${etag}`,
      `${https}/v1/agents/${id}/card`,
    ]);
    expect(revalidated).toMatch(/^HTTP\/2 304/);
  });

  test("keep-alive to the registry: sequential requests reuse upstream connections", async () => {
    // Sockets to or from the registry's port, as "state local peer"; earlier tests leave some behind.
    const sockets = async () =>
      (await run(["ss", "-Htan", `( sport = :${registry.port} or dport = :${registry.port} )`])).stdout
        .split("\n")
        .filter(Boolean)
        .map((line) => line.split(/\s+/))
        .map(([state, , , local, peer]) => ({ state, tuple: `${local} ${peer}` }));
    const before = new Set((await sockets()).map((s) => s.tuple));
    for (let i = 0; i < 30; i++) await (await get("/health")).arrayBuffer();
    const after = await sockets();
    // Without keep-alive each request leaves a closed connection in TIME-WAIT behind.
    const closed = after.filter((s) => s.state === "TIME-WAIT" && !before.has(s.tuple));
    expect(closed.length).toBeLessThan(5);
    expect(after.filter((s) => s.state === "ESTAB").length).toBeGreaterThan(0);
  });

  test("bodies up to MAX_BODY_BYTES reach the registry; larger ones get nginx's 413 problem+json", async () => {
    const post = async (bytes: number) => {
      // A card whose description pads the body to the exact size: the registry reads it all and
      // rejects the card (422), which shows the body got through.
      const prefix = JSON.stringify({ card: { ...WEATHER_CARD, description: "" } });
      const body = prefix.replace('"description":""', `"description":"${"x".repeat(bytes - prefix.length)}"`);
      expect(body.length).toBe(bytes);
      return get("/v1/agents", {
        method: "POST",
        headers: { authorization: `Bearer ${await adminToken()}`, "content-type": "application/json" },
        body,
      });
    };
    const atLimit = await post(1_048_576);
    expect(atLimit.status).toBe(422);
    expect(((await atLimit.json()) as { code: string }).code).toBe("INVALID_AGENT_CARD");
    const over = await post(1_048_577);
    expect(over.status).toBe(413);
    const body = await expectProblem(over, "PAYLOAD_TOO_LARGE");
    expect(body.detail).toContain("MAX_BODY_BYTES");
    expectSecurityHeaders(over);
    const huge = await post(3_000_000);
    expect(huge.status).toBe(413);
    await huge.arrayBuffer();
  });

  test("TLS: 1.2 with forward-secret AEAD and 1.3 accepted; 1.1, non-FS suites and unknown names refused", async () => {
    const connect = (args: string[]) =>
      run(
        [
          "openssl",
          "s_client",
          "-connect",
          `127.0.0.1:${setup.httpsPort}`,
          "-servername",
          setup.serverName,
          ...args,
        ],
        { stdin: "" },
      );
    const tls12 = await connect(["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"]);
    expect(tls12.stdout).toContain("Cipher is ECDHE-RSA-AES256-GCM-SHA384");
    const tls13 = await connect(["-tls1_3"]);
    expect(tls13.stdout).toMatch(/TLSv1\.3, Cipher is TLS_/);
    const tls11 = await connect(["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"]);
    expect(tls11.code).not.toBe(0);
    const cbc = await connect(["-tls1_2", "-cipher", "AES256-SHA:AES128-SHA256:ECDHE-RSA-AES256-SHA384"]);
    expect(cbc.code).not.toBe(0);
    // A name this server is not for: the handshake is refused instead of showing the certificate.
    const otherName = await run(
      ["openssl", "s_client", "-connect", `127.0.0.1:${setup.httpsPort}`, "-servername", "evil.example"],
      { stdin: "" },
    );
    expect(otherName.code).not.toBe(0);
    expect(otherName.stdout).not.toContain(`CN = ${setup.serverName}`);
  });

  test("the access log is one JSON object per request with the request id", async () => {
    await (await get("/health", { headers: { "x-request-id": "deploy-access-log" } })).arrayBuffer();
    // nginx writes the line once the response is out: the client can be faster.
    const find = () =>
      nginx
        .accessLog()
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line) as Record<string, unknown>)
        .find((e) => e.request_id === "deploy-access-log");
    expect(await eventually(() => find() !== undefined, 5000)).toBe(true);
    const entry = find();
    expect(entry).toMatchObject({ method: "GET", uri: "/health", status: 200, tls: "TLSv1.3" });
    expect(entry?.upstream_addr).toBe(`127.0.0.1:${registry.port}`);
    // Raising the open-file limit needs privileges this test may lack; anything else serious is a failure.
    const serious = nginx
      .errorLog()
      .split("\n")
      .filter((line) => /\[(emerg|alert|crit)\]/.test(line) && !line.includes("setrlimit(RLIMIT_NOFILE"));
    expect(serious).toEqual([]);
  });
});

describeWithTools("nginx with the registry unreachable", ["nginx", "openssl"], () => {
  test("503 problem+json DEPENDENCY_UNAVAILABLE with Retry-After and security headers", async () => {
    const setup = await prepareNginx({ upstream: `127.0.0.1:${freePort()}` });
    const nginx = await startNginx(setup);
    try {
      const response = await fetch(`https://${setup.serverName}:${setup.httpsPort}/v1/agents`, {
        tls: { ca: setup.certPem },
      });
      expect(response.status).toBe(503);
      expect(response.headers.get("retry-after")).toBe("5");
      expectSecurityHeaders(response);
      await expectProblem(response, "DEPENDENCY_UNAVAILABLE");
    } finally {
      await nginx.stop();
    }
  });
});
