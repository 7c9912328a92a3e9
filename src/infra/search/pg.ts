import { and, desc, getTableColumns, gt, isNull, type SQL, sql } from "drizzle-orm";
import { filterConditions, searchDocumentFromColumns, visibleTo } from "../../modules/agents/repo";
import type { Caller } from "../../modules/auth/model";
import { emptyFacets, type FacetCounts } from "../../modules/search/model";
import type { Database } from "../db/client";
import { agents } from "../db/schema";
import { queryTokens } from "./text";
import {
  type BackendQuery,
  FACET_SIZE,
  type ReindexProgress,
  type SearchBackend,
  type SearchPage,
  type SearchRow,
} from "./types";

const { card: _card, searchDoc: _searchDoc, ...rowColumns } = getTableColumns(agents);

/** Facet prefixes in agents.facet_keys and the response facet each one feeds. */
const FACET_OF_PREFIX = {
  skill: "skills",
  tag: "tags",
  in: "inputModes",
  out: "outputModes",
} as const satisfies Record<string, keyof FacetCounts>;

/**
 * Total and facet counts cost a pass over every match, which for a broad query over a large corpus is
 * most of the request. They are remembered per (who may see what, query), together with the highest
 * change sequence at the time: every change to an agent (and every entitlement change) takes a new
 * sequence number, so an equal maximum means nothing the counts depend on has changed. Hard deletes
 * (removing a peer's copies) need not move the maximum, hence the short lifetime as well.
 */
const FACET_CACHE_ENTRIES = 2000;
const FACET_CACHE_TTL_MS = 1000;

type CountsEntry = { maxSeq: number; at: number; total: number; facets: FacetCounts };

function visibilityKey(caller: Caller): string {
  if (caller.kind !== "client") return "public";
  return caller.admin ? "admin" : `client:${caller.clientId}`;
}

export function topFacetValues(counts: Map<string, number>): { value: string; count: number }[] {
  return [...counts]
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
    .slice(0, FACET_SIZE)
    .map(([value, count]) => ({ value, count }));
}

/**
 * Search on Postgres itself (and PGlite): the weighted `search_doc` tsvector written with each change,
 * plus pg_trgm word similarity on the lower-cased name so a misspelt name still matches. The index is
 * the agents row, updated in the writing transaction, so this backend is always read-your-writes.
 */
export function createPostgresSearch(database: Database): SearchBackend {
  const { db } = database;
  const countsCache = new Map<string, CountsEntry>();

  function matchParts(text: string) {
    const tokens = queryTokens(text);
    if (tokens.length === 0) return undefined;
    const phrase = tokens.join(" ");
    // Each word must occur (as a prefix) in some weighted part; `simple` finds names, skills and tags as
    // written, `english` finds stemmed description words. Stop words vanish from the english query.
    const perToken = tokens.map(
      (token) => sql`(to_tsquery('simple', ${`${token}:*`}) || to_tsquery('english', ${`${token}:*`}))`,
    );
    const tsquery = sql`(${sql.join(perToken, sql` && `)})`;
    const fuzzyName = sql`${phrase} <% lower(${agents.name})`;
    const matches = sql`(${agents.searchDoc} @@ ${tsquery} or ${fuzzyName})`;
    // Rank weights {D, C, B, A}: a name hit outweighs a skill or tag hit, which outweighs a description
    // hit. Word similarity on the name rewards near-misses, an exact name wins outright. Rounded so the
    // keyset cursor compares exactly the value it was given.
    const score = sql<number>`round((ts_rank('{0.05,0.2,0.4,1.0}', ${agents.searchDoc}, ${tsquery})
      + 0.5 * word_similarity(${phrase}, lower(${agents.name}))
      + (lower(${agents.name}) = ${phrase})::int)::numeric, 6)::float8`;
    return { matches, score };
  }

  function conditionsOf(query: BackendQuery, matches: SQL | undefined): (SQL | undefined)[] {
    return [isNull(agents.deletedAt), visibleTo(query.caller), ...filterConditions(query.filters), matches];
  }

  async function counts(query: BackendQuery, conditions: (SQL | undefined)[]) {
    const key = `${visibilityKey(query.caller)}|${queryTokens(query.text).join(" ")}|${JSON.stringify(query.filters)}`;
    const [{ maxSeq }] = (await database.rows<{ maxSeq: number | null }>(
      sql`select max(${agents.seq})::float8 as "maxSeq" from ${agents}`,
    )) as [{ maxSeq: number | null }];
    const now = performance.now();
    const cached = countsCache.get(key);
    const fresh = cached && cached.maxSeq === (maxSeq ?? 0) && now - cached.at < FACET_CACHE_TTL_MS;
    if (fresh && !query.consistent) return cached;

    const where = and(...conditions);
    const rows = await database.rows<{ kind: number; value: string | null; n: number }>(sql`
      with m as materialized (
        select ${agents.facetKeys} as keys, ${agents.provider} as provider from ${agents} where ${where}
      )
      select 0 as kind, null::text as value, count(*)::int as n from m
      union all
      select 1, k, count(*)::int from m cross join lateral unnest(m.keys) as k group by k
      union all
      select 2, provider, count(*)::int from m where provider is not null group by provider`);
    const buckets = {
      skills: new Map<string, number>(),
      tags: new Map<string, number>(),
      inputModes: new Map<string, number>(),
      outputModes: new Map<string, number>(),
      providers: new Map<string, number>(),
    };
    let total = 0;
    for (const row of rows) {
      const n = Number(row.n);
      if (Number(row.kind) === 0) total = n;
      else if (Number(row.kind) === 2) buckets.providers.set(row.value!, n);
      else {
        const colon = row.value!.indexOf(":");
        const facet = FACET_OF_PREFIX[row.value!.slice(0, colon) as keyof typeof FACET_OF_PREFIX];
        if (facet) buckets[facet].set(row.value!.slice(colon + 1), n);
      }
    }
    const facets: FacetCounts = {
      tags: topFacetValues(buckets.tags),
      skills: topFacetValues(buckets.skills),
      providers: topFacetValues(buckets.providers),
      inputModes: topFacetValues(buckets.inputModes),
      outputModes: topFacetValues(buckets.outputModes),
    };
    const entry = { maxSeq: maxSeq ?? 0, at: now, total, facets };
    if (countsCache.size >= FACET_CACHE_ENTRIES) countsCache.delete(countsCache.keys().next().value!);
    countsCache.delete(key);
    countsCache.set(key, entry);
    return entry;
  }

  return {
    name: "postgres",

    async search(query: BackendQuery): Promise<SearchPage> {
      const match = matchParts(query.text);
      const conditions = conditionsOf(query, match?.matches);
      const score = match?.score ?? sql<number>`0::float8`;
      const pageConditions = [...conditions];
      if (query.after) {
        pageConditions.push(
          match
            ? sql`(${match.score}, ${agents.seq}) < (${query.after.score}::float8, ${query.after.seq})`
            : sql`${agents.seq} < ${query.after.seq}`,
        );
      }
      const pageQuery = db
        .select({ ...rowColumns, score })
        .from(agents)
        .where(and(...pageConditions))
        .orderBy(...(match ? [desc(score), desc(agents.seq)] : [desc(agents.seq)]))
        .limit(query.limit + 1);
      const [rows, summary] = await Promise.all([
        pageQuery,
        query.withFacets ? counts(query, conditions) : undefined,
      ]);
      const page = rows.slice(0, query.limit);
      return {
        hits: page.map(({ score: hitScore, ...row }) => ({
          id: row.id,
          score: Number(hitScore),
          seq: row.seq,
          row: row as SearchRow,
        })),
        hasMore: rows.length > query.limit,
        total: summary?.total ?? 0,
        facets: summary?.facets ?? emptyFacets(),
      };
    },

    async index() {
      // The search document is written with the row, in the same transaction: nothing to do.
    },

    async health() {
      const started = performance.now();
      await database.ping();
      return { status: "ok", latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    },

    /** Rebuilds every row's search document and facet keys from its columns, in batches, in place. */
    async reindexAll(progress?: ReindexProgress) {
      const [{ n: total }] = (await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents}`,
      )) as [{ n: number }];
      let done = 0;
      let lastSeq = -1;
      progress?.(0, Number(total));
      for (;;) {
        const batch = await database.rows<{ seq: number }>(sql`
          update ${agents} set
            ${sql.identifier("search_doc")} = ${searchDocumentFromColumns()},
            ${sql.identifier("facet_keys")} =
              array(select 'skill:' || unnest(${agents.skills})) || array(select 'tag:' || unnest(${agents.tags})) ||
              array(select 'in:' || unnest(${agents.inputModes})) || array(select 'out:' || unnest(${agents.outputModes}))
          where ${agents.id} in (
            select ${agents.id} from ${agents} where ${gt(agents.seq, lastSeq)} order by ${agents.seq} limit 1000
          )
          returning ${agents.seq}::float8 as seq`);
        if (batch.length === 0) break;
        done += batch.length;
        lastSeq = Math.max(...batch.map((row) => Number(row.seq)));
        progress?.(done, Number(total));
      }
      countsCache.clear();
      return { indexed: done };
    },

    async refresh() {
      // Always current: the index is the row.
    },
  };
}
