import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createPostgresSearch, type PostgresSearchLimits, topFacetValues } from "../src/infra/search/pg";
import { FACET_SIZE } from "../src/infra/search/types";
import type { BackendQuery, SearchHit, SearchPage } from "../src/infra/search/types";
import { ANONYMOUS } from "../src/modules/auth/model";
import { decodeSearchCursor, encodeSearchCursor } from "../src/modules/search/service";
import { createFakeElasticsearch } from "./support/fake-elasticsearch";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { cardOf, type Spec, searchContract, skill } from "./support/search-contract";

// The Postgres backend, on embedded PGlite and (in CI) on a real Postgres server.
for (const backend of BACKENDS)
  searchContract(`postgres backend on ${backend}`, {
    makeApp: () => createTestApp(backend),
    relevance: true,
    backend: "postgres",
  });

// The Elasticsearch backend through the real client and adapter, against an in-memory fake of the
// Elasticsearch API (relevance is left to the real engine: the fake's scoring is a stand-in).
for (const backend of BACKENDS)
  searchContract(`elasticsearch backend (fake) over ${backend}`, {
    makeApp: async () => {
      const fake = createFakeElasticsearch();
      const t = await createTestApp(backend, { elasticsearch: fake.client });
      return t;
    },
    relevance: false,
    backend: "elasticsearch",
  });

/**
 * The Postgres backend's bounds on work per query (exact counts and ranking up to a number of matches,
 * then estimates and a ranking window), exercised with bounds small enough for a small corpus.
 */
const SMALL: PostgresSearchLimits = { exactCount: 6, rankWindow: 4, fuzzyBelow: 3 };

// Published in this order: the oldest agent has the query word in its name, outside the ranking window.
const BOUNDED_CORPUS: Spec[] = [
  {
    key: "tracker",
    name: "Parcel Tracker",
    description: "Follows deliveries.",
    skills: [skill("track", ["logistics"])],
  },
  {
    key: "kourier",
    name: "Kourier Hub",
    description: "Routes deliveries.",
    skills: [skill("hub", ["logistics"])],
  },
  ...Array.from({ length: 12 }, (_, i) => ({
    key: `courier-${i}`,
    name: `Courier ${String.fromCharCode(97 + i)}${String.fromCharCode(110 + i)}`,
    description: "Carries a parcel across town.",
    skills: [skill(`leg-${i}`, i % 2 === 0 ? ["logistics", "city"] : ["logistics"])],
    provider: i % 3 === 0 ? "Fleet Co" : undefined,
  })),
  {
    key: "router",
    name: "Parcel Router",
    description: "Plans routes.",
    skills: [skill("route", ["logistics", "maps"])],
  },
];

for (const backend of BACKENDS)
  describe(`postgres backend bounds [${backend}]`, () => {
    let t: TestApp;
    let search: (query: Partial<BackendQuery>) => Promise<SearchPage>;
    const ids = new Map<string, string>();

    /** Every hit of a query, page after page, as a client would walk it (cursor through the service). */
    async function walk(text: string, limit: number) {
      const hits: SearchHit[] = [];
      let after: BackendQuery["after"];
      for (let pages = 0; pages < 50; pages++) {
        const page = await search({ text, limit, after });
        hits.push(...page.hits);
        const last = page.hits.at(-1);
        if (!page.hasMore || !last) break;
        after = decodeSearchCursor(
          encodeSearchCursor({ score: last.score, seq: last.seq, window: page.window }),
        );
      }
      return hits;
    }

    beforeAll(async () => {
      t = await createTestApp(backend);
      const writer = await t.client(["agents:write"], "bounds-writer");
      const salt = Date.now().toString(36);
      for (const spec of BOUNDED_CORPUS) {
        const res = await t.request("/v1/agents", {
          method: "POST",
          token: writer.token,
          json: { card: cardOf(spec, salt), visibility: "public" },
        });
        if (res.status !== 201) throw new Error(`seed ${spec.key}: ${res.status} ${await res.text()}`);
        ids.set(spec.key, (await json<{ id: string }>(res)).id);
      }
      const bounded = createPostgresSearch(t.db.database, SMALL);
      search = (query) =>
        bounded.search({
          text: "",
          filters: {},
          caller: ANONYMOUS,
          limit: 20,
          withFacets: true,
          consistent: true,
          ...query,
        });
    }, 60_000);
    afterAll(() => t.close());

    test("past the exact bound, total and facets are flagged as estimates and never undercount", async () => {
      const page = await search({ text: "" });
      expect(page.totalIsEstimate).toBe(true);
      expect(page.total).toBeGreaterThan(SMALL.exactCount);
      expect(page.facets.tags[0]).toEqual({ value: "logistics", count: expect.any(Number) });
      expect(page.facets.tags[0]!.count).toBeGreaterThan(SMALL.exactCount);
      for (const facet of Object.values(page.facets))
        for (const { count } of facet) expect(count).toBeGreaterThanOrEqual(1);
    });

    test("within the exact bound, total and facets are exact", async () => {
      const page = await search({ filters: { provider: "fleet co" } });
      expect(page.totalIsEstimate).toBe(false);
      expect(page.total).toBe(4);
      expect(page.facets.providers).toEqual([{ value: "Fleet Co", count: 4 }]);
      expect(page.facets.tags).toEqual([
        { value: "logistics", count: 4 },
        { value: "city", count: 2 },
      ]);
    });

    test("a broad text query ranks its newest matches, then lists the rest newest first, each once", async () => {
      const hits = await walk("parcel", 3);
      const all = BOUNDED_CORPUS.filter((spec) => /parcel/i.test(`${spec.name} ${spec.description}`));
      expect(hits.map((hit) => hit.id).sort()).toEqual(all.map((spec) => ids.get(spec.key)!).sort());
      const ranked = hits.filter((hit) => hit.score > 0);
      const rest = hits.filter((hit) => hit.score === 0);
      expect(ranked).toHaveLength(SMALL.rankWindow);
      expect(hits.slice(0, ranked.length)).toEqual(ranked);
      // The name match inside the window ranks first; the older one is listed by recency with the rest.
      expect(ranked[0]!.id).toBe(ids.get("router")!);
      const newestFirst = [...hits].sort((a, b) => b.seq - a.seq);
      expect(ranked.map((hit) => hit.id).sort()).toEqual(
        newestFirst
          .slice(0, SMALL.rankWindow)
          .map((hit) => hit.id)
          .sort(),
      );
      expect(rest.map((hit) => hit.seq)).toEqual([...rest.map((hit) => hit.seq)].sort((a, b) => b - a));
      expect(rest.map((hit) => hit.id)).toContain(ids.get("tracker")!);
    });

    test("a query matching no more than the window is ranked in full", async () => {
      const page = await search({ text: "parcel tracker" });
      expect(page.window).toBeUndefined();
      expect(page.hits[0]!.id).toBe(ids.get("tracker")!);
    });

    test("names match despite a typo when full text finds too little, not otherwise", async () => {
      expect((await search({ text: "parcle tracker" })).hits[0]?.id).toBe(ids.get("tracker")!);
      // Full text finds a dozen couriers: the similar name "Kourier Hub" is not added to them.
      const couriers = await search({ text: "courier" });
      expect(couriers.hits.map((hit) => hit.id)).not.toContain(ids.get("kourier")!);
      expect(couriers.hits).toHaveLength(12);
      // Full text finds one "kourier": the similar names join it.
      const similar = (await search({ text: "kourier" })).hits.map((hit) => hit.id);
      expect(similar).toContain(ids.get("kourier")!);
      expect(similar).toContain(ids.get("courier-0")!);
    });
  });

describe("search cursor", () => {
  test("carries a ranking window when there is one", () => {
    expect(decodeSearchCursor(encodeSearchCursor({ score: 0.5, seq: 12, window: 7 }))).toEqual({
      score: 0.5,
      seq: 12,
      window: 7,
    });
    expect(decodeSearchCursor(encodeSearchCursor({ score: 0.5, seq: 12 }))).toEqual({ score: 0.5, seq: 12 });
  });

  test("rejects a window that is not a sequence number", () => {
    for (const window of [-1, 1.5, "7"]) {
      const cursor = Buffer.from(JSON.stringify([0.5, 12, window])).toString("base64url");
      expect(() => decodeSearchCursor(cursor)).toThrow("Malformed cursor");
    }
  });
});

describe("top facet values", () => {
  test("are the most frequent, ties by value, as a full sort would give", () => {
    const counts = new Map<string, number>();
    // Many values seen once (a sample's skill ids), some more often, ties across the cut.
    for (let i = 0; i < 3000; i++) counts.set(`v${(i * 7919) % 3000}`, 1 + (i % 97 === 0 ? i % 5 : 0));
    const expected = [...counts]
      .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .slice(0, FACET_SIZE)
      .map(([value, count]) => ({ value, count }));
    expect(topFacetValues(counts)).toEqual(expected);
    expect(
      topFacetValues(
        new Map([
          ["b", 1],
          ["a", 1],
          ["c", 2],
        ]),
      ),
    ).toEqual([
      { value: "c", count: 2 },
      { value: "a", count: 1 },
      { value: "b", count: 1 },
    ]);
  });
});
