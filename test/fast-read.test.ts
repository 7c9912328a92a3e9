import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";

const baseCard = JSON.parse(
  readFileSync(join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
);
let n = 0;
const cardWith = () => ({
  ...baseCard,
  name: `Fast ${++n}`,
  url: `https://fast-${n}-${Date.now()}.example.com/a2a`,
});

/** Headers that legitimately differ between two answers to the same request. */
const VARYING = new Set(["x-request-id", "ratelimit-remaining", "ratelimit-reset", "date", "content-length"]);
const stable = (response: Response) =>
  Object.fromEntries([...response.headers].filter(([name]) => !VARYING.has(name)).sort());

for (const backend of BACKENDS) {
  describe(`cached reads answered before routing [${backend}]`, () => {
    let t: TestApp;
    let routed = 0;
    let writer: { clientId: string; token: string };

    beforeAll(async () => {
      t = await createTestApp(backend, { config: { trustProxy: true } });
      writer = await t.client(["agents:write"]);
      // Count the routed handler's lookups: a read the fast path answered never reaches it.
      const agents = t.app.services.agents;
      const get = agents.get;
      agents.get = (...args) => {
        routed++;
        return get(...args);
      };
    });
    afterAll(() => t.close());

    const publish = async (extra: Record<string, unknown> = {}) => {
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: { card: cardWith(), ...extra },
        token: writer.token,
      });
      expect(res.status).toBe(201);
      return (await json<{ id: string }>(res)).id;
    };

    test("happy: the fast answer equals the routed one, byte for byte and header for header", async () => {
      const id = await publish();
      for (const path of [`/v1/agents/${id}`, `/v1/agents/${id}/card`]) {
        t.app.services.agentCache.clearLocal();
        const before = routed;
        const slow = await t.request(path);
        expect(routed).toBe(before + 1);
        const fast = await t.request(path);
        expect(routed).toBe(before + 1);
        expect(fast.status).toBe(slow.status);
        expect(stable(fast)).toEqual(stable(slow));
        expect(await fast.text()).toBe(await slow.text());
        expect(fast.headers.get("x-request-id")).toBeTruthy();
        expect(fast.headers.get("ratelimit-remaining")).toBeTruthy();
      }
    });

    test("happy: If-None-Match gives 304 with the same headers; X-Request-ID is propagated", async () => {
      const id = await publish();
      const first = await t.request(`/v1/agents/${id}`);
      const etag = first.headers.get("etag")!;
      const before = routed;
      const res = await t.request(`/v1/agents/${id}`, {
        headers: { "if-none-match": etag, "x-request-id": "fast-42" },
      });
      expect(routed).toBe(before);
      expect(res.status).toBe(304);
      expect(await res.text()).toBe("");
      expect(res.headers.get("etag")).toBe(etag);
      expect(res.headers.get("x-request-id")).toBe("fast-42");
      expect(res.headers.get("content-security-policy")).toBeTruthy();
    });

    test("happy: metrics and route templates are recorded for fast answers too", async () => {
      const id = await publish();
      await t.request(`/v1/agents/${id}`);
      await t.request(`/v1/agents/${id}`);
      const text = await (await t.request("/metrics")).text();
      expect(text).toContain(
        'a2a_registry_requests_total{method="GET",route="/v1/agents/:id",status_code="200"}',
      );
      expect(text).not.toContain(id);
    });

    test("happy: each read's cache lookup is counted once, whichever path answers it", async () => {
      const id = await publish();
      t.app.services.agentCache.clearLocal();
      const count = async (result: string) => {
        const text = await (await t.request("/metrics")).text();
        const line = text
          .split("\n")
          .find((l) => l.startsWith(`a2a_registry_cache_requests_total{layer="l1",result="${result}"}`));
        return line ? Number(line.split(" ").pop()) : 0;
      };
      const [hits, misses] = [await count("hit"), await count("miss")];
      const before = routed;
      expect((await t.request(`/v1/agents/${id}`)).status).toBe(200); // routed: fills L1
      for (let i = 0; i < 5; i++) expect((await t.request(`/v1/agents/${id}`)).status).toBe(200);
      expect(routed).toBe(before + 1);
      expect([await count("hit"), await count("miss")]).toEqual([hits + 5, misses + 1]);
    });

    test("security: a private agent is never answered from memory to someone who may not see it", async () => {
      const id = await publish({ visibility: "private" });
      const owner = await t.request(`/v1/agents/${id}`, { token: writer.token });
      expect(owner.status).toBe(200);
      expect(owner.headers.get("cache-control")).toBe("private, no-cache");
      // now in L1 and the owner's token is known: the owner is answered fast, others are not answered
      const before = routed;
      expect((await t.request(`/v1/agents/${id}`, { token: writer.token })).status).toBe(200);
      expect(routed).toBe(before);
      const other = await t.client(["agents:read"]);
      for (const token of [undefined, other.token]) {
        const res = await t.request(`/v1/agents/${id}`, { token });
        expect(res.status).toBe(404);
        expect(await res.text()).not.toContain("Fast");
      }
    });

    test("security: a bad or unknown token is not answered fast; revocation is enforced at once", async () => {
      const id = await publish();
      await t.request(`/v1/agents/${id}`);
      expect((await t.request(`/v1/agents/${id}`, { token: "garbage" })).status).toBe(401);
      const reader = await t.client(["agents:read"]);
      expect((await t.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(200);
      const admin = await t.client(["admin"]);
      await t.request(`/v1/clients/${reader.clientId}`, { method: "DELETE", token: admin.token });
      expect((await t.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(401);
    });
  });

  describe(`cached reads served as Bun routes by a listening server [${backend}]`, () => {
    let t: TestApp;
    let base: string;
    beforeAll(async () => {
      t = await createTestApp(backend);
      t.app.listen({ port: 0, hostname: "127.0.0.1" });
      base = `http://127.0.0.1:${t.app.server!.port}`;
    });
    afterAll(() => t.close());

    test("happy: the native route answers hits like the app; misses, other methods and errors fall through", async () => {
      const writer = await t.client(["agents:write"]);
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: { card: cardWith() },
        token: writer.token,
      });
      const { id } = await json<{ id: string }>(res);
      t.app.services.agentCache.clearLocal();
      let routed = 0;
      const get = t.app.services.agents.get;
      t.app.services.agents.get = (...args: Parameters<typeof get>) => {
        routed++;
        return get(...args);
      };
      const slow = await fetch(`${base}/v1/agents/${id}`); // fills L1 through the app
      const fast = await fetch(`${base}/v1/agents/${id}`);
      expect(routed).toBe(1);
      expect(fast.status).toBe(200);
      expect(stable(fast)).toEqual(stable(slow));
      expect(await fast.text()).toBe(await slow.text());
      const card = await fetch(`${base}/v1/agents/${id}/card`);
      expect(card.status).toBe(200);
      expect(card.headers.get("etag")).toBeTruthy();
      const missing = await fetch(`${base}/v1/agents/01a21292-d244-762b-a5fd-3363054f0a64`);
      expect(missing.status).toBe(404);
      expect(missing.headers.get("content-type")).toContain("application/problem+json");
      const put = await fetch(`${base}/v1/agents/${id}`, { method: "PUT" });
      expect(put.status).toBe(401);
      expect((await fetch(`${base}/v1/agents/not-a-uuid`)).status).toBe(404);
      // The id comes from Bun's router: a query string does not change it, and whatever the native
      // route does not answer (other spellings, HEAD) is answered as the app answers it.
      const withQuery = await fetch(`${base}/v1/agents/${id}?fields=all`);
      expect(withQuery.status).toBe(200);
      expect(await withQuery.text()).toBe(await (await fetch(`${base}/v1/agents/${id}`)).text());
      for (const [path, method] of [
        [`/v1/agents/${id.toUpperCase()}`, "GET"],
        [`/v1/agents/${id}`, "HEAD"],
        [`/v1/agents/${id}/card`, "HEAD"],
      ] as const) {
        const served = await fetch(`${base}${path}`, { method });
        const handled = await t.request(path, { method });
        expect(`${method} ${served.status}`).toBe(`${method} ${handled.status}`);
      }
      const anonymousPrivate = await t.request("/v1/agents", {
        method: "POST",
        json: { card: cardWith(), visibility: "private" },
        token: writer.token,
      });
      const privateId = (await json<{ id: string }>(anonymousPrivate)).id;
      await fetch(`${base}/v1/agents/${privateId}`, { headers: { authorization: `Bearer ${writer.token}` } });
      expect((await fetch(`${base}/v1/agents/${privateId}`)).status).toBe(404);
    });
  });

  describe(`rate limits on the fast path [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      const generous = { limit: 1_000_000, periodMs: 1000 };
      t = await createTestApp(backend, {
        config: {
          trustProxy: true,
          rateLimits: {
            token: generous,
            search: generous,
            write: generous,
            admin: generous,
            read: { limit: 3, periodMs: 60_000 },
          },
        },
      });
    });
    afterAll(() => t.close());

    test("errors: the bucket is shared with the routed path and a denial is the same problem+json", async () => {
      const writer = await t.client(["agents:write"]);
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: { card: cardWith() },
        token: writer.token,
      });
      const { id } = await json<{ id: string }>(res);
      const from = { "x-forwarded-for": "192.0.2.77" };
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++)
        statuses.push((await t.request(`/v1/agents/${id}`, { headers: from })).status);
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      const denied = await t.request(`/v1/agents/${id}`, { headers: from });
      expect(denied.headers.get("content-type")).toContain("application/problem+json");
      expect(Number(denied.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect((await json<{ code: string }>(denied)).code).toBe("RATE_LIMITED");
    });
  });
}
