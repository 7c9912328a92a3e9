import type { Config } from "../../config";
import { ApiError } from "../../errors";
import type { Database } from "../../infra/db/client";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { BackendQuery, SearchAfter, SearchBackend, SearchPage } from "../../infra/search/types";
import type { DependencyCheck } from "../ops/model";
import { recordBody } from "../agents/service";
import type { Caller } from "../auth/model";
import type { SearchIndexer } from "./indexer";
import type { SearchFilters, SearchInput } from "./model";
import { searchRepo } from "./repo";

export type SearchDeps = {
  config: Config;
  database: Database;
  metrics: Metrics;
  logger: Logger;
  /** The configured backend (Elasticsearch when ELASTICSEARCH_URL is set, else Postgres). */
  backend: SearchBackend;
  /** Always the Postgres backend: what answers while Elasticsearch is unavailable. */
  fallback: SearchBackend;
  indexer: SearchIndexer;
};

/** After Elasticsearch fails, queries go straight to Postgres for this long before trying it again. */
const BREAKER_OPEN_MS = 5000;

export function encodeSearchCursor(after: SearchAfter): string {
  const { score, seq, window, names, fuzzy, similarity } = after;
  // Positional and short; a part the page did not have is null (window 0: every match ranked).
  let values: (number | null)[] = [score, seq];
  if (names !== undefined || fuzzy !== undefined)
    values = [score, seq, window ?? 0, names ?? null, fuzzy ?? null];
  else if (window !== undefined) values = [score, seq, window];
  if (similarity !== undefined && fuzzy !== undefined) values.push(similarity);
  return Buffer.from(JSON.stringify(values)).toString("base64url");
}

/** Where the page after this one starts: its last hit and the ranked parts it was cut from. */
export function nextAfter(page: SearchPage): SearchAfter | undefined {
  const last = page.hits.at(-1);
  if (!page.hasMore || !last) return undefined;
  const { window, names, fuzzy, similarity } = page;
  return { score: last.score, seq: last.seq, window, names, fuzzy, similarity };
}

const isSeq = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;

export function decodeSearchCursor(cursor: string | undefined): SearchAfter | undefined {
  if (cursor === undefined || cursor === "") return undefined;
  const malformed = () =>
    new ApiError("VALIDATION_FAILED", "Malformed cursor", {
      errors: [{ path: "/query/cursor", message: "Not a cursor this registry issued for search" }],
    });
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    throw malformed();
  }
  if (
    !Array.isArray(value) ||
    ![2, 3, 5, 6].includes(value.length) ||
    typeof value[0] !== "number" ||
    !Number.isFinite(value[0]) ||
    !isSeq(value[1]) ||
    (value.length >= 3 && !isSeq(value[2])) ||
    (value.length >= 5 && [value[3], value[4]].some((part) => part !== null && !isSeq(part))) ||
    (value.length === 6 &&
      (value[4] === null || typeof value[5] !== "number" || !(value[5] > 0 && value[5] <= 1)))
  )
    throw malformed();
  const after: SearchAfter = { score: value[0], seq: value[1] };
  if (value.length >= 3) after.window = value[2];
  if (value.length >= 5 && value[3] !== null) after.names = value[3];
  if (value.length >= 5 && value[4] !== null) after.fuzzy = value[4];
  if (value.length === 6) after.similarity = value[5];
  return after;
}

export function createSearchService(deps: SearchDeps) {
  const { config, database, metrics, logger, backend, fallback, indexer } = deps;
  const repo = searchRepo(database);
  const usesFallback = backend !== fallback;
  let breakerOpenUntil = 0;
  let lastFailure: string | null = null;

  async function timedSearch(target: SearchBackend, query: BackendQuery): Promise<SearchPage> {
    const started = performance.now();
    const page = await target.search(query);
    metrics.searchQueries.inc({ backend: target.name });
    metrics.searchDuration.observe({ backend: target.name }, (performance.now() - started) / 1000);
    return page;
  }

  async function run(query: BackendQuery, consistent: boolean): Promise<SearchPage> {
    if (!usesFallback) return timedSearch(backend, query);
    if (performance.now() < breakerOpenUntil) {
      metrics.searchFallbacks.inc();
      return timedSearch(fallback, query);
    }
    try {
      if (consistent) {
        // Acknowledged writes not yet indexed are in the outbox; Postgres already has them.
        if ((await indexer.pending()) > 0) return timedSearch(fallback, query);
        await backend.refresh();
      }
      const page = await timedSearch(backend, query);
      lastFailure = null;
      return page;
    } catch (error) {
      lastFailure = (error as Error).message;
      breakerOpenUntil = performance.now() + BREAKER_OPEN_MS;
      metrics.searchFallbacks.inc();
      logger.warn({ err: lastFailure }, "search backend failed; answering from Postgres");
      return timedSearch(fallback, query);
    }
  }

  async function search(caller: Caller, input: SearchInput): Promise<string> {
    const limit = input.limit ?? 20;
    const filters: SearchFilters = {
      skill: input.skill,
      tag: input.tag,
      inputMode: input.inputMode,
      outputMode: input.outputMode,
      streaming: input.streaming,
      provider: input.provider,
      status: input.status,
      health: input.health,
      signature: input.signature,
    };
    for (const key of Object.keys(filters) as (keyof SearchFilters)[])
      if (filters[key] === undefined) delete filters[key];
    const page = await run(
      {
        text: input.q?.trim() ?? "",
        filters,
        caller,
        limit,
        after: decodeSearchCursor(input.cursor),
        withFacets: input.facets !== false,
        consistent: input.consistent === true,
      },
      input.consistent === true,
    );
    // External hits name agents; their records come from Postgres, re-checked for visibility so a stale
    // index entry can never show what the caller may not see.
    const missing = page.hits.filter((hit) => !hit.row).map((hit) => hit.id);
    const loaded = missing.length > 0 ? await repo.visibleRows(missing, caller) : new Map();
    const items: string[] = [];
    for (const hit of page.hits) {
      const row = hit.row ?? loaded.get(hit.id);
      if (!row) continue;
      items.push(`{"agent":${recordBody(row, config.registryId)},"score":${hit.score}}`);
    }
    const after = nextAfter(page);
    const nextCursor = after ? encodeSearchCursor(after) : null;
    return `{"items":[${items.join(",")}],"total":${page.total},"totalIsEstimate":${page.totalIsEstimate === true},"facets":${JSON.stringify(page.facets)},"nextCursor":${JSON.stringify(nextCursor)}}`;
  }

  /** Readiness: Postgres search is the database; Elasticsearch down degrades (Postgres answers). */
  async function health(): Promise<DependencyCheck> {
    try {
      if (!usesFallback) return await backend.health();
      const check = await backend.health();
      const pending = await indexer.pending();
      if (check.status === "ok" && pending > 0)
        return { ...check, status: "degraded", detail: `${pending} changes waiting in the search outbox` };
      return check;
    } catch (error) {
      if (!usesFallback) return { status: "down", detail: (error as Error).message };
      return {
        status: "degraded",
        detail: `elasticsearch: ${(error as Error).message}; searching Postgres meanwhile`,
      };
    }
  }

  return {
    search,
    health,
    backendName: backend.name,
    lastFailure: () => lastFailure,
  };
}

export type SearchService = ReturnType<typeof createSearchService>;
