/**
 * EXPLAIN ANALYZE of what GET /v1/search sends to the database: the search runs through the registry's
 * own Postgres backend (src/infra/search/pg.ts) over a drizzle instance whose logger keeps every statement
 * and its parameters, and each kept statement is then explained with those parameters on the same
 * database. So the plans are those of the real query text, not of a hand-copied one.
 */
import { PGlite } from "@electric-sql/pglite";
import { pg_trgm } from "@electric-sql/pglite/contrib/pg_trgm";
import type { sql } from "drizzle-orm";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import type { Database, Db, Executor } from "../src/infra/db/client";
import * as schema from "../src/infra/db/schema";
import { createPostgresSearch } from "../src/infra/search/pg";
import type { BackendQuery } from "../src/infra/search/types";
import type { Caller } from "../src/modules/auth/model";
import type { SearchFilters } from "../src/modules/search/model";

export type ExplainedStatement = {
  /** "page", "similar names", "counts", "records" or "other", from the statement's shape. */
  role: string;
  executionMs: number;
  planningMs: number;
  /** Node lines with actual time and rows, plus the few detail lines that explain a cost. */
  condensed: string[];
};

type Statement = { query: string; params: unknown[] };

/** The BackendQuery the search service builds for a request path (same defaults as service.ts). */
export function backendQueryOf(path: string, caller: Caller): BackendQuery {
  const params = new URL(path, "http://x").searchParams;
  const filters: SearchFilters = {};
  for (const key of ["skill", "tag", "inputMode", "outputMode", "provider"] as const) {
    const value = params.get(key);
    if (value !== null) filters[key] = value;
  }
  if (params.has("streaming")) filters.streaming = params.get("streaming") === "true";
  const status = params.get("status");
  if (status) filters.status = status as SearchFilters["status"];
  const health = params.get("health");
  if (health) filters.health = health as SearchFilters["health"];
  return {
    text: params.get("q")?.trim() ?? "",
    filters,
    caller,
    limit: Number(params.get("limit") ?? 20),
    withFacets: params.get("facets") !== "false",
    consistent: params.get("consistent") === "true",
  };
}

const DETAIL =
  /^(Sort Method|Sort Key|Rows Removed by Filter|Rows Removed by Index Recheck|Heap Blocks|Index Cond|Recheck Cond|Filter|Group Key|Batches|Hash Cond|Join Filter|Workers)/;

/** EXPLAIN text to node lines ("Bitmap Heap Scan on agents: 41.2 ms, rows 9,812") and key details. */
export function condensePlan(lines: string[]): {
  condensed: string[];
  executionMs: number;
  planningMs: number;
} {
  const condensed: string[] = [];
  let executionMs = 0;
  let planningMs = 0;
  for (const raw of lines) {
    const execution = /^Execution Time: ([\d.]+) ms/.exec(raw.trim());
    if (execution) executionMs = Number(execution[1]);
    const planning = /^Planning Time: ([\d.]+) ms/.exec(raw.trim());
    if (planning) planningMs = Number(planning[1]);
    const node =
      /^(\s*)(?:->\s+)?(.*?)\s+\(cost=[^)]*\)\s+\(actual time=([\d.]+)\.\.([\d.]+) rows=([\d.]+) loops=(\d+)\)/.exec(
        raw,
      );
    if (node) {
      const [, indent, name, , total, rows, loops] = node;
      const ms = Number(total) * Number(loops);
      const loopText = Number(loops) > 1 ? ` (${loops} loops)` : "";
      condensed.push(
        `${indent}${name}: ${ms.toFixed(1)} ms, rows ${Number(rows).toLocaleString("en-US")}${loopText}`,
      );
      continue;
    }
    if (/\(never executed\)/.test(raw)) {
      condensed.push(`${raw.replace(/->\s+/, "").replace(/\s+\(cost=[^)]*\)/, "")}`);
      continue;
    }
    const detail = raw.trim();
    if (DETAIL.test(detail)) {
      const indent = /^(\s*)/.exec(raw)![1];
      condensed.push(`${indent}  ${detail.length > 150 ? `${detail.slice(0, 147)}...` : detail}`);
    }
  }
  return { condensed, executionMs, planningMs };
}

function roleOf(query: string): string {
  if (/^explain/i.test(query.trim())) return "estimate";
  if (/with s as materialized/i.test(query)) return "page";
  if (/agent_search_similar_names|<%/i.test(query)) return "similar names";
  if (/json_agg/i.test(query)) return "counts";
  if (/^select \(select max\(/i.test(query.trim())) return "max-seq";
  if (/from "agents"/i.test(query)) return "records";
  return "other";
}

/**
 * Opens the bench database (Postgres URL or PGlite data dir; for PGlite the registry must be stopped)
 * and returns a function that explains one request path as the given caller.
 */
export async function openExplainer(backendEnv: Record<string, string>) {
  const captured: Statement[] = [];
  const logger = {
    logQuery(query: string, params: unknown[]) {
      captured.push({ query, params });
    },
  };
  let db: Db;
  let explain: (statement: Statement) => Promise<string[]>;
  let close: () => Promise<void>;
  if (backendEnv.DATABASE_URL) {
    const client = postgres(backendEnv.DATABASE_URL, { max: 2, onnotice: () => {} });
    db = drizzlePostgres(client, { schema, logger }) as unknown as Db;
    explain = async ({ query, params }) => {
      const rows = (await client.unsafe(
        `explain (analyze, buffers) ${query}`,
        params as never[],
      )) as unknown as Array<Record<string, string>>;
      return rows.map((row) => row["QUERY PLAN"]!);
    };
    close = () => client.end({ timeout: 5 });
  } else {
    const client = await PGlite.create({ dataDir: backendEnv.DATA_DIR!, extensions: { pg_trgm } });
    db = drizzlePglite(client, { schema, logger }) as unknown as Db;
    explain = async ({ query, params }) => {
      const result = await client.query<Record<string, string>>(
        `explain (analyze, buffers) ${query}`,
        params,
      );
      return result.rows.map((row) => row["QUERY PLAN"]!);
    };
    close = () => client.close();
  }
  const database: Database = {
    db,
    kind: backendEnv.DATABASE_URL ? "postgres" : "pglite",
    rows: async <T extends Record<string, unknown>>(
      query: ReturnType<typeof sql>,
      executor: Executor = db,
    ) => {
      const value = (await executor.execute(query)) as unknown as { rows?: T[] } | T[];
      return Array.isArray(value) ? value : (value.rows ?? []);
    },
    ping: async () => {},
    migrate: async () => {},
    close,
  };
  const backend = createPostgresSearch(database);

  return {
    /** Runs the search once (capturing its statements), then explains each but the max(seq) probe. */
    async explainPath(
      path: string,
      caller: Caller,
    ): Promise<{ searchMs: number; statements: ExplainedStatement[] }> {
      captured.length = 0;
      const query = { ...backendQueryOf(path, caller), consistent: true };
      const started = performance.now();
      await backend.search(query);
      const searchMs = performance.now() - started;
      const statements: ExplainedStatement[] = [];
      for (const statement of [...captured]) {
        const role = roleOf(statement.query);
        // The max(seq) probe and the planner's row estimate cost no execution worth a plan.
        if (role === "max-seq" || role === "estimate") continue;
        statements.push({ role, ...condensePlan(await explain(statement)) });
      }
      return { searchMs, statements };
    },
    close,
  };
}
