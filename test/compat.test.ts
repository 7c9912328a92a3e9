/**
 * The older Python registry's API (A2AReg), as its server and SDK define it (app/api/agents.py,
 * app/api/search.py, app/schemas/agent.py, sdk/python/a2a_reg_sdk/client.py): the request bodies here
 * are what that SDK sends, the response fields what its PublishResponse / AgentInfoResponse name.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { RateLimit } from "../src/config";
import { endpointClass } from "../src/infra/ratelimit-http";
import { prefersHtml } from "../src/modules/compat/routes";
import { createTestApp, json, type TestApp } from "./support/app";
import * as cards from "./support/compat-cards";
import { fixture, fixtureText } from "./support/compat-cards";
import { BACKENDS } from "./support/db";

const cardWith = (overrides: Record<string, unknown> = {}) => cards.cardWith("Compat Agent", overrides);

type Published = {
  agentId: string;
  version: string;
  protocolVersion: string;
  public: boolean;
  signatureValid: boolean;
};
type Info = {
  agentId: string;
  name: string;
  description: string;
  publisherId: string;
  version: string;
  protocolVersion: string;
  capabilities: Record<string, unknown>;
  skills: unknown[];
};
type SearchItem = Info & { url: string; public: boolean };
type Problem = { code: string; status: number; detail: string; errors?: { path: string }[] };

/** What python-requests and curl send: an Accept of any type. */
const API = { accept: "*/*" };

const expectProblem = async (res: Response, status: number, code: string) => {
  expect(res.status, await res.clone().text()).toBe(status);
  expect(res.headers.get("content-type")).toContain("application/problem+json");
  const body = await json<Problem>(res);
  expect(body.code).toBe(code);
  return body;
};

describe("content negotiation of GET /agents/:id", () => {
  test("browsers get the page; HTTP libraries (*/*, application/json) get JSON", () => {
    expect(prefersHtml("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")).toBe(true);
    expect(prefersHtml(null)).toBe(true);
    expect(prefersHtml("*/*")).toBe(false);
    expect(prefersHtml("application/json")).toBe(false);
    expect(prefersHtml("application/json, text/html;q=0.5")).toBe(false);
    expect(prefersHtml("text/html;q=0.1, application/json")).toBe(false);
    expect(prefersHtml("text/*, application/json;q=0.9")).toBe(true);
  });

  test("rate limit classes: each compat route counts as its /v1 equivalent", () => {
    expect(endpointClass("POST", "/agents/publish")).toBe(endpointClass("POST", "/v1/agents"));
    expect(endpointClass("POST", "/agents/publish")).toBe("write");
    expect(endpointClass("POST", "/agents/search")).toBe(endpointClass("GET", "/v1/search"));
    expect(endpointClass("POST", "/agents/search")).toBe("search");
    expect(endpointClass("GET", "/agents/public")).toBe(
      endpointClass("GET", "/.well-known/agents/index.json"),
    );
    expect(endpointClass("GET", "/agents/:id")).toBe(endpointClass("GET", "/v1/agents/:id"));
    expect(endpointClass("GET", "/agents/:id/card")).toBe(endpointClass("GET", "/v1/agents/:id/card"));
  });
});

for (const backend of BACKENDS) {
  describe(`compat: older registry API [${backend}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let other: { clientId: string; token: string };
    let reader: { clientId: string; token: string };
    let admin: { clientId: string; token: string };

    const publish = (body: unknown, token: string | null = writer.token) =>
      t.request("/agents/publish", { method: "POST", json: body, token, headers: API });
    const publishOk = async (body: Record<string, unknown>, token = writer.token) => {
      const res = await publish(body, token);
      if (res.status !== 201) throw new Error(`publish ${res.status}: ${await res.text()}`);
      return json<Published>(res);
    };
    /**
     * GET /agents/:id is also the web page's path, registered twice: a served app routes it to the last
     * registration (compat), app.handle to the first (the page). So it is read over a real listener.
     */
    let base: string;
    const served = (path: string, init: { token?: string; headers?: Record<string, string> } = {}) =>
      fetch(`${base}${path}`, {
        headers: { ...(init.token ? { authorization: `Bearer ${init.token}` } : {}), ...init.headers },
      });
    const info = (id: string, token?: string) => served(`/agents/${id}`, { token, headers: API });
    const search = (body: unknown, token?: string) =>
      t.request("/agents/search", { method: "POST", json: body, token, headers: API });

    beforeAll(async () => {
      t = await createTestApp(backend);
      [writer, other, reader, admin] = await Promise.all([
        t.client(["agents:write"], "compat writer"),
        t.client(["agents:write"], "compat other"),
        t.client(["agents:read"], "compat reader"),
        t.client(["admin"], "compat admin"),
      ]);
      t.app.listen({ port: 0, hostname: "127.0.0.1" });
      base = `http://127.0.0.1:${t.app.server!.port}`;
    });
    afterAll(() => t.close());

    describe("POST /agents/publish", () => {
      test("happy: {card, public} -> 201 {agentId, version, protocolVersion, public, signatureValid}, the same agent as /v1", async () => {
        const card = cardWith();
        const res = await publish({ public: true, card });
        expect(res.status).toBe(201);
        const body = await json<Published>(res);
        expect(Object.keys(body).sort()).toEqual([
          "agentId",
          "protocolVersion",
          "public",
          "signatureValid",
          "version",
        ]);
        expect(body).toMatchObject({
          version: "1.4.2",
          protocolVersion: "0.3.0",
          public: true,
          signatureValid: false,
        });
        expect(res.headers.get("location")).toBe(`/agents/${body.agentId}`);
        const record = await json<Record<string, unknown>>(await t.request(`/v1/agents/${body.agentId}`));
        expect(record).toMatchObject({
          id: body.agentId,
          owner: writer.clientId,
          visibility: "public",
          url: card.url,
        });
        // published through the agents service: audited and searchable like a /v1 publish
        const found = await json<{ items: { agent: { id: string } }[] }>(
          await t.request(`/v1/search?q=${encodeURIComponent(card.name)}&consistent=true`),
        );
        expect(found.items.map((i) => i.agent.id)).toContain(body.agentId);
      });

      test("happy: public defaults to true; public: false publishes it private", async () => {
        expect((await publishOk({ card: cardWith() })).public).toBe(true);
        const hidden = await publishOk({ card: cardWith(), public: false });
        expect(hidden.public).toBe(false);
        const record = await json<{ visibility: string }>(
          await t.request(`/v1/agents/${hidden.agentId}`, { token: writer.token }),
        );
        expect(record.visibility).toBe("private");
      });

      test("happy: the card is stored byte for byte; a legacy 0.2 card reports protocolVersion 0.2", async () => {
        const text = fixtureText("real", "samples-air-ticketing.json");
        const res = await t.request("/agents/publish", {
          method: "POST",
          body: `{"public": true, "card": ${text}}`,
          headers: { "content-type": "application/json", ...API },
          token: writer.token,
        });
        expect(res.status).toBe(201);
        const body = await json<Published>(res);
        expect(body.protocolVersion).toBe("0.2");
        const card = await t.request(`/agents/${body.agentId}/card`, { headers: API });
        expect(await card.text()).toBe(text);
      });

      test("happy: {cardUrl, public} fetches the card", async () => {
        const card = cardWith();
        const host = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => Response.json(card) });
        try {
          const body = await publishOk({ cardUrl: `http://127.0.0.1:${host.port}/card.json`, public: true });
          expect(body.version).toBe("1.4.2");
          expect(await (await t.request(`/agents/${body.agentId}/card`, { headers: API })).json()).toEqual(
            card,
          );
        } finally {
          host.stop(true);
        }
      });

      test("happy: the owner's re-publish is idempotent; a changed card becomes a new version (200)", async () => {
        const card = cardWith();
        const first = await publishOk({ card, public: true });
        const again = await publish({ card, public: true });
        expect(again.status).toBe(200);
        expect((await json<Published>(again)).agentId).toBe(first.agentId);
        const next = await publish({ card: { ...card, version: "2.0.0", description: "new" }, public: true });
        expect(next.status).toBe(200);
        expect(await json<Published>(next)).toMatchObject({ agentId: first.agentId, version: "2.0.0" });
        const versions = await json<{ items: { version: string }[] }>(
          await t.request(`/v1/agents/${first.agentId}/versions`),
        );
        expect(versions.items.map((v) => v.version)).toEqual(["2.0.0", "1.4.2"]);
        // same version, other content: refused like PUT /v1/agents/{id}
        await expectProblem(
          await publish({ card: { ...card, version: "2.0.0", description: "other" }, public: true }),
          409,
          "VERSION_EXISTS",
        );
      });

      test("errors: another client's url -> 409 AGENT_EXISTS, exactly as POST /v1/agents", async () => {
        const card = cardWith();
        await publishOk({ card });
        await expectProblem(await publish({ card }, other.token), 409, "AGENT_EXISTS");
        await expectProblem(
          await t.request("/v1/agents", { method: "POST", json: { card }, token: other.token }),
          409,
          "AGENT_EXISTS",
        );
      });

      test("errors: invalid card -> 422 INVALID_AGENT_CARD with paths; bad bodies -> 400", async () => {
        const invalid = await expectProblem(
          await publish({ card: fixture("invalid", "missing-skills.json") }),
          422,
          "INVALID_AGENT_CARD",
        );
        expect(invalid.errors?.length).toBeGreaterThan(0);
        await expectProblem(await publish({ public: true }), 400, "VALIDATION_FAILED");
        await expectProblem(
          await publish({ card: cardWith(), cardUrl: "https://x.example.com/card.json" }),
          400,
          "VALIDATION_FAILED",
        );
        await expectProblem(await publish({ card: cardWith(), public: "yes" }), 400, "VALIDATION_FAILED");
        await expectProblem(await publish({ card: cardWith(), tenant: "default" }), 400, "VALIDATION_FAILED");
      });

      test("security: anonymous -> 401, agents:read -> 403, nothing stored", async () => {
        const card = cardWith();
        await expectProblem(await publish({ card }, null), 401, "UNAUTHORIZED");
        await expectProblem(await publish({ card }, reader.token), 403, "FORBIDDEN");
        const listed = await json<{ items: { url: string }[] }>(
          await t.request("/v1/agents?limit=100", { token: admin.token }),
        );
        expect(listed.items.map((i) => i.url)).not.toContain(card.url);
      });
    });

    describe("GET /agents/public", () => {
      let publicIds: string[];
      let privateId: string;
      beforeAll(async () => {
        // a registry of its own would be cleaner; the earlier publishes here are public too, so count them
        privateId = (await publishOk({ card: cardWith({ name: "Private compat agent" }), public: false }))
          .agentId;
        publicIds = [];
        for (let i = 0; i < 3; i++) publicIds.push((await publishOk({ card: cardWith() })).agentId);
      });

      test("happy: {items:[{id, name, description, url}], count, next}; top/skip pages cover every public agent once", async () => {
        const first = await json<{ items: Record<string, string>[]; count: number; next: string | null }>(
          await t.request("/agents/public", { headers: API }),
        );
        expect(first.count).toBeGreaterThanOrEqual(3);
        expect(Object.keys(first.items[0]!).sort()).toEqual(["description", "id", "name", "url"]);
        const seen: string[] = [];
        let next: string | null = "/agents/public?top=2&skip=0";
        let pages = 0;
        while (next) {
          type Page = { items: { id: string }[]; count: number; next: string | null };
          const page: Page = await json<Page>(await t.request(next, { headers: API }));
          expect(page.count).toBe(first.count);
          expect(page.items.length).toBeLessThanOrEqual(2);
          seen.push(...page.items.map((i) => i.id));
          if (page.next) expect(page.next).toMatch(/^\/agents\/public\?skip=\d+&top=2$/);
          next = page.next;
          expect(++pages).toBeLessThan(100);
        }
        expect(seen.length).toBe(first.count);
        expect(new Set(seen).size).toBe(seen.length);
        for (const id of publicIds) expect(seen).toContain(id);
        // the same agents as the public index
        const index = await json<{ count: number }>(await t.request("/.well-known/agents/index.json"));
        expect(index.count).toBe(first.count);
        // a served app routes /agents/public here too, not to /agents/:id
        const viaServer = await served("/agents/public?top=1", { headers: API });
        expect((await json<{ count: number }>(viaServer)).count).toBe(first.count);
      });

      test("security: private agents are absent whoever asks (even their owner: this is the public list)", async () => {
        for (const token of [undefined, writer.token, admin.token]) {
          const page = await json<{ items: { id: string; name: string }[] }>(
            await t.request("/agents/public?top=100", { headers: API, token }),
          );
          expect(page.items.map((i) => i.id)).not.toContain(privateId);
        }
      });

      test("happy: a skip past the end is an empty last page", async () => {
        const page = await json<{ items: unknown[]; next: unknown }>(
          await t.request("/agents/public?skip=5000&top=10", { headers: API }),
        );
        expect(page).toMatchObject({ items: [], next: null });
      });

      for (const query of ["top=0", "top=101", "skip=-1", "top=abc", "skip=20000"])
        test(`errors: ?${query} -> 400 VALIDATION_FAILED`, async () => {
          await expectProblem(
            await t.request(`/agents/public?${query}`, { headers: API }),
            400,
            "VALIDATION_FAILED",
          );
        });
    });

    describe("GET /agents/:id and /agents/:id/card", () => {
      let publicId: string;
      let privateId: string;
      let card: Record<string, unknown>;
      beforeAll(async () => {
        card = cardWith({ capabilities: { streaming: true, pushNotifications: false } });
        publicId = (await publishOk({ card })).agentId;
        privateId = (await publishOk({ card: cardWith({ name: "Secret compat agent" }), public: false }))
          .agentId;
      });

      test("happy: {agentId, name, description, publisherId, version, protocolVersion, capabilities, skills}", async () => {
        const res = await info(publicId);
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toContain("application/json");
        const body = await json<Info>(res);
        expect(body).toEqual({
          agentId: publicId,
          name: card.name as string,
          description: card.description as string,
          publisherId: writer.clientId,
          version: "1.4.2",
          protocolVersion: "0.3.0",
          capabilities: card.capabilities as Record<string, unknown>,
          skills: card.skills as unknown[],
        });
      });

      test("happy: ETag and If-None-Match -> 304 on both; /card is byte for byte the /v1 card", async () => {
        for (const path of [`/agents/${publicId}`, `/agents/${publicId}/card`]) {
          const res = await served(path, { headers: API });
          const etag = res.headers.get("etag")!;
          expect(etag).toMatch(/^"[^"]+"$/);
          const again = await served(path, { headers: { ...API, "if-none-match": etag } });
          expect(again.status).toBe(304);
        }
        const compat = await t.request(`/agents/${publicId}/card`, { headers: API });
        const v1 = await t.request(`/v1/agents/${publicId}/card`);
        expect(await compat.text()).toBe(await v1.text());
        expect(compat.headers.get("etag")).toBe(v1.headers.get("etag"));
      });

      test("happy: a browser navigating to /agents/:id still gets the web page", async () => {
        const res = await served(`/agents/${publicId}`, {
          headers: { accept: "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" },
        });
        expect(res.status).toBe(200);
        expect(res.headers.get("content-type")).toContain("text/html");
        expect(res.headers.get("x-request-id")).toBeTruthy();
        expect(res.headers.get("vary")).toContain("Accept");
        expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
        const page = await res.text();
        expect(page.toLowerCase()).toContain("<!doctype html");
        // a link without Accept (no HTTP library sends none) is the page too
        const plain = await t.app.handle(new Request(`${base}/agents/${publicId}`));
        expect(await plain.text()).toBe(page);
      });

      test("security: a private agent is 404 to anonymous and other clients, 200 to owner, entitled client and admin", async () => {
        for (const path of [`/agents/${privateId}`, `/agents/${privateId}/card`]) {
          await expectProblem(await served(path, { headers: API }), 404, "NOT_FOUND");
          await expectProblem(await served(path, { headers: API, token: other.token }), 404, "NOT_FOUND");
          await expectProblem(await served(path, { headers: API, token: reader.token }), 404, "NOT_FOUND");
          for (const token of [writer.token, admin.token])
            expect((await served(path, { headers: API, token })).status).toBe(200);
        }
        const granted = await t.request(`/v1/agents/${privateId}/entitlements/${reader.clientId}`, {
          method: "PUT",
          token: writer.token,
        });
        expect(granted.status).toBe(204);
        expect((await info(privateId, reader.token)).status).toBe(200);
        const res = await info(privateId, writer.token);
        expect(res.headers.get("cache-control")).toContain("private");
      });

      test("errors: unknown and malformed ids -> 404 NOT_FOUND problem+json; deleted -> 404", async () => {
        await expectProblem(await info("0190c0de-0000-7000-8000-000000000000"), 404, "NOT_FOUND");
        await expectProblem(await info("not-an-id"), 404, "NOT_FOUND");
        const gone = (await publishOk({ card: cardWith() })).agentId;
        expect(
          (await t.request(`/v1/agents/${gone}`, { method: "DELETE", token: writer.token })).status,
        ).toBe(204);
        await expectProblem(await info(gone), 404, "NOT_FOUND");
        await expectProblem(await t.request(`/agents/${gone}/card`, { headers: API }), 404, "NOT_FOUND");
      });
    });

    describe("POST /agents/search", () => {
      const marker = `zqx${Date.now().toString(36)}`;
      const ids: string[] = [];
      let privateId: string;
      beforeAll(async () => {
        for (let i = 0; i < 5; i++)
          ids.push(
            (
              await publishOk({
                card: cardWith({
                  name: `${marker} finder ${i}`,
                  capabilities: { streaming: i % 2 === 0 },
                  skills: [
                    {
                      id: `skill-${i}`,
                      name: "Find",
                      description: "finds",
                      tags: [i < 2 ? "early" : "late"],
                    },
                  ],
                }),
              })
            ).agentId,
          );
        privateId = (await publishOk({ card: cardWith({ name: `${marker} private finder` }), public: false }))
          .agentId;
      });

      test("happy: {q, filters, top, skip} -> {items, count}; pages partition the matches", async () => {
        const all = await json<{ items: SearchItem[]; count: number }>(await search({ q: marker, top: 100 }));
        expect(all.count).toBe(5);
        expect(all.items.map((i) => i.agentId).sort()).toEqual([...ids].sort());
        const item = all.items[0]!;
        expect(Object.keys(item).sort()).toEqual(
          [
            "agentId",
            "capabilities",
            "description",
            "name",
            "protocolVersion",
            "public",
            "publisherId",
            "skills",
            "url",
            "version",
          ].sort(),
        );
        expect(item.public).toBe(true);
        const pages: string[] = [];
        for (let skip = 0; skip < 5; skip += 2) {
          const page = await json<{ items: SearchItem[]; count: number }>(
            await search({ q: marker, top: 2, skip }),
          );
          expect(page.count).toBe(5);
          pages.push(...page.items.map((i) => i.agentId));
        }
        expect(pages).toEqual(all.items.map((i) => i.agentId));
      });

      test("happy: filters (tag, capabilities: [streaming]) narrow like GET /v1/search", async () => {
        const early = await json<{ items: SearchItem[]; count: number }>(
          await search({ q: marker, filters: { tag: "early" } }),
        );
        expect(early.items.map((i) => i.agentId).sort()).toEqual(ids.slice(0, 2).sort());
        const streaming = await json<{ count: number }>(
          await search({ q: marker, filters: { capabilities: ["streaming"] } }),
        );
        const v1 = await json<{ total: number }>(await t.request(`/v1/search?q=${marker}&streaming=true`));
        expect(streaming.count).toBe(3);
        expect(v1.total).toBe(3);
      });

      test("happy: what the older Python SDK sends ({query, filters, semantic, page, limit}) works", async () => {
        const page2 = await json<{ items: SearchItem[]; count: number }>(
          await search({ query: marker, filters: {}, semantic: false, page: 2, limit: 2 }),
        );
        const direct = await json<{ items: SearchItem[] }>(await search({ q: marker, top: 2, skip: 2 }));
        expect(page2.count).toBe(5);
        expect(page2.items.map((i) => i.agentId)).toEqual(direct.items.map((i) => i.agentId));
      });

      test("security: private agents count and appear only for those who may see them", async () => {
        const anonymous = await json<{ items: SearchItem[]; count: number }>(
          await search({ q: marker, top: 100 }),
        );
        expect(anonymous.count).toBe(5);
        expect(anonymous.items.map((i) => i.agentId)).not.toContain(privateId);
        const stranger = await json<{ count: number }>(await search({ q: marker, top: 100 }, other.token));
        expect(stranger.count).toBe(5);
        for (const token of [writer.token, admin.token]) {
          const mine = await json<{ items: SearchItem[]; count: number }>(
            await search({ q: marker, top: 100 }, token),
          );
          expect(mine.count).toBe(6);
          expect(mine.items.find((i) => i.agentId === privateId)?.public).toBe(false);
        }
      });

      test("errors: unsupported filters, bad paging and too deep windows -> 400 VALIDATION_FAILED", async () => {
        for (const body of [
          { q: marker, filters: { protocolVersion: "0.3.0" } },
          { q: marker, filters: { publisherId: "x" } },
          { q: marker, top: 0 },
          { q: marker, top: 101 },
          { q: marker, skip: -1 },
          { q: marker, top: 100, skip: 950 },
          { q: "x".repeat(300) },
          { q: marker, unknown: true },
        ])
          await expectProblem(await search(body), 400, "VALIDATION_FAILED");
        await expectProblem(
          await t.request("/agents/search", {
            method: "POST",
            body: "{nope",
            headers: { "content-type": "application/json" },
          }),
          400,
          "VALIDATION_FAILED",
        );
      });
    });

    describe("docs", () => {
      test("every compat route is documented under the compat tag", async () => {
        // /docs/json needs a running server (the swagger plugin)
        const doc = (await (await fetch(`${base}/docs/json`)).json()) as {
          paths: Record<string, Record<string, { tags?: string[] }>>;
        };
        for (const [path, method] of [
          ["/agents/publish", "post"],
          ["/agents/public", "get"],
          ["/agents/{id}", "get"],
          ["/agents/{id}/card", "get"],
          ["/agents/search", "post"],
        ] as const)
          expect(doc.paths[path]?.[method]?.tags ?? [], `${method} ${path}`).toContain("compat");
      });
    });
  });

  describe(`compat: rate limits exactly like /v1 [${backend}]`, () => {
    let t: TestApp;
    const small: RateLimit = { limit: 3, periodMs: 60_000 };
    const generous: RateLimit = { limit: 1_000_000, periodMs: 1000 };

    beforeAll(async () => {
      t = await createTestApp(backend, {
        config: {
          trustProxy: true,
          rateLimits: { token: generous, admin: generous, read: small, search: small, write: small },
        },
      });
    });
    afterAll(() => t.close());

    /** A 429 as the limiter gives it: RATE_LIMITED problem+json, Retry-After and the RateLimit headers. */
    const expectLimited = async (res: Response) => {
      const body = await expectProblem(res, 429, "RATE_LIMITED");
      expect(Number(res.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
      expect(res.headers.get("ratelimit-limit")).toBe("3");
      expect(res.headers.get("ratelimit-remaining")).toBe("0");
      expect(res.headers.get("x-request-id")).toBeTruthy();
      return body;
    };

    test("write: POST /agents/publish shares the write bucket of POST /v1/agents, both ways", async () => {
      const a = await t.client(["agents:write"], "limited a");
      const statuses: number[] = [];
      for (let i = 0; i < 3; i++)
        statuses.push(
          (await t.request("/agents/publish", { method: "POST", json: { card: cardWith() }, token: a.token }))
            .status,
        );
      expect(statuses).toEqual([201, 201, 201]);
      const compat = await t.request("/agents/publish", {
        method: "POST",
        json: { card: cardWith() },
        token: a.token,
      });
      const v1 = await t.request("/v1/agents", {
        method: "POST",
        json: { card: cardWith() },
        token: a.token,
      });
      await expectLimited(compat);
      await expectLimited(v1);

      const b = await t.client(["agents:write"], "limited b");
      for (let i = 0; i < 3; i++)
        expect(
          (await t.request("/v1/agents", { method: "POST", json: { card: cardWith() }, token: b.token }))
            .status,
        ).toBe(201);
      await expectLimited(
        await t.request("/agents/publish", { method: "POST", json: { card: cardWith() }, token: b.token }),
      );
      // a limited request stored nothing
      const c = await t.client(["admin"], "limited admin");
      const listed = await json<{ items: { owner: string }[] }>(
        await t.request("/v1/agents?limit=100", { token: c.token }),
      );
      expect(listed.items.filter((i) => i.owner === a.clientId)).toHaveLength(3);
      expect(listed.items.filter((i) => i.owner === b.clientId)).toHaveLength(3);
    });

    test("search: POST /agents/search shares the search bucket of GET /v1/search", async () => {
      const client = await t.client(["agents:read"], "searcher");
      const statuses: number[] = [];
      statuses.push((await t.request("/v1/search?q=x", { token: client.token })).status);
      for (let i = 0; i < 2; i++)
        statuses.push(
          (await t.request("/agents/search", { method: "POST", json: { q: "x" }, token: client.token }))
            .status,
        );
      expect(statuses).toEqual([200, 200, 200]);
      await expectLimited(
        await t.request("/agents/search", { method: "POST", json: { q: "x" }, token: client.token }),
      );
      await expectLimited(await t.request("/v1/search?q=x", { token: client.token }));
    });

    test("read: anonymous compat reads share the read bucket (per client IP) of /v1 reads", async () => {
      const ip = "198.51.100.77";
      const from = (path: string) => t.request(path, { headers: { ...API, "x-forwarded-for": ip } });
      expect((await from("/agents/public")).status).toBe(200);
      expect((await from("/v1/agents")).status).toBe(200);
      expect((await from("/agents/public?top=1")).status).toBe(200);
      await expectLimited(await from("/agents/public"));
      await expectLimited(await from("/agents/0190c0de-0000-7000-8000-000000000000"));
      await expectLimited(await from("/v1/agents"));
      // another address has its own bucket
      expect(
        (await t.request("/agents/public", { headers: { ...API, "x-forwarded-for": "198.51.100.78" } }))
          .status,
      ).toBe(200);
    });
  });
}
