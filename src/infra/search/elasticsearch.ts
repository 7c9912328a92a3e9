import { Client, type estypes, HttpConnection } from "@elastic/elasticsearch";
import type { Caller } from "../../modules/auth/model";
import type { FacetCounts } from "../../modules/search/model";
import type { DependencyCheck } from "../../modules/ops/model";
import type { Logger } from "../logger";
import { queryTokens } from "./text";
import {
  type BackendQuery,
  FACET_SIZE,
  type IndexChange,
  type ReindexProgress,
  type SearchBackend,
  type SearchPage,
} from "./types";

/**
 * Short timeouts and no retries: a write waits on the index only briefly (the outbox retries), and a
 * search that cannot reach Elasticsearch is better answered by Postgres at once.
 */
export function createElasticsearchClient(
  url: string,
  options: { requestTimeout?: number; maxRetries?: number } = {},
) {
  // The client's default transport (undici) fails under Bun ("response.headers" of undefined); its
  // node:http transport works, and sends credentials in the URL as Basic auth.
  return new Client({
    node: url,
    Connection: HttpConnection,
    requestTimeout: options.requestTimeout ?? 2000,
    maxRetries: options.maxRetries ?? 1,
  });
}

export const DEFAULT_ALIAS = "a2a-agents";
const REINDEX_BATCH = 1000;

/** What the reindex reads from Postgres; supplied by the search module (keeps this file driver-free). */
export type ReindexSource = {
  maxSeq(): Promise<number>;
  countLive(): Promise<number>;
  liveBatch(afterSeq: number, limit: number): Promise<IndexChange[]>;
  changedSince(afterSeq: number, limit: number): Promise<IndexChange[]>;
};

export type ElasticsearchOptions = {
  client: Client;
  logger: Logger;
  source: ReindexSource;
  /** Searches and writes go through this alias; reindexing builds a new index and swaps it. */
  alias?: string;
};

/**
 * The index settings and mapping, explicit (`dynamic: strict`) so a document can never grow fields by
 * accident. Names are text (typo-tolerant matching), keyword (exact, lower-cased) and
 * search_as_you_type (prefixes while typing); skills and tags are keywords for filters and facets,
 * copied into text fields for full-text matching; descriptions use the english analyzer.
 */
export const INDEX_BODY = {
  settings: {
    number_of_shards: 1,
    auto_expand_replicas: "0-1",
    analysis: {
      normalizer: { lowercase_folded: { type: "custom", filter: ["lowercase", "asciifolding"] } },
      analyzer: {
        name_text: { type: "custom", tokenizer: "standard", filter: ["lowercase", "asciifolding"] },
      },
    },
  },
  mappings: {
    dynamic: "strict",
    properties: {
      id: { type: "keyword" },
      seq: { type: "long" },
      name: {
        type: "text",
        analyzer: "name_text",
        fields: {
          keyword: { type: "keyword", normalizer: "lowercase_folded" },
          suggest: { type: "search_as_you_type", analyzer: "name_text" },
        },
      },
      description: { type: "text", analyzer: "english" },
      skills: { type: "keyword", copy_to: "skills_text" },
      skills_text: { type: "text", analyzer: "name_text" },
      tags: { type: "keyword", copy_to: "tags_text" },
      tags_text: { type: "text", analyzer: "name_text" },
      input_modes: { type: "keyword" },
      output_modes: { type: "keyword" },
      streaming: { type: "boolean" },
      provider: { type: "keyword", fields: { lower: { type: "keyword", normalizer: "lowercase_folded" } } },
      status: { type: "keyword" },
      health: { type: "keyword" },
      signature: { type: "keyword" },
      visibility: { type: "keyword" },
      owner: { type: "keyword" },
      entitled: { type: "keyword" },
      origin_registry: { type: "keyword" },
      updated_at: { type: "date" },
    },
  },
} as const;

export type AgentDocument = {
  id: string;
  seq: number;
  name: string;
  description: string;
  skills: string[];
  tags: string[];
  input_modes: string[];
  output_modes: string[];
  streaming: boolean;
  provider: string | null;
  status: string;
  health: string;
  signature: string;
  visibility: string;
  owner: string | null;
  entitled: string[];
  origin_registry: string | null;
  updated_at: string;
};

export function documentOf(change: IndexChange): AgentDocument | undefined {
  const row = change.row;
  if (!row || row.deletedAt) return undefined;
  return {
    id: row.id,
    seq: row.seq,
    name: row.name,
    description: row.description,
    skills: row.skills,
    tags: row.tags,
    input_modes: row.inputModes,
    output_modes: row.outputModes,
    streaming: row.streaming,
    provider: row.provider,
    status: row.status,
    health: row.health,
    signature: row.signature,
    visibility: row.visibility,
    owner: row.owner,
    entitled: change.entitled,
    origin_registry: row.originRegistry,
    updated_at: row.updatedAt.toISOString(),
  };
}

/** Bulk operations for a set of changes. External versioning by seq: an older state never overwrites a newer one. */
export function bulkOperations(index: string, changes: IndexChange[]): unknown[] {
  const operations: unknown[] = [];
  for (const change of changes) {
    const document = documentOf(change);
    if (document) {
      operations.push(
        { index: { _index: index, _id: change.id, version: document.seq, version_type: "external" } },
        document,
      );
    } else if (change.row) {
      operations.push({
        delete: { _index: index, _id: change.id, version: change.row.seq, version_type: "external" },
      });
    } else {
      operations.push({ delete: { _index: index, _id: change.id } });
    }
  }
  return operations;
}

/** The visibility rule as a filter clause: public, or owned by / entitled to the caller; admins see all. */
export function visibilityFilter(caller: Caller): estypes.QueryDslQueryContainer | undefined {
  if (caller.kind === "client" && caller.admin) return undefined;
  if (caller.kind !== "client") return { term: { visibility: "public" } };
  return {
    bool: {
      should: [
        { term: { visibility: "public" } },
        { term: { owner: caller.clientId } },
        { term: { entitled: caller.clientId } },
      ],
      minimum_should_match: 1,
    },
  };
}

const lower = (value: string) => value.trim().toLowerCase();

export function filterClauses(query: BackendQuery): estypes.QueryDslQueryContainer[] {
  const { filters } = query;
  const clauses: estypes.QueryDslQueryContainer[] = [];
  const visibility = visibilityFilter(query.caller);
  if (visibility) clauses.push(visibility);
  if (filters.skill) clauses.push({ term: { skills: lower(filters.skill) } });
  if (filters.tag) clauses.push({ term: { tags: lower(filters.tag) } });
  if (filters.inputMode) clauses.push({ term: { input_modes: lower(filters.inputMode) } });
  if (filters.outputMode) clauses.push({ term: { output_modes: lower(filters.outputMode) } });
  if (filters.streaming !== undefined) clauses.push({ term: { streaming: filters.streaming } });
  if (filters.provider) clauses.push({ term: { "provider.lower": lower(filters.provider) } });
  if (filters.status) clauses.push({ term: { status: filters.status } });
  if (filters.health) clauses.push({ term: { health: filters.health } });
  if (filters.signature) clauses.push({ term: { signature: filters.signature } });
  return clauses;
}

/**
 * The whole search request body for a query: one round trip gives hits, exact total and facets.
 * Matching mirrors the Postgres backend: every word must occur as a prefix in some field (name,
 * skills, tags, description), or the whole phrase must match the name within edit distance (typos).
 * Names weigh most, then skills and tags, then descriptions; an exact name wins outright.
 */
export function searchRequest(alias: string, query: BackendQuery): estypes.SearchRequest {
  const tokens = queryTokens(query.text);
  const phrase = tokens.join(" ");
  const filter = filterClauses(query);
  const textQuery: estypes.QueryDslQueryContainer | undefined = phrase
    ? {
        bool: {
          should: [
            {
              bool: {
                must: tokens.map((token) => ({
                  multi_match: {
                    query: token,
                    type: "phrase_prefix" as const,
                    fields: ["name^4", "skills_text^2", "tags_text^2", "description"],
                  },
                })),
              },
            },
            {
              match: {
                name: {
                  query: phrase,
                  fuzziness: "AUTO",
                  prefix_length: 1,
                  operator: "and" as const,
                  boost: 2,
                },
              },
            },
            { term: { "name.keyword": { value: phrase, boost: 10 } } },
          ],
          minimum_should_match: 1,
        },
      }
    : undefined;
  const terms = (field: string) => ({
    terms: { field, size: FACET_SIZE, order: [{ _count: "desc" as const }, { _key: "asc" as const }] },
  });
  const request: estypes.SearchRequest = {
    index: alias,
    size: query.limit + 1,
    track_total_hits: query.withFacets,
    query: { bool: { filter, ...(textQuery ? { must: [textQuery] } : {}) } },
    sort: textQuery
      ? [{ _score: { order: "desc" } }, { seq: { order: "desc" } }]
      : [{ seq: { order: "desc" } }],
    _source: false,
    ...(query.after
      ? { search_after: textQuery ? [query.after.score, query.after.seq] : [query.after.seq] }
      : {}),
  };
  if (query.withFacets)
    request.aggs = {
      tags: terms("tags"),
      skills: terms("skills"),
      providers: terms("provider"),
      inputModes: terms("input_modes"),
      outputModes: terms("output_modes"),
    };
  return request;
}

function facetsOf(aggregations: Record<string, estypes.AggregationsAggregate> | undefined): FacetCounts {
  const bucketsOf = (name: string) => {
    const aggregate = aggregations?.[name] as estypes.AggregationsStringTermsAggregate | undefined;
    const buckets = (aggregate?.buckets ?? []) as estypes.AggregationsStringTermsBucket[];
    return buckets.map((bucket) => ({ value: String(bucket.key), count: bucket.doc_count }));
  };
  return {
    tags: bucketsOf("tags"),
    skills: bucketsOf("skills"),
    providers: bucketsOf("providers"),
    inputModes: bucketsOf("inputModes"),
    outputModes: bucketsOf("outputModes"),
  };
}

function statusOf(error: unknown): number | undefined {
  return (error as { meta?: { statusCode?: number } }).meta?.statusCode;
}

function isIndexMissing(error: unknown): boolean {
  const type = (error as { body?: { error?: { type?: string } } }).body?.error?.type;
  return statusOf(error) === 404 && (type === undefined || type === "index_not_found_exception");
}

export class BulkIndexError extends Error {
  constructor(readonly failures: { id: string; status: number; type: string }[]) {
    super(
      `elasticsearch rejected ${failures.length} document(s): ${failures
        .slice(0, 3)
        .map((f) => `${f.id} ${f.status} ${f.type}`)
        .join("; ")}`,
    );
  }
}

export function createElasticsearchSearch(options: ElasticsearchOptions): SearchBackend & {
  ensureIndex(): Promise<void>;
  alias: string;
} {
  const { client, logger, source } = options;
  const alias = options.alias ?? DEFAULT_ALIAS;
  let ensured = false;

  async function createIndex(name: string, withAlias: boolean) {
    await client.indices.create({
      index: name,
      ...(structuredClone(INDEX_BODY) as unknown as Omit<estypes.IndicesCreateRequest, "index">),
      ...(withAlias ? { aliases: { [alias]: {} } } : {}),
    });
  }

  async function ensureIndex() {
    if (ensured) return;
    const exists = await client.indices.existsAlias({ name: alias });
    if (!exists) {
      try {
        await createIndex(`${alias}-${Date.now()}`, true);
        logger.info({ alias }, "created search index");
      } catch (error) {
        // Another instance created it first: fine.
        const type = (error as { body?: { error?: { type?: string } } }).body?.error?.type;
        if (type !== "resource_already_exists_exception" && type !== "invalid_alias_name_exception")
          throw error;
      }
    }
    ensured = true;
  }

  async function bulk(index: string, changes: IndexChange[], refresh = false) {
    if (changes.length === 0) return;
    const response = await client.bulk({ operations: bulkOperations(index, changes), refresh });
    if (!response.errors) return;
    const failures: { id: string; status: number; type: string }[] = [];
    for (const item of response.items) {
      const result = item.index ?? item.delete ?? item.create ?? item.update;
      if (!result?.error) continue;
      // A newer state is already indexed (external version), or a delete found nothing: both are done.
      if (result.status === 409 && result.error.type === "version_conflict_engine_exception") continue;
      if (result.status === 404 && item.delete) continue;
      failures.push({ id: String(result._id), status: result.status, type: result.error.type });
    }
    if (failures.length > 0) throw new BulkIndexError(failures);
  }

  return {
    name: "elasticsearch",
    alias,
    ensureIndex,

    async search(query: BackendQuery): Promise<SearchPage> {
      await ensureIndex();
      const response = await client.search(searchRequest(alias, query)).catch((error) => {
        // Deleted behind our back: recreate it on next use (the outbox and a reindex refill it).
        if (isIndexMissing(error)) ensured = false;
        throw error;
      });
      const hits = response.hits.hits;
      const page = hits.slice(0, query.limit).map((hit) => {
        const sort = hit.sort ?? [];
        const seq = Number(sort.at(-1));
        return { id: String(hit._id), score: sort.length === 2 ? Number(sort[0]) : 0, seq };
      });
      const total = response.hits.total;
      return {
        hits: page,
        hasMore: hits.length > query.limit,
        total: typeof total === "number" ? total : (total?.value ?? 0),
        facets: facetsOf(response.aggregations),
      };
    },

    async index(changes: IndexChange[]) {
      // Never write before the alias exists: Elasticsearch would auto-create a concrete index under the
      // alias's name with a guessed mapping, and the real index could then never take that name.
      await ensureIndex();
      try {
        await bulk(alias, changes);
      } catch (error) {
        const missing =
          isIndexMissing(error) ||
          (error instanceof BulkIndexError &&
            error.failures.some((f) => f.type === "index_not_found_exception"));
        if (!missing) throw error;
        ensured = false;
        await ensureIndex();
        await bulk(alias, changes);
      }
    },

    async health(): Promise<DependencyCheck> {
      const started = performance.now();
      const health = await client.cluster.health({ timeout: "2s" });
      const latencyMs = Math.round((performance.now() - started) * 100) / 100;
      if (health.status === "red") return { status: "down", latencyMs, detail: "cluster status red" };
      return { status: "ok", latencyMs };
    },

    async refresh() {
      await client.indices.refresh({ index: alias });
    },

    /**
     * Builds a fresh index from Postgres, then swaps the alias to it in one atomic alias update, while
     * writes keep landing in the old one. Changes made during the build (seq above the starting point)
     * are applied again after the swap; external versions make the replays harmless.
     */
    async reindexAll(progress?: ReindexProgress) {
      const startSeq = await source.maxSeq();
      const total = await source.countLive();
      const next = `${alias}-${Date.now()}`;
      await createIndex(next, false);
      await client.indices.putSettings({ index: next, settings: { refresh_interval: "-1" } });
      let indexed = 0;
      let afterSeq = -1;
      progress?.(0, total);
      for (;;) {
        const batch = await source.liveBatch(afterSeq, REINDEX_BATCH);
        if (batch.length === 0) break;
        await bulk(next, batch);
        indexed += batch.length;
        afterSeq = batch.at(-1)!.row!.seq;
        progress?.(indexed, Math.max(total, indexed));
      }
      await client.indices.putSettings({ index: next, settings: { refresh_interval: "1s" } });
      await client.indices.refresh({ index: next });
      const current = await client.indices.getAlias({ name: alias }).catch((error) => {
        if (statusOf(error) === 404) return {};
        throw error;
      });
      const previous = Object.keys(current);
      await client.indices.updateAliases({
        actions: [
          ...previous.map((index) => ({ remove: { index, alias } })),
          { add: { index: next, alias } },
        ],
      });
      ensured = true;
      // Catch up on what changed while the new index was being built.
      let caughtUpTo = startSeq;
      for (;;) {
        const changes = await source.changedSince(caughtUpTo, REINDEX_BATCH);
        if (changes.length === 0) break;
        await bulk(next, changes);
        caughtUpTo = Math.max(...changes.map((change) => change.row?.seq ?? caughtUpTo));
        if (changes.length < REINDEX_BATCH) break;
      }
      for (const index of previous)
        await client.indices.delete({ index }).catch((error) => {
          logger.warn({ err: (error as Error).message, index }, "could not delete the previous search index");
        });
      return { indexed };
    },
  };
}
