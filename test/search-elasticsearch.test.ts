import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { runCli } from "../src/cli";
import { createElasticsearchClient, DEFAULT_ALIAS, INDEX_BODY } from "../src/infra/search/elasticsearch";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import {
  connectionRefused,
  createFakeElasticsearch,
  type FakeElasticsearch,
  type RecordedRequest,
  tooManyRequests,
} from "./support/fake-elasticsearch";

/**
 * The Elasticsearch adapter's exact conversation with Elasticsearch (mapping, bulk bodies, queries with
 * their visibility clauses) and its behaviour when Elasticsearch misbehaves: writes still succeed and
 * queue in the Postgres outbox, searches fall back to Postgres, and everything catches up on recovery.
 */

let unique = 0;
function card(name: string, tags: string[] = ["demo"]) {
  unique++;
  return {
    protocolVersion: "0.3.0",
    name,
    description: `${name} does things.`,
    url: `https://es-${unique}-${Date.now()}.example.com/a2a`,
    version: "1.0.0",
    capabilities: { streaming: false },
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    provider: { organization: "Acme Corp", url: "https://acme.example.com" },
    skills: [{ id: "do-things", name: "Do things", description: "Does things", tags }],
  };
}

const bulks = (fake: FakeElasticsearch) => fake.requests.filter((r) => r.path === "/_bulk");
const searches = (fake: FakeElasticsearch) => fake.requests.filter((r) => r.path.endsWith("/_search"));
const lastOf = (requests: RecordedRequest[]) => requests.at(-1)!;

for (const backend of BACKENDS) {
  describe(`elasticsearch adapter [${backend}]`, () => {
    let fake: FakeElasticsearch;
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let admin: { clientId: string; token: string };

    const publish = async (body: unknown, token = writer.token) => {
      const res = await t.request("/v1/agents", { method: "POST", json: body, token });
      if (res.status !== 201) throw new Error(`publish ${res.status}: ${await res.text()}`);
      return json<{ id: string; name: string }>(res);
    };
    const outbox = async () =>
      t.db.database.rows<{ agent_id: string; seq: number; attempts: number; last_error: string | null }>(
        sql`select agent_id, seq::float8 as seq, attempts, last_error from search_outbox order by agent_id`,
      );
    const seqOf = async (id: string) =>
      Number(
        (
          await t.db.database.rows<{ seq: number }>(
            sql`select seq::float8 as seq from agents where id = ${id}`,
          )
        )[0]!.seq,
      );
    const metric = async (pattern: RegExp) => {
      const text = await (await t.request("/metrics")).text();
      return Number(pattern.exec(text)?.[1] ?? Number.NaN);
    };

    beforeAll(async () => {
      fake = createFakeElasticsearch();
      t = await createTestApp(backend, { elasticsearch: fake.client });
      [writer, admin] = await Promise.all([
        t.client(["agents:write"], "writer"),
        t.client(["admin"], "admin"),
      ]);
    });
    afterAll(() => t.close());
    beforeEach(() => fake.heal());

    describe("happy", () => {
      test("the first write creates the index with the explicit mapping behind the alias", async () => {
        await publish({ card: card("First Agent") });
        const [probe, create] = fake.requests;
        expect(probe).toMatchObject({ method: "HEAD", path: `/_alias/${DEFAULT_ALIAS}` });
        expect(create!.method).toBe("PUT");
        expect(create!.path).toMatch(new RegExp(`^/${DEFAULT_ALIAS}-\\d+$`));
        expect(create!.body).toEqual({ ...INDEX_BODY, aliases: { [DEFAULT_ALIAS]: {} } });
        const mappings = (create!.body as typeof INDEX_BODY).mappings;
        expect(mappings.dynamic).toBe("strict");
        expect(mappings.properties.name.fields.suggest.type).toBe("search_as_you_type");
        expect(mappings.properties.name.fields.keyword.type).toBe("keyword");
        for (const keyword of [
          "tags",
          "skills",
          "input_modes",
          "output_modes",
          "provider",
          "visibility",
          "owner",
          "entitled",
        ])
          expect(mappings.properties[keyword as "tags"].type).toBe("keyword");
        // the alias is created once, not on every write
        await publish({ card: card("Second Agent") });
        expect(fake.requests.filter((r) => r.method === "PUT" && !r.path.includes("_settings"))).toHaveLength(
          1,
        );
      });

      test("a publish sends one bulk index, versioned by the change sequence", async () => {
        const agent = await publish({
          card: card("Bulk Body Agent", ["Alpha", "beta"]),
          visibility: "private",
        });
        const request = lastOf(bulks(fake));
        const seq = await seqOf(agent.id);
        expect(request.body).toEqual([
          { index: { _index: DEFAULT_ALIAS, _id: agent.id, version: seq, version_type: "external" } },
          {
            id: agent.id,
            seq,
            name: "Bulk Body Agent",
            description: "Bulk Body Agent does things.",
            skills: ["do things", "do-things"],
            tags: ["alpha", "beta"],
            input_modes: ["text/plain"],
            output_modes: ["text/plain"],
            streaming: false,
            provider: "Acme Corp",
            status: "active",
            health: "unknown",
            signature: "none",
            visibility: "private",
            owner: writer.clientId,
            entitled: [],
            origin_registry: null,
            updated_at: expect.any(String),
          },
        ]);
        expect(await outbox()).toEqual([]);
      });

      test("status changes and entitlements re-index; a delete sends a versioned delete", async () => {
        const agent = await publish({ card: card("Lifecycle Agent"), visibility: "private" });
        const reader = await t.client(["agents:read"], "entitled reader");
        await t.request(`/v1/agents/${agent.id}/entitlements/${reader.clientId}`, {
          method: "PUT",
          token: writer.token,
        });
        const granted = lastOf(bulks(fake)).body as [unknown, { entitled: string[]; seq: number }];
        expect(granted[1].entitled).toEqual([reader.clientId]);
        expect(granted[1].seq).toBe(await seqOf(agent.id));

        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          token: writer.token,
          json: { status: "deprecated" },
        });
        expect((lastOf(bulks(fake)).body as [unknown, { status: string }])[1].status).toBe("deprecated");

        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: writer.token });
        expect(lastOf(bulks(fake)).body).toEqual([
          {
            delete: {
              _index: DEFAULT_ALIAS,
              _id: agent.id,
              version: await seqOf(agent.id),
              version_type: "external",
            },
          },
        ]);
        expect(fake.documents().some((d) => d.id === agent.id)).toBe(false);
      });

      test("anonymous searches filter on public visibility inside the query", async () => {
        const res = await t.request("/v1/search?q=Bulk%20body&tag=Alpha&limit=5");
        expect(res.status).toBe(200);
        const request = lastOf(searches(fake));
        expect(request.path).toBe(`/${DEFAULT_ALIAS}/_search`);
        const body = request.body as Record<string, unknown>;
        expect(body).toMatchObject({
          size: 6,
          track_total_hits: true,
          _source: false,
          sort: [{ _score: { order: "desc" } }, { seq: { order: "desc" } }],
        });
        const bool = (body.query as { bool: { filter: unknown[]; must: unknown[] } }).bool;
        expect(bool.filter).toEqual([{ term: { visibility: "public" } }, { term: { tags: "alpha" } }]);
        expect(bool.must).toEqual([
          {
            bool: {
              should: [
                {
                  bool: {
                    must: ["bulk", "body"].map((token) => ({
                      multi_match: {
                        query: token,
                        type: "phrase_prefix",
                        fields: ["name^4", "skills_text^2", "tags_text^2", "description"],
                      },
                    })),
                  },
                },
                {
                  match: {
                    name: {
                      query: "bulk body",
                      fuzziness: "AUTO",
                      prefix_length: 1,
                      operator: "and",
                      boost: 2,
                    },
                  },
                },
                { term: { "name.keyword": { value: "bulk body", boost: 10 } } },
              ],
              minimum_should_match: 1,
            },
          },
        ]);
        expect(Object.keys(body.aggs as object).sort()).toEqual([
          "inputModes",
          "outputModes",
          "providers",
          "skills",
          "tags",
        ]);
        expect((body.aggs as Record<string, unknown>).tags).toEqual({
          terms: { field: "tags", size: 50, order: [{ _count: "desc" }, { _key: "asc" }] },
        });
        // the private agent matched the words but not the visibility clause
        expect((await json<{ total: number }>(res)).total).toBe(0);
      });

      test("clients get owner/entitled/public alternatives; admins no visibility clause", async () => {
        await t.request("/v1/search?q=bulk", { token: writer.token });
        const clientFilter = (lastOf(searches(fake)).body as { query: { bool: { filter: unknown[] } } }).query
          .bool.filter;
        expect(clientFilter).toEqual([
          {
            bool: {
              should: [
                { term: { visibility: "public" } },
                { term: { owner: writer.clientId } },
                { term: { entitled: writer.clientId } },
              ],
              minimum_should_match: 1,
            },
          },
        ]);
        const found = await json<{ total: number; items: { agent: { name: string } }[] }>(
          await t.request("/v1/search?q=bulk", { token: writer.token }),
        );
        expect(found.items.map((i) => i.agent.name)).toEqual(["Bulk Body Agent"]);

        await t.request("/v1/search?streaming=false&provider=ACME%20corp", { token: admin.token });
        const adminBody = lastOf(searches(fake)).body as {
          query: { bool: Record<string, unknown> };
          sort: unknown;
        };
        expect(adminBody.query.bool).toEqual({
          filter: [{ term: { streaming: false } }, { term: { "provider.lower": "acme corp" } }],
        });
        expect(adminBody.sort).toEqual([{ seq: { order: "desc" } }]);
      });

      test("pages continue with search_after from the cursor", async () => {
        const first = await json<{ nextCursor: string; items: unknown[] }>(
          await t.request("/v1/search?limit=1"),
        );
        expect(first.nextCursor).toBeTruthy();
        await t.request(`/v1/search?limit=1&cursor=${first.nextCursor}`);
        const body = lastOf(searches(fake)).body as { search_after: number[] };
        expect(body.search_after).toHaveLength(1);
        expect(Number.isInteger(body.search_after[0])).toBe(true);
        // facets=false asks for neither aggregations nor an exact total
        await t.request("/v1/search?limit=1&facets=false");
        const bare = lastOf(searches(fake)).body as Record<string, unknown>;
        expect(bare.aggs).toBeUndefined();
        expect(bare.track_total_hits).toBe(false);
      });

      test("reindex builds a new index, swaps the alias atomically and drops the old one", async () => {
        const before = [...fake.aliases.get(DEFAULT_ALIAS)!];
        const live = Number(
          (
            await t.db.database.rows<{ n: number }>(
              sql`select count(*)::int as n from agents where deleted_at is null`,
            )
          )[0]!.n,
        );
        fake.requests.length = 0;
        const progress: [number, number][] = [];
        const result = await t.app.services.searchBackend.reindexAll((done, total) =>
          progress.push([done, total]),
        );
        expect(result.indexed).toBe(live);
        expect(progress[0]).toEqual([0, live]);
        expect(progress.at(-1)).toEqual([live, live]);
        const created = fake.requests.find((r) => r.method === "PUT" && !r.path.includes("_settings"))!;
        const next = created.path.slice(1);
        expect(next).not.toBe(before[0]);
        expect(created.body).toEqual(INDEX_BODY);
        const swap = fake.requests.find((r) => r.path === "/_aliases")!;
        expect(swap.body).toEqual({
          actions: [
            { remove: { index: before[0], alias: DEFAULT_ALIAS } },
            { add: { index: next, alias: DEFAULT_ALIAS } },
          ],
        });
        expect(fake.requests.some((r) => r.method === "DELETE" && r.path === `/${before[0]}`)).toBe(true);
        expect(fake.aliases.get(DEFAULT_ALIAS)).toEqual([next]);
        expect(fake.documents()).toHaveLength(live);
        const res = await json<{ total: number }>(await t.request("/v1/search", { token: admin.token }));
        expect(res.total).toBe(live);
      });

      // The CLI opens the database by URL; the PGlite here lives in this process's memory.
      test.skipIf(backend !== "postgres")(
        "cli reindex rebuilds through the same path and prints the count",
        async () => {
          const lines: string[] = [];
          const progress: number[] = [];
          const saved = process.env.DATABASE_URL;
          process.env.DATABASE_URL = t.db.url!;
          try {
            const code = await runCli(["reindex"], (line) => lines.push(line), {
              elasticsearch: fake.client,
              progress: (done) => progress.push(done),
            });
            expect(code).toBe(0);
          } finally {
            if (saved === undefined) delete process.env.DATABASE_URL;
            else process.env.DATABASE_URL = saved;
          }
          expect(lines.at(-1)).toMatch(/^reindexed \d+ agents into elasticsearch in [\d.]+s$/);
          expect(progress.length).toBeGreaterThan(1);
        },
      );
    });

    describe("errors", () => {
      test("429 on bulk: the write succeeds, the change waits in the outbox, the drain lands it", async () => {
        fake.fail("bulk", tooManyRequests);
        const agent = await publish({ card: card("Throttled Agent") });
        const queued = await outbox();
        expect(queued.map((e) => e.agent_id)).toEqual([agent.id]);
        expect(queued[0]!.seq).toBe(await seqOf(agent.id));
        expect(fake.documents().some((d) => d.id === agent.id)).toBe(false);
        expect(await metric(/a2a_registry_search_outbox_pending (\d+)/)).toBe(1);

        // the loop retries with backoff: still failing -> attempts counted, error kept
        await t.db.database.rows(sql`update search_outbox set next_attempt_at = now()`);
        await t.app.services.searchIndexer.drain();
        const retried = await outbox();
        expect(retried[0]!.attempts).toBe(1);
        expect(retried[0]!.last_error).toContain("es_rejected_execution_exception");

        fake.heal();
        await t.db.database.rows(sql`update search_outbox set next_attempt_at = now()`);
        expect(await t.app.services.searchIndexer.drain()).toBe(1);
        expect(await outbox()).toEqual([]);
        expect(fake.documents().some((d) => d.id === agent.id)).toBe(true);
        expect(await metric(/a2a_registry_search_outbox_pending (\d+)/)).toBe(0);
      });

      test("a rejected document (mapping error) stays queued rather than being dropped", async () => {
        fake.rejectItems("mapper_parsing_exception");
        const agent = await publish({ card: card("Rejected Agent") });
        const queued = await outbox();
        expect(queued.map((e) => e.agent_id)).toEqual([agent.id]);
        fake.heal();
        await t.db.database.rows(sql`update search_outbox set next_attempt_at = now()`);
        await t.app.services.searchIndexer.drain();
        expect(await outbox()).toEqual([]);
      });

      test("consistent=true reads a change still in the outbox (answered by Postgres)", async () => {
        fake.fail("bulk", connectionRefused);
        const agent = await publish({ card: card("Unindexed Zebra") });
        const before = await metric(/a2a_registry_search_queries_total\{backend="postgres"\} (\d+)/);
        const eventual = await json<{ items: { agent: { id: string } }[] }>(
          await t.request("/v1/search?q=zebra"),
        );
        expect(eventual.items).toEqual([]);
        const consistent = await json<{ items: { agent: { id: string } }[] }>(
          await t.request("/v1/search?q=zebra&consistent=true"),
        );
        expect(consistent.items.map((i) => i.agent.id)).toEqual([agent.id]);
        expect(await metric(/a2a_registry_search_queries_total\{backend="postgres"\} (\d+)/)).toBe(
          (Number.isNaN(before) ? 0 : before) + 1,
        );
        fake.heal();
        await t.db.database.rows(sql`update search_outbox set next_attempt_at = now()`);
        await t.app.services.searchIndexer.drain();
        const indexed = await json<{ items: { agent: { id: string } }[] }>(
          await t.request("/v1/search?q=zebra&consistent=true"),
        );
        expect(indexed.items.map((i) => i.agent.id)).toEqual([agent.id]);
      });

      test("connection refused on search: Postgres answers, the metric counts, readiness says degraded", async () => {
        const fallbacks = await metric(/a2a_registry_search_fallbacks_total (\d+)/);
        fake.fail("search", connectionRefused);
        fake.fail("health", connectionRefused);
        const res = await t.request("/v1/search?q=throttled");
        expect(res.status).toBe(200);
        const body = await json<{ items: { agent: { name: string } }[] }>(res);
        expect(body.items.map((i) => i.agent.name)).toEqual(["Throttled Agent"]);
        expect(await metric(/a2a_registry_search_fallbacks_total (\d+)/)).toBe(fallbacks + 1);
        // while the breaker is open Elasticsearch is not even asked
        const asked = searches(fake).length;
        expect((await t.request("/v1/search?q=throttled")).status).toBe(200);
        expect(searches(fake).length).toBe(asked);

        const ready = await t.request("/health/ready");
        expect(ready.status).toBe(200);
        const readiness = await json<{ checks: { search: { status: string; detail: string } } }>(ready);
        expect(readiness.checks.search.status).toBe("degraded");
        expect(readiness.checks.search.detail).toContain("Postgres");

        fake.heal();
        await Bun.sleep(5100);
        const recovered = searches(fake).length;
        expect((await t.request("/v1/search?q=throttled")).status).toBe(200);
        expect(searches(fake).length).toBe(recovered + 1);
        const healthy = await json<{ checks: { search: { status: string } } }>(
          await t.request("/health/ready"),
        );
        expect(healthy.checks.search.status).toBe("ok");
      }, 20_000);

      test("an index deleted behind the registry's back is recreated and refilled", async () => {
        const current = fake.aliases.get(DEFAULT_ALIAS)![0]!;
        fake.indices.delete(current);
        fake.aliases.delete(DEFAULT_ALIAS);
        // searching finds it missing (Postgres answers meanwhile) ...
        expect((await t.request("/v1/search?q=anything")).status).toBe(200);
        // ... and the next write recreates the alias and indexes into it
        const agent = await publish({ card: card("Phoenix Agent") });
        expect(fake.aliases.get(DEFAULT_ALIAS)).toHaveLength(1);
        expect(fake.documents().map((d) => d.id)).toContain(agent.id);
      }, 20_000);
    });

    describe("security", () => {
      test("a stale index entry never shows an agent the caller may not see", async () => {
        const agent = await publish({ card: card("Stale Secret") });
        // the index still says public, but the agent went private while Elasticsearch was unreachable
        fake.fail("bulk", connectionRefused);
        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          token: writer.token,
          json: { visibility: "private" },
        });
        fake.heal();
        expect(fake.documents().find((d) => d.id === agent.id)?.visibility).toBe("public");
        const body = await json<{ items: { agent: { id: string } }[] }>(
          await t.request("/v1/search?q=stale"),
        );
        expect(body.items.map((i) => i.agent.id)).not.toContain(agent.id);
        await t.db.database.rows(sql`update search_outbox set next_attempt_at = now()`);
        await t.app.services.searchIndexer.drain();
        expect(fake.documents().find((d) => d.id === agent.id)?.visibility).toBe("private");
      });
    });
  });
}

describe("elasticsearch client transport", () => {
  test("the production client speaks HTTP under Bun, with URL credentials as Basic auth", async () => {
    const seen: { method: string; path: string; authorization: string | null; body: unknown }[] = [];
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      async fetch(request) {
        const url = new URL(request.url);
        const text = await request.text();
        seen.push({
          method: request.method,
          path: url.pathname,
          authorization: request.headers.get("authorization"),
          body: text ? JSON.parse(text) : null,
        });
        const headers = { "x-elastic-product": "Elasticsearch", "content-type": "application/json" };
        if (url.pathname === `/${DEFAULT_ALIAS}/_search`)
          return Response.json(
            { took: 1, hits: { total: { value: 0, relation: "eq" }, hits: [] } },
            { headers },
          );
        return Response.json({ status: "green" }, { headers });
      },
    });
    try {
      const client = createElasticsearchClient(`http://elastic:s3cret@127.0.0.1:${server.port}`);
      const health = await client.cluster.health({ timeout: "2s" });
      expect(health.status).toBe("green");
      const result = await client.search({ index: DEFAULT_ALIAS, size: 1, query: { match_all: {} } });
      expect(result.hits.hits).toEqual([]);
      expect(seen.map((r) => `${r.method} ${r.path}`)).toEqual([
        "GET /_cluster/health",
        `POST /${DEFAULT_ALIAS}/_search`,
      ]);
      expect(seen[0]!.authorization).toBe(`Basic ${Buffer.from("elastic:s3cret").toString("base64")}`);
      expect(seen[1]!.body).toEqual({ size: 1, query: { match_all: {} } });
      await client.close();
    } finally {
      server.stop(true);
    }
  });
});
