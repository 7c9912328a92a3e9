import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { createRegistryClient } from "../src/client";
import { analyzeCard } from "../src/modules/agents/card";
import { createTestApp, json, type TestApp } from "./support/app";
import * as cards from "./support/compat-cards";
import { BACKENDS } from "./support/db";

const cardWith = (overrides: Record<string, unknown> = {}) => cards.cardWith("Catalog Agent", overrides);

type Entry = {
  identifier: string;
  type: string;
  url: string;
  displayName?: string;
  description?: string;
  tags?: string[];
  version?: string;
  updatedAt?: string;
};
type Catalog = { specVersion: string; host: { displayName: string; identifier?: string }; entries: Entry[] };

const A2A = "application/a2a-agent-card+json";
const NESTED = "application/ai-catalog+json";

for (const backend of BACKENDS) {
  describe(`GET /.well-known/ai-catalog.json [${backend}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let other: { clientId: string; token: string };
    let admin: { token: string };
    const ids: Record<"a" | "b" | "private" | "deprecated" | "deleted", string> = {
      a: "",
      b: "",
      private: "",
      deprecated: "",
      deleted: "",
    };
    const cards: Record<string, Record<string, unknown>> = {};
    const base = () => t.config.registryBaseUrl;

    const publish = async (card: Record<string, unknown>, visibility = "public") => {
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: { card, visibility },
        token: writer.token,
      });
      if (res.status !== 201) throw new Error(`publish ${res.status}: ${await res.text()}`);
      const id = (await json<{ id: string }>(res)).id;
      cards[id] = card;
      return id;
    };
    const catalog = async (query = "", headers: Record<string, string> = {}) => {
      const res = await t.request(`/.well-known/ai-catalog.json${query}`, { headers });
      expect(res.status, await res.clone().text()).toBe(200);
      return { res, body: await json<Catalog>(res) };
    };
    const agentEntries = (body: Catalog) => body.entries.filter((e) => e.type === A2A);
    const idOf = (entry: Entry) => entry.identifier.slice(`${base()}/v1/agents/`.length);

    beforeAll(async () => {
      t = await createTestApp(backend);
      [writer, other, admin] = await Promise.all([
        t.client(["agents:write"], "catalog writer"),
        t.client(["agents:write"], "catalog other"),
        t.client(["admin"], "catalog admin"),
      ]);
      ids.a = await publish(
        cardWith({ skills: [{ id: "s", name: "S", description: "d", tags: ["alpha"] }] }),
      );
      ids.b = await publish(cardWith());
      ids.private = await publish(cardWith({ name: "Hidden catalog agent" }), "private");
      ids.deprecated = await publish(cardWith());
      ids.deleted = await publish(cardWith());
      const patched = await t.request(`/v1/agents/${ids.deprecated}`, {
        method: "PATCH",
        json: { status: "deprecated" },
        token: writer.token,
      });
      expect(patched.status).toBe(200);
      expect(
        (await t.request(`/v1/agents/${ids.deleted}`, { method: "DELETE", token: writer.token })).status,
      ).toBe(204);
    });
    afterAll(() => t.close());

    describe("happy", () => {
      test("an AI Catalog (specVersion 1.0) of exactly the public, active agents, pointing at their cards", async () => {
        const { res, body } = await catalog();
        expect(res.headers.get("content-type")).toStartWith("application/ai-catalog+json");
        expect(body.specVersion).toBe("1.0");
        expect(body.host.displayName).toBe(t.config.appName);
        expect(body.host.identifier).toBe(t.config.registryId);
        const listed = agentEntries(body).map(idOf).sort();
        expect(listed).toEqual([ids.a, ids.b].sort());
        // the same set anonymous callers see in the public index (no federated copies exist here)
        const index = await json<{ agents: { id: string }[] }>(
          await t.request("/.well-known/agents/index.json"),
        );
        expect(index.agents.map((a) => a.id).sort()).toEqual(listed);
        expect(body.entries.filter((e) => e.type === NESTED)).toEqual([]);
      });

      test("each entry names the agent, its version and tags, and its url serves the card byte for byte", async () => {
        const { body } = await catalog();
        for (const entry of agentEntries(body)) {
          const id = idOf(entry);
          const card = cards[id]!;
          expect(entry).toMatchObject({
            identifier: `${base()}/v1/agents/${id}`,
            type: A2A,
            url: `${base()}/v1/agents/${id}/card`,
            displayName: card.name as string,
            description: card.description as string,
            version: card.version as string,
          });
          expect(Date.parse(entry.updatedAt!)).not.toBeNaN();
          const served = await t.request(new URL(entry.url).pathname);
          expect(served.status).toBe(200);
          expect(await served.json()).toEqual(card);
        }
        const a = agentEntries(body).find((e) => idOf(e) === ids.a)!;
        expect(a.tags).toEqual(["alpha"]);
      });

      test("cacheable: a strong ETag, If-None-Match -> 304, a new tag once an agent is published", async () => {
        const { res } = await catalog();
        const etag = res.headers.get("etag")!;
        expect(etag).toMatch(/^"[0-9a-f]{40}"$/);
        expect(res.headers.get("cache-control")).toContain("public");
        const again = await t.request("/.well-known/ai-catalog.json", { headers: { "if-none-match": etag } });
        expect(again.status).toBe(304);
        expect(await again.text()).toBe("");
        const id = await publish(cardWith());
        const { res: after, body } = await catalog("", { "if-none-match": etag });
        expect(after.headers.get("etag")).not.toBe(etag);
        expect(agentEntries(body).map(idOf)).toContain(id);
        await t.request(`/v1/agents/${id}`, { method: "DELETE", token: writer.token });
      });

      test("paged with limit: a nested catalog entry and Link rel=next lead to the next page; the last has none", async () => {
        const seen: string[] = [];
        let path: string | null = "/.well-known/ai-catalog.json?limit=1";
        let pages = 0;
        while (path) {
          const { res, body } = await catalog(path.slice("/.well-known/ai-catalog.json".length));
          pages++;
          const nested = body.entries.filter((e) => e.type === NESTED);
          seen.push(...agentEntries(body).map(idOf));
          expect(agentEntries(body).length).toBe(1);
          if (nested.length === 0) {
            expect(res.headers.get("link")).toBeNull();
            path = null;
          } else {
            expect(nested).toHaveLength(1);
            expect(body.entries.at(-1)).toBe(nested[0]);
            expect(res.headers.get("link")).toBe(`<${nested[0]!.url}>; rel="next"`);
            expect(nested[0]!.url).toStartWith(`${base()}/.well-known/ai-catalog.json?`);
            const next = new URL(nested[0]!.url);
            path = `${next.pathname}${next.search}`;
          }
          expect(pages).toBeLessThan(10);
        }
        expect(seen.sort()).toEqual([ids.a, ids.b].sort());
      });

      test("the registry's own A2A card links to the catalog and stays a valid card", async () => {
        for (const path of ["/.well-known/agent-card.json", "/.well-known/agent.json"]) {
          const card = await json<{ capabilities: { extensions?: { params?: { catalogUrl?: string } }[] } }>(
            await t.request(path),
          );
          expect(analyzeCard(card).ok).toBe(true);
          const urls = (card.capabilities.extensions ?? []).map((e) => e.params?.catalogUrl);
          expect(urls).toContain(`${base()}/.well-known/ai-catalog.json`);
        }
      });

      test("the typed client reads it", async () => {
        const client = createRegistryClient({ baseUrl: "http://localhost", fetch: (r) => t.app.handle(r) });
        const body = await client.aiCatalog();
        expect(body.entries.filter((e) => e.type === A2A)).toHaveLength(2);
      });
    });

    describe("security", () => {
      test("private, deprecated and deleted agents are absent, whoever asks (the catalog is public)", async () => {
        for (const token of [undefined, writer.token, other.token, admin.token]) {
          const res = await t.request("/.well-known/ai-catalog.json", { token });
          const body = await json<Catalog>(res);
          const listed = agentEntries(body).map(idOf);
          for (const hidden of [ids.private, ids.deprecated, ids.deleted])
            expect(listed).not.toContain(hidden);
          expect(JSON.stringify(body)).not.toContain("Hidden catalog agent");
        }
      });

      test("federated copies are left to their origin registry's catalog", async () => {
        const id = await publish(cardWith());
        // What the sync engine stores for a peer's agent: origin set, written outside the agents service.
        await t.db.database.rows(
          sql`update agents set origin_registry = 'peer.example', origin_id = ${id} where id = ${id}`,
        );
        await t.app.services.agents.changedElsewhere([id]);
        const { body } = await catalog();
        expect(agentEntries(body).map(idOf)).not.toContain(id);
        const index = await json<{ agents: { id: string }[] }>(
          await t.request("/.well-known/agents/index.json"),
        );
        expect(index.agents.map((a) => a.id)).toContain(id);
      });

      test("carries the security headers and a request id", async () => {
        const { res } = await catalog();
        expect(res.headers.get("x-content-type-options")).toBe("nosniff");
        expect(res.headers.get("x-request-id")).toBeTruthy();
      });
    });

    describe("errors", () => {
      for (const query of ["?limit=0", "?limit=1001", "?limit=x", "?cursor=not-a-cursor"])
        test(`${query} -> 400 VALIDATION_FAILED`, async () => {
          const res = await t.request(`/.well-known/ai-catalog.json${query}`);
          expect(res.status).toBe(400);
          expect(res.headers.get("content-type")).toContain("application/problem+json");
          expect((await json<{ code: string }>(res)).code).toBe("VALIDATION_FAILED");
        });
    });
  });
}
