import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { RateLimit } from "../src/config";
import { endpointClass } from "../src/infra/ratelimit-http";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";
import { eventually, startRedisServer, suiteRedis } from "./support/redis";

const generous: RateLimit = { limit: 1_000_000, periodMs: 1000 };
const limits = (
  read: RateLimit,
  extra: Partial<Record<"token" | "write" | "admin" | "search", RateLimit>> = {},
) => ({
  rateLimits: { token: generous, search: generous, write: generous, admin: generous, read, ...extra },
});

async function metric(t: TestApp, name: string) {
  const text = await (await t.request("/metrics")).text();
  const line = text.split("\n").find((l) => l.startsWith(name));
  return line ? Number(line.split(" ").pop()) : 0;
}

describe("endpoint classes", () => {
  test("routes map to token, read, search, write and admin; probes are exempt", () => {
    expect(endpointClass("POST", "/oauth/token")).toBe("token");
    expect(endpointClass("GET", "/v1/agents/:id")).toBe("read");
    expect(endpointClass("GET", "/.well-known/agents/index.json")).toBe("read");
    expect(endpointClass("POST", "/v1/agents")).toBe("write");
    expect(endpointClass("DELETE", "/v1/agents/:id")).toBe("write");
    expect(endpointClass("GET", "/v1/search")).toBe("search");
    expect(endpointClass("POST", "/v1/clients")).toBe("admin");
    expect(endpointClass("GET", "/v1/audit")).toBe("admin");
    for (const route of ["/health", "/health/ready", "/metrics", "/docs", "/docs/json"])
      expect(endpointClass("GET", route)).toBeUndefined();
  });
});

for (const backend of BACKENDS) {
  describe(`rate limits over HTTP, in-process buckets [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend, {
        config: { ...limits({ limit: 5, periodMs: 1000 }), trustProxy: true },
      });
    });
    afterAll(() => t.close());

    const from = (ip: string, path = "/v1/agents") => t.request(path, { headers: { "x-forwarded-for": ip } });

    test("happy: every limited response carries RateLimit headers counting down; probes carry none", async () => {
      const first = await from("198.51.100.1");
      expect(first.status).toBe(200);
      expect(first.headers.get("ratelimit-limit")).toBe("5");
      expect(first.headers.get("ratelimit-remaining")).toBe("4");
      expect(Number(first.headers.get("ratelimit-reset"))).toBeGreaterThanOrEqual(0);
      const second = await from("198.51.100.1");
      expect(second.headers.get("ratelimit-remaining")).toBe("3");
      for (const path of ["/health", "/health/ready", "/metrics"]) {
        const res = await from("198.51.100.1", path);
        expect(res.status).toBe(200);
        expect(res.headers.get("ratelimit-limit")).toBeNull();
      }
    });

    test("errors: past the burst -> 429 RATE_LIMITED problem+json with Retry-After; refills after the period", async () => {
      const ip = "198.51.100.2";
      const statuses: number[] = [];
      for (let i = 0; i < 8; i++) statuses.push((await from(ip)).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 429, 429, 429]);
      const limited = await from(ip);
      expect(limited.headers.get("content-type")).toContain("application/problem+json");
      expect(Number(limited.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(limited.headers.get("ratelimit-remaining")).toBe("0");
      expect(limited.headers.get("x-request-id")).toBeTruthy();
      const body = await json<{ code: string; status: number }>(limited);
      expect(body).toMatchObject({ code: "RATE_LIMITED", status: 429 });
      expect(await metric(t, 'a2a_registry_rate_limited_total{class="read"}')).toBeGreaterThanOrEqual(4);
      await Bun.sleep(1100);
      expect((await from(ip)).status).toBe(200);
    });

    test("security: buckets are per client id and per client IP; probes stay reachable when limited", async () => {
      const ip = "198.51.100.3";
      for (let i = 0; i < 5; i++) await from(ip);
      expect((await from(ip)).status).toBe(429);
      expect((await from("198.51.100.4")).status).toBe(200);
      const client = await t.client(["agents:read"]);
      // a token holder is keyed by its client id, not by the exhausted IP it comes from
      const withToken = await t.request("/v1/agents", {
        token: client.token,
        headers: { "x-forwarded-for": ip },
      });
      expect(withToken.status).toBe(200);
      expect((await from(ip, "/health")).status).toBe(200);
    });
  });

  describe(`X-Forwarded-For is ignored unless TRUST_PROXY [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend, {
        config: { ...limits({ limit: 3, periodMs: 60_000 }), trustProxy: false },
      });
    });
    afterAll(() => t.close());

    test("security: a client cannot escape its bucket by inventing forwarded addresses", async () => {
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++)
        statuses.push(
          (await t.request("/v1/agents", { headers: { "x-forwarded-for": `203.0.113.${i}` } })).status,
        );
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
    });
  });

  describe(`rate limits shared by two instances through Redis [${backend}]`, () => {
    let db: TestDatabase;
    let redis: { url: string; stop(): Promise<void> };
    let a: TestApp;
    let b: TestApp;
    const prefix = `rl-${backend}-${Date.now()}`;

    beforeAll(async () => {
      db = await createTestDatabase(backend);
      redis = await suiteRedis();
      // a key of its own per run, so repeated runs against a shared Redis start from a full bucket
      const config = { ...limits({ limit: 50, periodMs: 60_000 }), trustProxy: true };
      a = await createTestApp(backend, { db, redisUrl: redis.url, config });
      b = await createTestApp(backend, { db, redisUrl: redis.url, config });
      await eventually(
        () => a.app.services.limiter.mode() === "redis" && b.app.services.limiter.mode() === "redis",
      );
    });
    afterAll(async () => {
      await a.close();
      await b.close();
      await db.drop();
      await redis.stop();
    });

    test("a bucket of 50: 200 concurrent requests across both instances give exactly 50 successes", async () => {
      const ip = `${prefix}-10.9.9.9`;
      const results = await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          (i % 2 ? a : b).request("/v1/agents", { headers: { "x-forwarded-for": ip } }),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(50);
      expect(statuses.filter((s) => s === 429)).toHaveLength(150);
      for (const r of results) expect(r.headers.get("ratelimit-limit")).toBe("50");
    });
  });

  describe(`limiter when Redis dies mid-test [${backend}]`, () => {
    let server: Awaited<ReturnType<typeof startRedisServer>>;
    let t: TestApp;
    beforeAll(async () => {
      server = await startRedisServer();
      t = await createTestApp(backend, {
        redisUrl: server.url,
        config: limits({ limit: 1000, periodMs: 60_000 }),
      });
      await eventually(() => t.app.services.limiter.mode() === "redis");
    });
    afterAll(async () => {
      await t.close();
      await server.stop();
    });

    test("requests keep succeeding, the limiter falls back and says so in a metric, then recovers", async () => {
      for (let i = 0; i < 20; i++) expect((await t.request("/v1/agents")).status).toBe(200);
      await server.kill();
      const before = await metric(t, "a2a_registry_rate_limiter_fallbacks_total");
      for (let i = 0; i < 200; i++) {
        const res = await t.request("/v1/agents");
        expect(res.status).toBe(200);
        expect(res.headers.get("ratelimit-limit")).toBe("1000");
      }
      expect(t.app.services.limiter.mode()).toBe("local");
      expect(await metric(t, "a2a_registry_rate_limiter_fallbacks_total")).toBeGreaterThan(before);
      await server.restart();
      expect(await eventually(() => t.app.services.limiter.mode() === "redis", 10_000)).toBe(true);
      expect((await t.request("/v1/agents")).status).toBe(200);
    });
  });
}
