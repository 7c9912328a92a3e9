import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { pg_trgm } from "@electric-sql/pglite/contrib/pg_trgm";
import { type SQL, sql } from "drizzle-orm";
import type { PgDatabase, PgQueryResultHKT } from "drizzle-orm/pg-core";
import { drizzle as drizzlePglite } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import { drizzle as drizzlePostgres } from "drizzle-orm/postgres-js";
import { migrate as migratePostgres } from "drizzle-orm/postgres-js/migrator";
import postgres from "postgres";
import * as schema from "./schema";

export type Db = PgDatabase<PgQueryResultHKT, typeof schema>;
export type Tx = Parameters<Parameters<Db["transaction"]>[0]>[0];
export type Executor = Db | Tx;

export const MIGRATIONS_FOLDER = resolve(import.meta.dir, "../../../drizzle");

/** Arbitrary constant naming the advisory lock that serialises migrations across instances. */
const MIGRATION_LOCK_KEY = 727_420_001;

export type Database = {
  db: Db;
  kind: "postgres" | "pglite";
  /** Runs raw SQL and returns rows whichever driver is underneath (the drivers shape results differently). */
  rows<T extends Record<string, unknown>>(query: SQL, executor?: Executor): Promise<T[]>;
  ping(timeoutMs?: number): Promise<void>;
  migrate(): Promise<void>;
  close(): Promise<void>;
};

export type DatabaseOptions = {
  url?: string;
  /** Where PGlite keeps its files when `url` is unset; "memory://" keeps them in memory. */
  dataDir: string;
  poolMax: number;
};

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function extractRows<T>(result: Promise<unknown>): Promise<T[]> {
  const value = (await result) as { rows?: T[] } | T[];
  return Array.isArray(value) ? value : (value.rows ?? []);
}

/**
 * Runs a fixed statement with positional parameters on the driver under `executor` (a drizzle database
 * or transaction), skipping drizzle's query builder. For hot paths only: drizzle builds a statement's
 * text again on every call, which for a wide insert cost more CPU than Postgres spent running it.
 * Parameters are sent as text, so the statement casts them; both drivers prepare it once per connection.
 * The text must be fixed (a constant): each distinct text stays prepared on every connection.
 */
export async function runStatement<T extends Record<string, unknown>>(
  database: Pick<Database, "db" | "kind">,
  text: string,
  params: string[],
  executor: Executor = database.db,
): Promise<T[]> {
  const driver = (executor as unknown as { session: { client: unknown } }).session.client;
  if (database.kind === "postgres")
    // Named and prepared per connection: postgres.js's unsafe() defaults to an unnamed statement, which
    // it first describes and waits for, so every call cost two round trips and a Parse in Postgres.
    return (await (driver as postgres.Sql).unsafe(text, params, { prepare: true })) as unknown as T[];
  return (
    await (driver as { query(text: string, params: string[]): Promise<{ rows: T[] }> }).query(text, params)
  ).rows;
}

/**
 * drizzle runs every query through postgres.js's `unsafe()` unnamed, which the driver describes first
 * and waits for: two round trips and a Parse in Postgres on every call. Named, each text is parsed and
 * described once per connection, then only bound and executed (uncached read on Postgres: Postgres CPU
 * 0.25 -> 0.17 ms, registry 0.35 -> 0.29 ms per request). Texts are parameterised, so they are few;
 * the driver forgets a connection's statements when it retires the connection (max_lifetime, 30 to 60
 * minutes). Queries without parameters still go as simple queries (several statements allowed).
 */
function preparedByDefault(client: postgres.Sql) {
  const unsafe = client.unsafe.bind(client);
  type Options = Record<string, unknown>;
  client.unsafe = ((text: string, args: unknown[] | Options = [], options: Options = {}) => {
    // unsafe(text, options) is also a valid call.
    if (!Array.isArray(args)) [args, options] = [[], args];
    // drizzle asks for prepare: false on every query it did not name: that is the cost described above.
    return unsafe(text, args as never, { ...options, prepare: true });
  }) as typeof client.unsafe;
}

/** Whether Postgres can store the string as text: no NUL, no lone surrogate (not Unicode, so not UTF-8). */
export const storableText = (value: string) => !value.includes("\0") && value.isWellFormed();

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  if (options.url) return openPostgres(options.url, options.poolMax);
  return openPglite(options.dataDir);
}

async function openPostgres(url: string, poolMax: number): Promise<Database> {
  const client = postgres(url, {
    max: poolMax,
    idle_timeout: 30,
    connect_timeout: 5,
    // While Postgres is down a query waits for its connection's next attempt. The driver's default
    // backoff grows to 20 s, so writes hung for that long (and queued behind each other) instead of
    // failing as DEPENDENCY_UNAVAILABLE; a short cap answers within connect_timeout plus 250 ms. Attempts
    // are made only for waiting queries, so the cap costs nothing while idle.
    backoff: (retries: number) => Math.min(0.05 * retries, 0.25),
    onnotice: () => {},
    // Statements are prepared (below), but planned for their parameters each time as before: a generic
    // plan chosen after five runs could be far off for a search whose best scan depends on the words.
    connection: { plan_cache_mode: "force_custom_plan" },
  });
  preparedByDefault(client);
  const db = drizzlePostgres(client, { schema }) as unknown as Db;
  const rows = <T extends Record<string, unknown>>(query: SQL, executor: Executor = db) =>
    extractRows<T>(executor.execute(query));
  return {
    db,
    kind: "postgres",
    rows,
    ping: async (timeoutMs = 2000) => {
      await withTimeout(rows(sql`select 1`), timeoutMs, "database ping");
    },
    migrate: async () => {
      // One dedicated connection holds the advisory lock for the whole migration, so instances
      // booting together apply each migration once and the others wait, then find nothing to do.
      const single = postgres(url, { max: 1, onnotice: () => {}, connect_timeout: 10 });
      try {
        await single`select pg_advisory_lock(${MIGRATION_LOCK_KEY})`;
        await migratePostgres(drizzlePostgres(single), { migrationsFolder: MIGRATIONS_FOLDER });
        await single`select pg_advisory_unlock(${MIGRATION_LOCK_KEY})`;
      } finally {
        await single.end({ timeout: 5 });
      }
    },
    close: async () => {
      await client.end({ timeout: 5 });
    },
  };
}

async function openPglite(dataDir: string): Promise<Database> {
  const inMemory = dataDir.startsWith("memory://");
  if (!inMemory) mkdirSync(dataDir, { recursive: true });
  const client = await PGlite.create({
    dataDir: inMemory ? dataDir : resolve(dataDir),
    extensions: { pg_trgm },
  });
  const db = drizzlePglite(client, { schema }) as unknown as Db;
  const rows = <T extends Record<string, unknown>>(query: SQL, executor: Executor = db) =>
    extractRows<T>(executor.execute(query));
  let closed = false;
  return {
    db,
    kind: "pglite",
    rows,
    ping: async (timeoutMs = 2000) => {
      if (closed) throw new Error("embedded database is closed");
      await withTimeout(rows(sql`select 1`), timeoutMs, "database ping");
    },
    // PGlite is a single in-process connection: no other instance can race the migration.
    migrate: async () => {
      await migratePglite(drizzlePglite(client), { migrationsFolder: MIGRATIONS_FOLDER });
    },
    close: async () => {
      if (closed) return;
      closed = true;
      await client.close();
    },
  };
}
