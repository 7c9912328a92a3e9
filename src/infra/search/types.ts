import type { Caller } from "../../modules/auth/model";
import type { FacetCounts, SearchFilters } from "../../modules/search/model";
import type { DependencyCheck } from "../../modules/ops/model";
import type { RecordRow } from "../../modules/agents/repo";
import type { AgentRow } from "../db/schema";

export type SearchBackendName = "postgres" | "elasticsearch";

/**
 * Keyset position: the last hit's sort values (score, then seq, both descending), and for a Postgres
 * text query the seq boundaries of what it ranks: full-text matches newer than `window` (0: all of
 * them), name matches newer than `names`, names at least `similarity` (pg_trgm's 0.6 when absent) like
 * the query newer than `fuzzy` (which also makes them matches); an absent part is empty.
 */
export type SearchAfter = {
  score: number;
  seq: number;
  window?: number;
  names?: number;
  fuzzy?: number;
  similarity?: number;
};

export type BackendQuery = {
  /** Normalised free text; empty means "everything the filters select", newest first. */
  text: string;
  filters: SearchFilters;
  caller: Caller;
  limit: number;
  after?: SearchAfter;
  /** Compute total and facets (they cost a pass over every match). */
  withFacets: boolean;
  /** Read-your-writes: no remembered counts either. */
  consistent?: boolean;
};

/** What the record of a hit is built from: the agent's record columns. */
export type SearchRow = RecordRow;

export type SearchHit = {
  id: string;
  score: number;
  seq: number;
  /** Present when the backend already read the row (Postgres); otherwise the service loads it. */
  row?: SearchRow;
};

export type SearchPage = {
  hits: SearchHit[];
  /** Whether more hits follow the page (the backend fetched one more than asked). */
  hasMore: boolean;
  total: number;
  /** The total (and so the facet counts) is an estimate: the query matched more than is counted exactly. */
  totalIsEstimate?: boolean;
  facets: FacetCounts;
  /** The ranking window of a Postgres text query with more matches than it ranks; the cursor keeps it. */
  window?: number;
  /** The other ranked parts of a Postgres text query (see SearchAfter); the cursor keeps them. */
  names?: number;
  fuzzy?: number;
  similarity?: number;
};

/** One agent's state to put in an external index; `row` absent or deleted means remove it. */
export type IndexChange = { id: string; row?: AgentRow; entitled: string[] };

export type ReindexProgress = (done: number, total: number) => void;

export interface SearchBackend {
  readonly name: SearchBackendName;
  search(query: BackendQuery): Promise<SearchPage>;
  /** Brings the index up to the given states. Postgres indexes in the writing transaction: no-op there. */
  index(changes: IndexChange[]): Promise<void>;
  health(): Promise<DependencyCheck>;
  /** Rebuilds the whole index from Postgres, swapping it in atomically where the backend can. */
  reindexAll(progress?: ReindexProgress): Promise<{ indexed: number }>;
  /** Makes everything indexed so far visible to the next search (read-your-writes). */
  refresh(): Promise<void>;
}

/** Top values per facet in a response: enough for a filter panel, bounded for huge corpora. */
export const FACET_SIZE = 50;
