import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import type { Stats } from "../src/modules/stats/model";
import { windowStart } from "../src/modules/stats/service";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";

let counter = 0;
const card = (name: string) => ({
  protocolVersion: "0.3.0",
  name,
  description: `${name} for the stats suite`,
  url: `https://stats-${counter++}-${crypto.randomUUID().slice(0, 8)}.example.com/a2a`,
  version: "1.0.0",
  capabilities: {},
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [{ id: "count", name: "Count", description: "Counts things", tags: ["stats"] }],
});

/** The answer without its timestamp: what two callers are told can then be compared whole. */
const counts = ({ generatedAt: _generatedAt, ...rest }: Stats) => rest;

for (const backend of BACKENDS) {
  describe(`GET /v1/stats [${backend}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let owner: { clientId: string; token: string };
    let entitled: { clientId: string; token: string };
    let stranger: { clientId: string; token: string };
    let admin: { clientId: string; token: string };

    const stats = async (token?: string, query = "") => {
      const res = await t.request(`/v1/stats${query}`, { token });
      expect(res.status, await res.clone().text()).toBe(200);
      return json<Stats>(res);
    };
    const publish = async (token: string, name: string, visibility: "public" | "private" = "public") => {
      const res = await t.request("/v1/agents", {
        method: "POST",
        token,
        json: { card: card(name), visibility },
      });
      expect(res.status, await res.clone().text()).toBe(201);
      return (await json<{ id: string }>(res)).id;
    };

    beforeAll(async () => {
      t = await createTestApp(backend);
      writer = await t.client(["agents:write"], "writer");
      owner = await t.client(["agents:write"], "owner");
      entitled = await t.client(["agents:read"], "entitled");
      stranger = await t.client(["agents:read"], "stranger");
      admin = await t.client(["admin"], "admin");
    }, 60_000);
    afterAll(async () => {
      await t?.close();
    });

    test("happy: an empty registry has zero counts and one bucket per day of the window", async () => {
      const empty = await stats();
      expect(empty.total).toBe(0);
      expect(empty.byStatus).toEqual({ active: 0, deprecated: 0 });
      expect(empty.registrations.days).toBe(30);
      expect(empty.registrations.before).toBe(0);
      const days = empty.registrations.buckets.map((b) => b.date);
      expect(days.length).toBe(30);
      expect(days.at(-1)).toBe(new Date().toISOString().slice(0, 10));
      expect(days[0]).toBe(windowStart(new Date(), 30).toISOString().slice(0, 10));
      expect(new Set(days).size).toBe(30);
      expect([...days].sort()).toEqual(days);
      expect(empty.registrations.buckets.every((b) => b.count === 0)).toBe(true);
      expect(Number.isNaN(Date.parse(empty.generatedAt))).toBe(false);
    });

    test("happy: counts by status, health, signature and source, and today's registrations", async () => {
      const a = await publish(writer.token, "Stats Alpha");
      await publish(writer.token, "Stats Beta");
      const c = await publish(writer.token, "Stats Gamma");
      const deprecated = await t.request(`/v1/agents/${a}`, {
        method: "PATCH",
        token: writer.token,
        json: { status: "deprecated", statusMessage: "use Beta" },
      });
      expect(deprecated.status).toBe(200);
      const removed = await t.request(`/v1/agents/${c}`, { method: "DELETE", token: writer.token });
      expect(removed.status).toBe(204);

      const now = await stats();
      expect(now.total).toBe(2);
      expect(now.byStatus).toEqual({ active: 1, deprecated: 1 });
      expect(now.byHealth).toEqual({ up: 0, down: 0, unknown: 2 });
      expect(now.bySignature).toEqual({ none: 2, valid: 0, invalid: 0 });
      expect(now.bySource).toEqual({ local: 2, federated: 0 });
      // The deleted agent is gone from every count, including the day it was registered.
      expect(now.registrations.buckets.at(-1)!.count).toBe(2);
    });

    test("happy: days sets the window; older agents count in `before`, not in a bucket", async () => {
      const old = await publish(writer.token, "Stats Veteran");
      await t.db.database.rows(
        sql`update agents set created_at = now() - interval '10 days' where id = ${old}`,
      );
      const week = await stats(undefined, "?days=7");
      expect(week.registrations.days).toBe(7);
      expect(week.registrations.buckets.length).toBe(7);
      expect(week.registrations.before).toBe(1);
      expect(week.registrations.buckets.reduce((sum, b) => sum + b.count, 0)).toBe(week.total - 1);
      const month = await stats(undefined, "?days=30");
      const tenDaysAgo = new Date(Date.now() - 10 * 86_400_000).toISOString().slice(0, 10);
      expect(month.registrations.buckets.find((b) => b.date === tenDaysAgo)?.count).toBe(1);
      expect(month.registrations.before).toBe(0);
    });

    test("happy: headers say the answer is per caller and rate limited as a read", async () => {
      const res = await t.request("/v1/stats");
      expect(res.headers.get("content-type")).toContain("application/json");
      expect(res.headers.get("cache-control")).toBe("private, no-cache");
      expect(res.headers.get("vary")).toContain("Authorization");
      expect(res.headers.get("ratelimit-limit")).toBeTruthy();
      expect(res.headers.get("x-request-id")).toBeTruthy();
    });

    test("security: a private agent changes no count anonymous callers or strangers see", async () => {
      const anonymousBefore = counts(await stats());
      const strangerBefore = counts(await stats(stranger.token));
      const ownerBefore = counts(await stats(owner.token));
      const adminBefore = counts(await stats(admin.token));

      const secret = await publish(owner.token, "Stats Secret", "private");

      expect(counts(await stats())).toEqual(anonymousBefore);
      expect(counts(await stats(stranger.token))).toEqual(strangerBefore);
      const ownerAfter = await stats(owner.token);
      expect(ownerAfter.total).toBe(ownerBefore.total + 1);
      expect(ownerAfter.byStatus.active).toBe(ownerBefore.byStatus.active + 1);
      expect(ownerAfter.registrations.buckets.at(-1)!.count).toBe(
        ownerBefore.registrations.buckets.at(-1)!.count + 1,
      );
      expect((await stats(admin.token)).total).toBe(adminBefore.total + 1);

      // An entitled client sees it; the grant changes nothing for anyone else.
      expect((await stats(entitled.token)).total).toBe(anonymousBefore.total);
      const grant = await t.request(`/v1/agents/${secret}/entitlements/${entitled.clientId}`, {
        method: "PUT",
        token: owner.token,
      });
      expect(grant.status).toBe(204);
      expect((await stats(entitled.token)).total).toBe(anonymousBefore.total + 1);
      expect(counts(await stats())).toEqual(anonymousBefore);
      expect(counts(await stats(stranger.token))).toEqual(strangerBefore);

      // Made public, it counts for everyone at once (no stale cached answer).
      const open = await t.request(`/v1/agents/${secret}`, {
        method: "PATCH",
        token: owner.token,
        json: { visibility: "public" },
      });
      expect(open.status).toBe(200);
      expect((await stats()).total).toBe(anonymousBefore.total + 1);
      expect((await stats(stranger.token)).total).toBe(strangerBefore.total + 1);
    });

    test("errors: an out-of-range or malformed window is a 400 problem", async () => {
      for (const query of ["?days=0", "?days=367", "?days=abc", "?days=1.5"]) {
        const res = await t.request(`/v1/stats${query}`);
        expect(res.status, query).toBe(400);
        expect(res.headers.get("content-type")).toContain("application/problem+json");
        const problem = await json<{ code: string; requestId: string }>(res);
        expect(problem.code).toBe("VALIDATION_FAILED");
        expect(problem.requestId).toBeTruthy();
      }
    });

    test("errors: an invalid bearer token is a 401 problem, not an anonymous answer", async () => {
      const res = await t.request("/v1/stats", { token: "not-a-token" });
      expect(res.status).toBe(401);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
      expect((await json<{ code: string }>(res)).code).toBe("UNAUTHORIZED");
    });

    test("security: the answer holds counts only, no agent names, ids or owners", async () => {
      const text = await (await t.request("/v1/stats", { token: admin.token })).text();
      expect(text).not.toContain("Stats Secret");
      expect(text).not.toContain(owner.clientId);
      expect(text).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}-/);
    });
  });
}

describe("GET /v1/stats: rate limit and docs", () => {
  let t: TestApp;
  beforeAll(async () => {
    const generous = { limit: 1_000_000, periodMs: 1000 };
    t = await createTestApp("pglite", {
      config: {
        rateLimits: {
          token: generous,
          read: { limit: 2, periodMs: 60_000 },
          search: generous,
          write: generous,
          admin: generous,
        },
      },
    });
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  test("errors: past the read budget the caller gets 429 RATE_LIMITED with Retry-After", async () => {
    const statuses: number[] = [];
    let last: Response | undefined;
    for (let i = 0; i < 4; i++) {
      last = await t.request("/v1/stats", { headers: { "x-forwarded-for": "203.0.113.9" } });
      statuses.push(last.status);
    }
    expect(statuses.slice(0, 2)).toEqual([200, 200]);
    expect(statuses.at(-1)).toBe(429);
    expect(last!.headers.get("retry-after")).toBeTruthy();
    expect((await json<{ code: string }>(last!)).code).toBe("RATE_LIMITED");
  });

  test("happy: /docs/json documents GET /v1/stats with its response schema", async () => {
    t.app.listen({ port: 0, hostname: "127.0.0.1" });
    const doc = (await (await fetch(`http://127.0.0.1:${t.app.server!.port}/docs/json`)).json()) as {
      paths: Record<
        string,
        Record<
          string,
          {
            summary?: string;
            parameters?: { name: string }[];
            responses: Record<
              string,
              {
                content?: Record<
                  string,
                  { schema?: { $ref?: string; properties?: Record<string, unknown> } }
                >;
              }
            >;
          }
        >
      >;
      components?: { schemas?: Record<string, { properties?: Record<string, unknown> }> };
    };
    const op = doc.paths["/v1/stats"]?.get;
    expect(op?.summary).toBeTruthy();
    expect(op?.parameters?.map((p) => p.name)).toContain("days");
    let schema = op?.responses["200"]?.content?.["application/json"]?.schema;
    if (schema?.$ref) schema = doc.components?.schemas?.[schema.$ref.split("/").pop()!];
    expect(Object.keys(schema?.properties ?? {})).toEqual(
      expect.arrayContaining(["total", "byStatus", "byHealth", "bySource", "registrations"]),
    );
    expect(Object.keys(op?.responses ?? {})).toEqual(expect.arrayContaining(["200", "400", "401", "429"]));
  });
});
