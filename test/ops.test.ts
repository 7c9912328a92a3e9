import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import pino from "pino";
import { createApp, createDependencies } from "../src/app";
import { testConfig } from "../src/config";
import { createMetrics } from "../src/infra/metrics";
import { analyzeCard } from "../src/modules/agents/card";
import { BASE, createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";

const FIXTURES = `${import.meta.dir}/../../shared/fixtures/agent-cards/valid`;
const SECURITY_HEADERS = [
  "strict-transport-security",
  "content-security-policy",
  "x-content-type-options",
  "x-frame-options",
  "referrer-policy",
] as const;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Anything that looks like a stack frame, a module path or SQL in a response body. */
const LEAK =
  /\n\s+at |\bat .+:\d+:\d+|node_modules|\/src\/|\bselect\b.+\bfrom\b|\binsert into\b|\bpg_|drizzle/i;

type Json = Record<string, unknown>;
let cardCounter = 0;

/** A valid 0.3 card with a url of its own (urls are unique among live agents). */
async function uniqueCard(label = "agent"): Promise<Json> {
  const card = (await Bun.file(`${FIXTURES}/minimal-0.3.json`).json()) as Json;
  const n = ++cardCounter;
  return {
    ...card,
    name: `${label} ${n}`,
    description: `Test agent ${label} number ${n}`,
    url: `https://${label}-${n}-${Date.now().toString(36)}.example.net/a2a`,
  };
}

async function publish(t: TestApp, token: string, card: Json, visibility?: "public" | "private") {
  const res = await t.request("/v1/agents", {
    method: "POST",
    json: visibility ? { card, visibility } : { card },
    token,
  });
  if (res.status !== 201) throw new Error(`publish failed: ${res.status} ${await res.text()}`);
  return json<{ id: string; card: Json }>(res);
}

/** Access-log lines and metrics are written in Elysia's afterResponse hook, which runs on setImmediate. */
const settle = () => Bun.sleep(20);

function expectSecurityHeaders(res: Response) {
  for (const name of SECURITY_HEADERS) expect(res.headers.get(name), name).toBeTruthy();
  expect(res.headers.get("x-content-type-options")).toBe("nosniff");
}

async function expectProblem(res: Response, status: number, code: string): Promise<Json> {
  expect(res.status).toBe(status);
  expect(res.headers.get("content-type") ?? "").toStartWith("application/problem+json");
  const requestId = res.headers.get("x-request-id");
  expect(requestId).toBeTruthy();
  const text = await res.text();
  expect(text).not.toMatch(LEAK);
  const body = JSON.parse(text) as Json;
  expect(body).toMatchObject({ status, code, requestId: requestId! });
  for (const key of ["type", "title", "detail"]) expect(typeof body[key], key).toBe("string");
  return body;
}

type Sample = { name: string; labels: Record<string, string>; value: number };

function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)/.exec(line);
    if (!match) throw new Error(`unparseable metrics line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[pair[1]!] = pair[2]!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

function find(samples: Sample[], name: string, labels: Record<string, string> = {}) {
  return samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([key, value]) => s.labels[key] === value),
  );
}

/** A body that fails the test if anyone reads it: the limit must be decided from Content-Length alone. */
function poisonedBody() {
  const state = { pulled: false };
  // highWaterMark 0: the stream pulls only when someone reads, not eagerly on construction.
  const body = new ReadableStream<Uint8Array>(
    {
      pull(controller) {
        state.pulled = true;
        controller.error(new Error("the body must not be read"));
      },
    },
    { highWaterMark: 0 },
  );
  return { body, state };
}

/** A stream with no Content-Length, delivered in chunks. */
function chunkedBody(bytes: Uint8Array, chunkSize = 512) {
  let offset = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (offset >= bytes.length) return controller.close();
      controller.enqueue(bytes.slice(offset, offset + chunkSize));
      offset += chunkSize;
    },
  });
}

for (const backend of BACKENDS) {
  describe(`ops [${backend}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; clientSecret: string; token: string };
    let admin: { clientId: string; clientSecret: string; token: string };
    let agentId: string;
    let agentEtag: string;

    beforeAll(async () => {
      t = await createTestApp(backend);
      writer = await t.client(["agents:write"], "ops writer");
      admin = await t.client(["admin"], "ops admin");
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: { card: await uniqueCard("shared") },
        token: writer.token,
      });
      expect(res.status).toBe(201);
      agentId = (await json<{ id: string }>(res)).id;
      agentEtag = res.headers.get("etag")!;
    }, 60_000);
    afterAll(() => t.close(), 30_000);

    describe("GET /health", () => {
      test("happy: 200 {status: ok}", async () => {
        const res = await t.request("/health");
        expect(res.status).toBe(200);
        expect(await json(res)).toEqual({ status: "ok" });
      });

      test("security: needs no token and ignores a bad one", async () => {
        const res = await t.request("/health", { token: "not-a-valid-token" });
        expect(res.status).toBe(200);
      });
    });

    describe("GET /health/ready", () => {
      test("happy: 200 with a database check and its latency", async () => {
        const res = await t.request("/health/ready");
        expect(res.status).toBe(200);
        const body = await json<{
          status: string;
          checks: Record<string, { status: string; latencyMs?: number }>;
        }>(res);
        expect(body.checks.database!.status).toBe("ok");
        expect(typeof body.checks.database!.latencyMs).toBe("number");
        expect(body.checks.database!.latencyMs!).toBeGreaterThanOrEqual(0);
        for (const dep of ["cache", "search", "federationWorker"]) expect(body.checks[dep]).toBeDefined();
      });
    });

    describe("X-Request-ID", () => {
      const cases: Array<[string, () => Promise<Response>, number]> = [
        ["200", () => t.request("/health"), 200],
        ["404 unknown route", () => t.request("/no/such/route"), 404],
        ["401", () => t.request("/v1/audit"), 401],
        ["400", () => t.request("/v1/agents?limit=0"), 400],
        [
          "413",
          () =>
            t.app.handle(
              new Request(`${BASE}/v1/agents`, {
                method: "POST",
                body: poisonedBody().body,
                headers: { "content-type": "application/json", "content-length": String(10 * 1024 * 1024) },
                duplex: "half",
              } as RequestInit),
            ),
          413,
        ],
        ["304", () => t.request(`/v1/agents/${agentId}`, { headers: { "if-none-match": agentEtag } }), 304],
      ];

      for (const [label, send, status] of cases) {
        test(`happy: generated on ${label}`, async () => {
          const res = await send();
          expect(res.status).toBe(status);
          const id = res.headers.get("x-request-id");
          expect(id).toBeTruthy();
          expect(id!.length).toBeLessThanOrEqual(128);
          if (res.status >= 400) {
            const body = await json(res);
            expect(body.requestId).toBe(id!);
          }
        });
      }

      test("happy: generated ids are unique", async () => {
        const a = (await t.request("/health")).headers.get("x-request-id");
        const b = (await t.request("/health")).headers.get("x-request-id");
        expect(a).toMatch(UUID);
        expect(b).toMatch(UUID);
        expect(a).not.toBe(b);
      });

      test("happy: a valid incoming id is echoed, also in problem bodies", async () => {
        const incoming = "req-0123.abc:def@edge-1";
        const ok = await t.request("/health", { headers: { "x-request-id": incoming } });
        expect(ok.headers.get("x-request-id")).toBe(incoming);
        const notFound = await t.request("/nowhere", { headers: { "x-request-id": incoming } });
        expect(notFound.headers.get("x-request-id")).toBe(incoming);
        expect((await expectProblem(notFound, 404, "NOT_FOUND")).requestId).toBe(incoming);
      });

      for (const [label, bad] of [
        ["too long", "a".repeat(129)],
        ["with spaces", "has spaces in it"],
        ["with quotes and angle brackets", '<script>"x"</script>'],
      ] as const) {
        test(`security: an invalid incoming id (${label}) is replaced`, async () => {
          const res = await t.request("/v1/agents/does-not-exist", { headers: { "x-request-id": bad } });
          const id = res.headers.get("x-request-id");
          expect(id).toBeTruthy();
          expect(id).not.toBe(bad);
          expect(id).toMatch(/^[A-Za-z0-9._:@-]{1,128}$/);
          const body = await expectProblem(res, 404, "NOT_FOUND");
          expect(body.requestId).toBe(id!);
          expect(JSON.stringify(body)).not.toContain(bad);
        });
      }
    });

    describe("security headers", () => {
      const requests: Array<[string, () => Promise<Response>]> = [
        ["GET /health", () => t.request("/health")],
        ["GET /health/ready", () => t.request("/health/ready")],
        ["GET /metrics", () => t.request("/metrics")],
        ["GET /.well-known/agent-card.json", () => t.request("/.well-known/agent-card.json")],
        ["GET /v1/agents", () => t.request("/v1/agents")],
        ["GET /v1/agents/:id", () => t.request(`/v1/agents/${agentId}`)],
        ["304", () => t.request(`/v1/agents/${agentId}`, { headers: { "if-none-match": agentEtag } })],
        ["404", () => t.request("/no/such/route")],
        ["401", () => t.request("/v1/audit")],
        ["403", () => t.request("/v1/audit", { token: writer.token })],
        ["400", () => t.request("/v1/agents?limit=abc")],
        [
          "413",
          () =>
            t.request("/v1/agents", {
              method: "POST",
              headers: { "content-length": String(2 * 1024 * 1024), "content-type": "application/json" },
              body: poisonedBody().body,
              duplex: "half",
            } as RequestInit),
        ],
        [
          "POST /oauth/token 401",
          () => t.request("/oauth/token", { method: "POST", form: { grant_type: "client_credentials" } }),
        ],
      ];
      for (const [label, send] of requests) {
        test(`happy: present on ${label}`, async () => {
          expectSecurityHeaders(await send());
        });
      }

      test("security: frames are denied and referrers withheld", async () => {
        const res = await t.request("/v1/agents");
        expect(res.headers.get("x-frame-options")!.toUpperCase()).toBe("DENY");
        expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
        expect(res.headers.get("strict-transport-security")).toContain("max-age=");
      });
    });

    describe("body limit", () => {
      test("errors: Content-Length over 1 MiB -> 413 before the body is read", async () => {
        const { body, state } = poisonedBody();
        const res = await t.app.handle(
          new Request(`${BASE}/v1/agents`, {
            method: "POST",
            body,
            headers: {
              "content-type": "application/json",
              "content-length": String(1024 * 1024 + 1),
              authorization: `Bearer ${writer.token}`,
            },
            duplex: "half",
          } as RequestInit),
        );
        await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
        expect(state.pulled).toBe(false);
      });

      test("happy: a body just under 1 MiB passes the limit (and is judged on its content)", async () => {
        const card = await uniqueCard("padded");
        const skeleton = JSON.stringify({ card: { ...card, padding: "" } });
        const padded = JSON.stringify({
          card: { ...card, padding: "x".repeat(1024 * 1024 - skeleton.length) },
        });
        expect(Buffer.byteLength(padded)).toBe(1024 * 1024);
        const res = await t.request("/v1/agents", { method: "POST", json: padded, token: writer.token });
        expect(res.status).not.toBe(413);
        expect([201, 422]).toContain(res.status);
      });
    });

    describe("bad input", () => {
      test("errors: malformed JSON -> 400 VALIDATION_FAILED", async () => {
        const res = await t.request("/v1/agents", {
          method: "POST",
          json: '{"card": {"name": ',
          token: writer.token,
        });
        await expectProblem(res, 400, "VALIDATION_FAILED");
      });

      test("errors: empty JSON body -> 400 VALIDATION_FAILED", async () => {
        const res = await t.request("/v1/agents", { method: "POST", json: "", token: writer.token });
        await expectProblem(res, 400, "VALIDATION_FAILED");
      });

      test("errors: unsupported content type -> 4xx problem", async () => {
        const res = await t.request("/v1/agents", {
          method: "POST",
          body: "hello",
          headers: { "content-type": "text/plain" },
          token: writer.token,
        });
        expect([400, 415]).toContain(res.status);
        await expectProblem(res, res.status, "VALIDATION_FAILED");
      });

      test("errors: the unsupported content type problem says what to send instead", async () => {
        const res = await t.request("/v1/agents", {
          method: "POST",
          body: "hello",
          headers: { "content-type": "text/plain" },
          token: writer.token,
        });
        const body = await expectProblem(res, res.status, "VALIDATION_FAILED");
        expect(String(body.detail).toLowerCase()).toContain("content type");
      });

      for (const limit of ["0", "1000", "abc", "-1", "1.5"]) {
        test(`errors: GET /v1/agents?limit=${limit} -> 400 with errors`, async () => {
          const res = await t.request(`/v1/agents?limit=${limit}`);
          const body = await expectProblem(res, 400, "VALIDATION_FAILED");
          const errors = body.errors as Array<{ path: string; message: string }>;
          expect(Array.isArray(errors)).toBe(true);
          expect(errors.length).toBeGreaterThan(0);
          for (const e of errors) {
            expect(typeof e.path).toBe("string");
            expect(typeof e.message).toBe("string");
          }
        });
      }

      test("errors: each invalid limit is reported at /query/limit", async () => {
        const paths: Record<string, string[]> = {};
        for (const limit of ["0", "1000", "abc", "-1"]) {
          const body = await json<{ errors?: Array<{ path: string }> }>(
            await t.request(`/v1/agents?limit=${limit}`),
          );
          paths[limit] = (body.errors ?? []).map((e) => e.path);
        }
        expect(paths).toEqual({
          "0": ["/query/limit"],
          "1000": ["/query/limit"],
          abc: ["/query/limit"],
          "-1": ["/query/limit"],
        });
      });

      test("errors: unknown route -> 404 problem NOT_FOUND", async () => {
        const res = await t.request("/v2/whatever?x=1");
        await expectProblem(res, 404, "NOT_FOUND");
      });

      test("errors: unknown route with a body -> 404, not a parse error", async () => {
        const res = await t.request("/v2/whatever", { method: "POST", json: { a: 1 } });
        await expectProblem(res, 404, "NOT_FOUND");
      });

      test("security: invalid JSON text is not reflected with a parser stack", async () => {
        const res = await t.request("/v1/agents", {
          method: "POST",
          json: "{<script>alert(1)</script>",
          token: writer.token,
        });
        const body = await expectProblem(res, 400, "VALIDATION_FAILED");
        expect(JSON.stringify(body)).not.toContain("<script>");
      });
    });

    describe("GET /.well-known/agent-card.json and /.well-known/agent.json", () => {
      for (const path of ["/.well-known/agent-card.json", "/.well-known/agent.json"]) {
        test(`happy: ${path} is a valid A2A card pointing at this registry`, async () => {
          const res = await t.request(path);
          expect(res.status).toBe(200);
          expect(res.headers.get("content-type") ?? "").toContain("application/json");
          const card = await json(res);
          const analysis = analyzeCard(card);
          if (!analysis.ok) throw new Error(`registry card invalid: ${JSON.stringify(analysis.errors)}`);
          expect(analysis.ok).toBe(true);
          expect(String(card.url)).toStartWith(t.config.registryBaseUrl);
          expect(card.name).toBe(t.config.appName);
        });
      }

      test("happy: both locations serve the same card", async () => {
        const a = await json(await t.request("/.well-known/agent-card.json"));
        const b = await json(await t.request("/.well-known/agent.json"));
        expect(a).toEqual(b);
      });
    });

    describe("GET /v1/audit", () => {
      test("security: anonymous -> 401", async () => {
        await expectProblem(await t.request("/v1/audit"), 401, "UNAUTHORIZED");
      });

      test("security: agents:write -> 403", async () => {
        await expectProblem(await t.request("/v1/audit", { token: writer.token }), 403, "FORBIDDEN");
      });

      test("security: a forged token -> 401", async () => {
        const forged = `${admin.token.split(".").slice(0, 2).join(".")}.AAAA`;
        await expectProblem(await t.request("/v1/audit", { token: forged }), 401, "UNAUTHORIZED");
      });

      test("happy: newest first, agent.created after a publish", async () => {
        const created = await publish(t, writer.token, await uniqueCard("audited"));
        const res = await t.request("/v1/audit", { token: admin.token });
        expect(res.status).toBe(200);
        const page = await json<{ items: Array<Json>; nextCursor: string | null }>(res);
        expect(page.items.length).toBeGreaterThan(0);
        const newest = page.items[0]!;
        expect(newest).toMatchObject({
          action: "agent.created",
          target: created.id,
          actor: writer.clientId,
          outcome: "success",
        });
        for (const key of ["id", "at", "actor", "action", "target", "outcome", "ip", "requestId", "details"])
          expect(newest).toHaveProperty(key);
        const times = page.items.map((i) => Date.parse(String(i.at)));
        for (let i = 1; i < times.length; i++) expect(times[i - 1]!).toBeGreaterThanOrEqual(times[i]!);
        const ids = page.items.map((i) => Number(i.id));
        for (let i = 1; i < ids.length; i++) expect(ids[i - 1]!).toBeGreaterThan(ids[i]!);
      });

      test("happy: records the request id of the write", async () => {
        const requestId = `audit-req-${Date.now()}`;
        const res = await t.request("/v1/agents", {
          method: "POST",
          json: { card: await uniqueCard("traced") },
          token: writer.token,
          headers: { "x-request-id": requestId },
        });
        expect(res.status).toBe(201);
        const page = await json<{ items: Array<Json> }>(
          await t.request("/v1/audit?action=agent.created&limit=1", { token: admin.token }),
        );
        expect(page.items[0]!.requestId).toBe(requestId);
      });

      test("happy: action filter", async () => {
        await t.request("/oauth/token", {
          method: "POST",
          form: {
            grant_type: "client_credentials",
            client_id: writer.clientId,
            client_secret: "wrong-secret",
          },
        });
        const res = await t.request("/v1/audit?action=token.denied", { token: admin.token });
        const page = await json<{ items: Array<Json> }>(res);
        expect(page.items.length).toBeGreaterThan(0);
        expect(page.items.every((i) => i.action === "token.denied")).toBe(true);
        const none = await json<{ items: Array<Json> }>(
          await t.request("/v1/audit?action=no.such.action", { token: admin.token }),
        );
        expect(none.items).toEqual([]);
      });

      test("happy: actor filter", async () => {
        const other = await t.client(["agents:write"], "other actor");
        await publish(t, other.token, await uniqueCard("other"));
        const res = await t.request(`/v1/audit?actor=${encodeURIComponent(other.clientId)}`, {
          token: admin.token,
        });
        const page = await json<{ items: Array<Json> }>(res);
        expect(page.items.length).toBeGreaterThan(0);
        expect(page.items.every((i) => i.actor === other.clientId)).toBe(true);
        const mine = await json<{ items: Array<Json> }>(
          await t.request(`/v1/audit?actor=${encodeURIComponent(writer.clientId)}`, { token: admin.token }),
        );
        expect(mine.items.some((i) => i.actor === other.clientId)).toBe(false);
      });

      test("happy: cursor pagination walks every row once, newest first", async () => {
        const all = await json<{ items: Array<Json> }>(
          await t.request("/v1/audit?limit=200", { token: admin.token }),
        );
        expect(all.items.length).toBeGreaterThanOrEqual(3);
        const seen: string[] = [];
        let cursor: string | null = null;
        for (let pages = 0; pages < 100; pages++) {
          const query: string = cursor ? `?limit=2&cursor=${encodeURIComponent(cursor)}` : "?limit=2";
          const res = await t.request(`/v1/audit${query}`, { token: admin.token });
          expect(res.status).toBe(200);
          const page = await json<{ items: Array<Json>; nextCursor: string | null }>(res);
          expect(page.items.length).toBeLessThanOrEqual(2);
          seen.push(...page.items.map((i) => String(i.id)));
          cursor = page.nextCursor;
          if (!cursor) break;
        }
        expect(seen).toEqual(all.items.map((i) => String(i.id)).slice(0, seen.length));
        expect(seen.length).toBeGreaterThanOrEqual(all.items.length);
        expect(new Set(seen).size).toBe(seen.length);
      });

      for (const cursor of [
        "not-a-cursor",
        Buffer.from("s:12").toString("base64url"),
        "%00",
        "a".repeat(101),
      ]) {
        test(`errors: malformed cursor ${JSON.stringify(cursor.slice(0, 12))} -> 400`, async () => {
          const res = await t.request(`/v1/audit?cursor=${encodeURIComponent(cursor)}`, {
            token: admin.token,
          });
          await expectProblem(res, 400, "VALIDATION_FAILED");
        });
      }

      test("errors: limit out of range -> 400", async () => {
        await expectProblem(
          await t.request("/v1/audit?limit=0", { token: admin.token }),
          400,
          "VALIDATION_FAILED",
        );
        await expectProblem(
          await t.request("/v1/audit?limit=201", { token: admin.token }),
          400,
          "VALIDATION_FAILED",
        );
      });

      test("security: audit rows never hold client secrets or tokens", async () => {
        await t.request("/oauth/token", {
          method: "POST",
          form: {
            grant_type: "client_credentials",
            client_id: writer.clientId,
            client_secret: writer.clientSecret,
          },
        });
        const text = await (await t.request("/v1/audit?limit=200", { token: admin.token })).text();
        expect(text).toContain("token.issued");
        expect(text).not.toContain(writer.clientSecret);
        expect(text).not.toContain(writer.token);
        expect(text).not.toContain(admin.clientSecret);
      });
    });
  });

  describe(`ops: GET /metrics [${backend}]`, () => {
    let t: TestApp;
    let agentId: string;

    beforeAll(async () => {
      t = await createTestApp(backend);
      const writer = await t.client(["agents:write"], "metrics writer");
      const card = (await Bun.file(`${FIXTURES}/weather-0.3.json`).json()) as Json;
      agentId = (await publish(t, writer.token, card)).id;
      expect((await t.request(`/v1/agents/${agentId}`)).status).toBe(200);
      expect((await t.request(`/v1/agents/${agentId}`)).status).toBe(200);
      expect((await t.request(`/v1/agents/${crypto.randomUUID()}`)).status).toBe(404);
      expect((await t.request("/v1/agents", { token: "garbage.token.value" })).status).toBe(401);
      expect((await t.request("/definitely/not/here")).status).toBe(404);
      expect((await t.request("/v1/agents?limit=0")).status).toBe(400);
      await settle();
    }, 60_000);
    afterAll(() => t.close(), 30_000);

    test("happy: Prometheus text exposition", async () => {
      const res = await t.request("/metrics");
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type") ?? "").toStartWith("text/plain");
      const text = await res.text();
      expect(text).toContain("# TYPE a2a_registry_requests_total counter");
      expect(() => parseMetrics(text)).not.toThrow();
    });

    test("happy: requests_total by method, route template and status_code", async () => {
      const samples = parseMetrics(await (await t.request("/metrics")).text());
      const reads = find(samples, "a2a_registry_requests_total", {
        method: "GET",
        route: "/v1/agents/:id",
        status_code: "200",
      });
      expect(reads.length).toBe(1);
      expect(reads[0]!.value).toBeGreaterThanOrEqual(2);
      expect(
        find(samples, "a2a_registry_requests_total", {
          method: "POST",
          route: "/v1/agents",
          status_code: "201",
        })[0]?.value,
      ).toBe(1);
      expect(
        find(samples, "a2a_registry_requests_total", { route: "/v1/agents/:id", status_code: "404" })[0]
          ?.value,
      ).toBe(1);
      expect(
        find(samples, "a2a_registry_requests_total", { route: "/v1/agents", status_code: "401" }),
      ).toHaveLength(1);
    });

    test("happy: status_code is the status actually sent, also for errors", async () => {
      const samples = parseMetrics(await (await t.request("/metrics")).text());
      const requests = find(samples, "a2a_registry_requests_total");
      const listErrors = requests.filter((s) => s.labels.route === "/v1/agents" && s.labels.method === "GET");
      expect(listErrors.find((s) => s.labels.status_code === "400")?.value).toBe(1);
      expect(listErrors.find((s) => s.labels.status_code === "422")).toBeUndefined();
      const unmatched = requests.filter((s) => !s.labels.route?.startsWith("/"));
      expect(unmatched.map((s) => s.labels.status_code)).toEqual(["404"]);
    });

    test("security: raw paths and ids never become label values", async () => {
      const text = await (await t.request("/metrics")).text();
      expect(text).not.toContain(agentId);
      expect(text).not.toContain("/definitely/not/here");
      const routes = new Set(
        parseMetrics(text)
          .filter((s) => s.name.startsWith("a2a_registry_request"))
          .map((s) => s.labels.route),
      );
      for (const route of routes) expect(route).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-/);
    });

    test("happy: request duration histogram", async () => {
      const samples = parseMetrics(await (await t.request("/metrics")).text());
      const buckets = find(samples, "a2a_registry_request_duration_seconds_bucket", {
        method: "GET",
        route: "/v1/agents/:id",
      });
      expect(buckets.length).toBeGreaterThan(1);
      expect(buckets.find((b) => b.labels.le === "+Inf")?.value).toBeGreaterThanOrEqual(3);
      expect(
        find(samples, "a2a_registry_request_duration_seconds_count", { route: "/v1/agents/:id" }).length,
      ).toBe(1);
    });

    test("happy: agents_total{status=active} reflects published agents", async () => {
      const samples = parseMetrics(await (await t.request("/metrics")).text());
      expect(find(samples, "a2a_registry_agents_total", { status: "active" })[0]?.value).toBe(1);
      const writer = await t.client(["agents:write"], "metrics writer 2");
      await publish(t, writer.token, await uniqueCard("metrics"));
      const after = parseMetrics(await (await t.request("/metrics")).text());
      expect(find(after, "a2a_registry_agents_total", { status: "active" })[0]?.value).toBe(2);
    });

    test("happy: auth failures counted after a bad token", async () => {
      const samples = parseMetrics(await (await t.request("/metrics")).text());
      const failures = find(samples, "a2a_registry_auth_failures_total");
      expect(failures.length).toBeGreaterThan(0);
      expect(failures.reduce((sum, s) => sum + s.value, 0)).toBeGreaterThanOrEqual(1);
      for (const s of failures) expect(s.labels.reason).toBeTruthy();
    });

    test("happy: every metric the contract names is exposed", async () => {
      const text = await (await t.request("/metrics")).text();
      const required: Array<[string, string]> = [
        ["a2a_registry_requests_total", "counter"],
        ["a2a_registry_request_duration_seconds", "histogram"],
        ["a2a_registry_agents_total", "gauge"],
        ["a2a_registry_search_queries_total", "counter"],
        ["a2a_registry_peer_syncs_total", "counter"],
        ["a2a_registry_rate_limited_total", "counter"],
        ["a2a_registry_auth_failures_total", "counter"],
        ["a2a_registry_cache_requests_total", "counter"],
      ];
      for (const [name, type] of required) {
        expect(text).toMatch(new RegExp(`^# HELP ${name} \\S`, "m"));
        expect(text).toContain(`# TYPE ${name} ${type}`);
      }
    });

    test("security: /metrics needs no token", async () => {
      expect((await t.request("/metrics")).status).toBe(200);
    });
  });

  describe(`ops: GET /.well-known/agents/index.json [${backend}]`, () => {
    const baseUrl = "https://registry.example.test";
    let t: TestApp;
    const publicIds: string[] = [];
    let privateId: string;
    let deprecatedId: string;

    beforeAll(async () => {
      t = await createTestApp(backend, {
        config: { registryBaseUrl: baseUrl, appName: "Index Test Registry" },
      });
      const writer = await t.client(["agents:write"], "index writer");
      for (let i = 0; i < 3; i++)
        publicIds.push((await publish(t, writer.token, await uniqueCard("public"))).id);
      privateId = (await publish(t, writer.token, await uniqueCard("private"), "private")).id;
      deprecatedId = (await publish(t, writer.token, await uniqueCard("deprecated"))).id;
      const patched = await t.request(`/v1/agents/${deprecatedId}`, {
        method: "PATCH",
        json: { status: "deprecated" },
        token: writer.token,
      });
      expect(patched.status).toBe(200);
    }, 60_000);
    afterAll(() => t.close(), 30_000);

    test("happy: shape, only public active agents", async () => {
      const res = await t.request("/.well-known/agents/index.json");
      expect(res.status).toBe(200);
      const body = await json<{
        registry_name: string;
        agents: Array<Record<string, string>>;
        count: number;
        next: string | null;
      }>(res);
      expect(body.registry_name).toBe("Index Test Registry");
      expect(body.count).toBe(3);
      expect(body.next).toBeNull();
      expect(body.agents.map((a) => a.id).sort()).toEqual([...publicIds].sort());
      for (const agent of body.agents) {
        expect(Object.keys(agent).sort()).toEqual(["description", "id", "name", "url"]);
        expect(agent.url).toStartWith("https://");
      }
    });

    test("security: private agents are absent and not counted, even for their owner's token", async () => {
      const text = await (await t.request("/.well-known/agents/index.json")).text();
      expect(text).not.toContain(privateId);
      expect(text).not.toContain("private ");
      expect(text).not.toContain(deprecatedId);
      const admin = await t.client(["admin"]);
      const asAdmin = await json<{ count: number; agents: Array<{ id: string }> }>(
        await t.request("/.well-known/agents/index.json", { token: admin.token }),
      );
      expect(asAdmin.count).toBe(3);
      expect(asAdmin.agents.some((a) => a.id === privateId)).toBe(false);
    });

    test("happy: limit=1 pages through with next URLs", async () => {
      const seen: string[] = [];
      let path: string | null = "/.well-known/agents/index.json?limit=1";
      for (let guard = 0; path && guard < 10; guard++) {
        const res = await t.request(path);
        expect(res.status).toBe(200);
        const body = await json<{ agents: Array<{ id: string }>; count: number; next: string | null }>(res);
        expect(body.agents.length).toBeLessThanOrEqual(1);
        expect(body.count).toBe(3);
        seen.push(...body.agents.map((a) => a.id));
        if (body.next) {
          expect(body.next).toStartWith(`${baseUrl}/.well-known/agents/index.json?`);
          path = body.next.slice(baseUrl.length);
        } else path = null;
      }
      expect(seen.sort()).toEqual([...publicIds].sort());
    });

    test("errors: malformed cursor and bad limit -> 400", async () => {
      await expectProblem(
        await t.request("/.well-known/agents/index.json?cursor=bogus"),
        400,
        "VALIDATION_FAILED",
      );
      await expectProblem(
        await t.request("/.well-known/agents/index.json?limit=0"),
        400,
        "VALIDATION_FAILED",
      );
    });

    test("happy: the registry's own card url uses REGISTRY_BASE_URL", async () => {
      const card = await json(await t.request("/.well-known/agent-card.json"));
      expect(String(card.url)).toStartWith(baseUrl);
      expect(analyzeCard(card).ok).toBe(true);
    });
  });

  describe(`ops: small body limit [${backend}]`, () => {
    let t: TestApp;
    let writer: { token: string };
    beforeAll(async () => {
      t = await createTestApp(backend, { config: { maxBodyBytes: 2048 } });
      writer = await t.client(["agents:write"]);
    }, 60_000);
    afterAll(() => t.close(), 30_000);

    test("errors: declared length over the configured limit -> 413 without reading", async () => {
      const { body, state } = poisonedBody();
      const res = await t.app.handle(
        new Request(`${BASE}/v1/agents`, {
          method: "POST",
          body,
          headers: {
            "content-type": "application/json",
            "content-length": "2049",
            authorization: `Bearer ${writer.token}`,
          },
          duplex: "half",
        } as RequestInit),
      );
      await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
      expect(state.pulled).toBe(false);
    });

    test("errors: a streamed body without Content-Length past the limit -> 413", async () => {
      const bytes = new TextEncoder().encode(
        JSON.stringify({ card: { name: "x", padding: "a".repeat(8000) } }),
      );
      const res = await t.app.handle(
        new Request(`${BASE}/v1/agents`, {
          method: "POST",
          body: chunkedBody(bytes),
          headers: { "content-type": "application/json", authorization: `Bearer ${writer.token}` },
          duplex: "half",
        } as RequestInit),
      );
      expect(res.headers.get("content-length")).not.toBe(String(bytes.length));
      await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
    });

    test("errors: a streamed form body past the limit on /oauth/token -> 413", async () => {
      const bytes = new TextEncoder().encode(`grant_type=client_credentials&pad=${"a".repeat(8000)}`);
      const res = await t.app.handle(
        new Request(`${BASE}/oauth/token`, {
          method: "POST",
          body: chunkedBody(bytes),
          headers: { "content-type": "application/x-www-form-urlencoded" },
          duplex: "half",
        } as RequestInit),
      );
      await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
    });

    test("happy: a streamed body under the limit is accepted", async () => {
      const bytes = new TextEncoder().encode(JSON.stringify({ card: await uniqueCard("streamed") }));
      expect(bytes.length).toBeLessThan(2048);
      const res = await t.app.handle(
        new Request(`${BASE}/v1/agents`, {
          method: "POST",
          body: chunkedBody(bytes, 64),
          headers: { "content-type": "application/json", authorization: `Bearer ${writer.token}` },
          duplex: "half",
        } as RequestInit),
      );
      expect(res.status).toBe(201);
    });
  });

  describe(`ops: database down [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend);
      await t.db.database.close();
    }, 60_000);
    afterAll(() => t.close(), 30_000);

    test("errors: /health/ready -> 503 with database down", async () => {
      const res = await t.request("/health/ready");
      expect(res.status).toBe(503);
      const body = await json<{
        status: string;
        checks: { database: { status: string; latencyMs?: number } };
      }>(res);
      expect(body.checks.database.status).toBe("down");
      expect(body.status).not.toBe("ready");
      expectSecurityHeaders(res);
    });

    test("happy: /health stays 200 (liveness does no I/O)", async () => {
      const res = await t.request("/health");
      expect(res.status).toBe(200);
      expect(await json(res)).toEqual({ status: "ok" });
    });

    test("errors: a read -> 503 DEPENDENCY_UNAVAILABLE without SQL or stack", async () => {
      const res = await t.request("/v1/agents");
      const body = await expectProblem(res, 503, "DEPENDENCY_UNAVAILABLE");
      expect(JSON.stringify(body)).not.toMatch(/agents|closed|ECONN/i);
    });

    test("happy: /metrics still answers", async () => {
      expect((await t.request("/metrics")).status).toBe(200);
    });
  });

  describe(`ops: logging [${backend}]`, () => {
    let db: TestDatabase;
    let app: ReturnType<typeof createApp>;
    const lines: Json[] = [];
    let raw = "";

    const send = (path: string, init: RequestInit = {}) => app.handle(new Request(`${BASE}${path}`, init));
    const linesFor = (requestId: string) => lines.filter((l) => l.requestId === requestId);
    const accessLines = (requestId: string) => linesFor(requestId).filter((l) => l.msg === "request");

    beforeAll(async () => {
      db = await createTestDatabase(backend);
      const stream = new Writable({
        write(chunk, _encoding, callback) {
          const text = chunk.toString();
          raw += text;
          for (const line of text.split("\n")) if (line.trim()) lines.push(JSON.parse(line));
          callback();
        },
      });
      const config = testConfig({ logLevel: "info" });
      const deps = await createDependencies(config, {
        database: db.database,
        logger: pino({ level: "info" }, stream),
        metrics: createMetrics({ collectProcessMetrics: false }),
      });
      app = createApp(deps);
    }, 60_000);
    afterAll(async () => {
      if (app?.server) await app.stop();
      await db?.drop();
    });

    test("happy: one JSON access-log line per request with the route template", async () => {
      const writer = await app.services.auth.createClient({ name: "log writer", scopes: ["agents:write"] });
      const { access_token } = await app.services.auth.issueToken({
        clientId: writer.client_id,
        clientSecret: writer.client_secret,
        scope: undefined,
      });
      const card = await uniqueCard("logged");
      const created = await send("/v1/agents", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          authorization: `Bearer ${access_token}`,
          "x-request-id": "log-publish-1",
        },
        body: JSON.stringify({ card }),
      });
      expect(created.status).toBe(201);
      const { id } = await json<{ id: string }>(created);
      const read = await send(`/v1/agents/${id}`, { headers: { "x-request-id": "log-read-1" } });
      expect(read.status).toBe(200);
      const missing = await send("/nope/nothing", { headers: { "x-request-id": "log-404-1" } });
      expect(missing.status).toBe(404);
      await settle();

      const publishLines = accessLines("log-publish-1");
      expect(publishLines).toHaveLength(1);
      expect(publishLines[0]).toMatchObject({
        method: "POST",
        route: "/v1/agents",
        status: 201,
        clientId: writer.client_id,
      });
      expect(typeof publishLines[0]!.durationMs).toBe("number");

      const readLines = accessLines("log-read-1");
      expect(readLines).toHaveLength(1);
      expect(readLines[0]).toMatchObject({
        method: "GET",
        route: "/v1/agents/:id",
        status: 200,
        clientId: null,
      });
      expect(JSON.stringify(readLines[0])).not.toContain(id);

      const missingLines = accessLines("log-404-1");
      expect(missingLines).toHaveLength(1);
      expect(missingLines[0]).toMatchObject({ method: "GET" });
      expect(JSON.stringify(missingLines[0])).not.toContain("/nope/nothing");
    });

    test("happy: error responses are logged with the status actually sent", async () => {
      const sent: Record<string, number> = {};
      for (const [requestId, path] of [
        ["log-status-404", "/nope/nothing/else"],
        ["log-status-400", "/v1/agents?limit=abc"],
        ["log-status-401", "/v1/audit"],
      ] as const) {
        const res = await send(path, { headers: { "x-request-id": requestId } });
        sent[requestId] = res.status;
      }
      await settle();
      const logged = Object.fromEntries(
        Object.keys(sent).map((requestId) => [requestId, accessLines(requestId)[0]?.status]),
      );
      expect(logged).toEqual(sent);
      expect(sent).toEqual({ "log-status-404": 404, "log-status-400": 400, "log-status-401": 401 });
    });

    test("happy: a 413 rejected before routing is still logged once", async () => {
      const res = await send("/v1/agents", {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "content-length": String(5 * 1024 * 1024),
          "x-request-id": "log-413-1",
        },
        body: poisonedBody().body,
        duplex: "half",
      } as RequestInit);
      expect(res.status).toBe(413);
      await settle();
      expect(accessLines("log-413-1")).toHaveLength(1);
      expect(accessLines("log-413-1")[0]).toMatchObject({ status: 413 });
    });

    test("security: client secrets, tokens and Authorization headers never reach the logs", async () => {
      const client = await app.services.auth.createClient({ name: "log secret", scopes: ["agents:write"] });
      const basic = Buffer.from(`${client.client_id}:${client.client_secret}`).toString("base64");
      const viaBasic = await send("/oauth/token", {
        method: "POST",
        headers: {
          "content-type": "application/x-www-form-urlencoded",
          authorization: `Basic ${basic}`,
          "x-request-id": "log-token-basic",
        },
        body: "grant_type=client_credentials",
      });
      expect(viaBasic.status).toBe(200);
      const { access_token } = await json<{ access_token: string }>(viaBasic);
      const viaForm = await send("/oauth/token", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-request-id": "log-token-form" },
        body: new URLSearchParams({
          grant_type: "client_credentials",
          client_id: client.client_id,
          client_secret: client.client_secret,
        }).toString(),
      });
      expect(viaForm.status).toBe(200);
      const denied = await send("/oauth/token", {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-request-id": "log-token-denied" },
        body: new URLSearchParams({
          grant_type: "client_credentials",
          client_id: client.client_id,
          client_secret: "a-wrong-secret-that-must-not-be-logged",
        }).toString(),
      });
      expect(denied.status).toBe(401);
      const authed = await send("/v1/agents", {
        headers: { authorization: `Bearer ${access_token}`, "x-request-id": "log-authed" },
      });
      expect(authed.status).toBe(200);
      const badBearer = await send("/v1/agents", {
        headers: { authorization: "Bearer not.a.real-token-value", "x-request-id": "log-bad-bearer" },
      });
      expect(badBearer.status).toBe(401);
      await settle();

      for (const id of [
        "log-token-basic",
        "log-token-form",
        "log-token-denied",
        "log-authed",
        "log-bad-bearer",
      ])
        expect(accessLines(id), id).toHaveLength(1);
      expect(accessLines("log-authed")[0]!.clientId).toBe(client.client_id);
      expect(raw).not.toContain(client.client_secret);
      expect(raw).not.toContain(basic);
      expect(raw).not.toContain(access_token);
      expect(raw).not.toContain("a-wrong-secret-that-must-not-be-logged");
      expect(raw).not.toContain("not.a.real-token-value");
      expect(raw.toLowerCase()).not.toContain('"authorization"');
      expect(raw).not.toMatch(/Bearer |Basic /);
    });

    test("errors: a 500 is logged at error level with a stack; the response hides it", async () => {
      const agents = app.services.agents as unknown as Record<string, unknown>;
      const original = agents.list;
      agents.list = async () => {
        throw new Error("kaboom: internal detail 42");
      };
      try {
        const res = await send("/v1/agents", { headers: { "x-request-id": "log-500-1" } });
        const body = await expectProblem(res, 500, "INTERNAL");
        expect(JSON.stringify(body)).not.toContain("kaboom");
      } finally {
        agents.list = original;
      }
      await settle();
      const errors = linesFor("log-500-1").filter((l) => Number(l.level) >= 50);
      expect(errors.length).toBeGreaterThanOrEqual(1);
      const err = errors[0]!.err as { stack?: string; message?: string } | undefined;
      expect(err?.stack ?? "").toContain("kaboom");
      expect(err?.stack ?? "").toMatch(/\n\s+at /);
      expect(accessLines("log-500-1")).toHaveLength(1);
      expect(accessLines("log-500-1")[0]).toMatchObject({ status: 500, route: "/v1/agents" });
    });

    test("happy: 4xx responses are not logged at error level", async () => {
      const cases: Array<[string, string, RequestInit]> = [
        ["log-4xx-404", "/v1/agents/00000000-0000-7000-8000-000000000000", {}],
        ["log-4xx-401", "/v1/audit", {}],
        ["log-4xx-400", "/v1/agents?limit=0", {}],
        ["log-4xx-route", "/no/such/thing", {}],
        [
          "log-4xx-json",
          "/v1/agents",
          { method: "POST", body: "{oops", headers: { "content-type": "application/json" } },
        ],
      ];
      for (const [requestId, path, init] of cases) {
        const headers = new Headers(init.headers);
        headers.set("x-request-id", requestId);
        const res = await send(path, { ...init, headers });
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
      }
      await settle();
      for (const [requestId] of cases) {
        expect(accessLines(requestId), requestId).toHaveLength(1);
        expect(
          linesFor(requestId).filter((l) => Number(l.level) >= 50),
          requestId,
        ).toEqual([]);
      }
    });
  });
}
