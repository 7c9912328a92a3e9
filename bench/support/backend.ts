import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisClient, SQL } from "bun";
import { onCleanup } from "./process";

/** The section key in BENCHMARKS.md: one section per backend, so runs on each backend sit side by side. */
export type BackendKind = "embedded" | "postgres" | "postgres+redis";

export type Backend = {
  kind: BackendKind;
  /** One line for the console and the report. */
  description: string;
  /** Variables handed to every registry process of the run. */
  env: Record<string, string>;
  versions: { postgres?: string; redis?: string };
};

/** Hides `user:password@` so a URL can be printed and written to BENCHMARKS.md. */
export function maskUrl(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1***@");
}

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

function warnIfRemote(name: string, url: URL) {
  if (!LOOPBACK.has(url.hostname))
    console.warn(`warning: ${name} points at ${url.hostname}, not loopback: network latency is measured too`);
}

/**
 * Embedded: PGlite in a fresh temp DATA_DIR, no Redis. With BENCH_DATABASE_URL: a database of its own
 * (`a2a_bench_<time>`) created from that URL and dropped at the end, so a run never reads or leaves data
 * in a database someone uses. With BENCH_REDIS_URL: the db number in that URL, flushed before and after;
 * db 0 is refused because it is where everything else lives by default.
 *
 * `keepDatabase` (Postgres only): use the database of that name instead, created when missing and kept
 * at the end, so a later run can find what this one seeded (the search bench's BENCH_SEARCH_KEEP_DATABASE).
 */
export async function prepareBackend(
  runId: string,
  options: { keepDatabase?: string } = {},
): Promise<Backend & { reused: boolean }> {
  const databaseUrl = process.env.BENCH_DATABASE_URL;
  const redisUrl = process.env.BENCH_REDIS_URL;
  if (!databaseUrl) {
    if (redisUrl)
      throw new Error("BENCH_REDIS_URL needs BENCH_DATABASE_URL as well (Redis without Postgres)");
    const dataDir = mkdtempSync(join(tmpdir(), "a2a-bench-pglite-"));
    onCleanup(`remove ${dataDir}`, () => rmSync(dataDir, { recursive: true, force: true }));
    return {
      kind: "embedded",
      description: `embedded: PGlite in a temporary DATA_DIR (${dataDir}), no Redis (in-process cache and limiter)`,
      env: { DATA_DIR: dataDir },
      versions: {},
      reused: false,
    };
  }

  const adminUrl = new URL(databaseUrl);
  if (!/^postgres(ql)?:$/.test(adminUrl.protocol))
    throw new Error("BENCH_DATABASE_URL must be a postgres:// URL");
  warnIfRemote("BENCH_DATABASE_URL", adminUrl);
  const kept = options.keepDatabase;
  if (kept !== undefined && !/^a2a_bench_\w+$/.test(kept))
    throw new Error(`a kept bench database is named a2a_bench_<letters, digits, _>, not "${kept}"`);
  const dbName = kept ?? `a2a_bench_${runId}`;
  const admin = new SQL(databaseUrl);
  let postgresVersion: string;
  let reused = false;
  try {
    const rows = (await admin`show server_version`) as Array<{ server_version: string }>;
    postgresVersion = rows[0]?.server_version ?? "unknown";
    reused =
      kept !== undefined && (await admin`select 1 from pg_database where datname = ${kept}`).length > 0;
    if (!reused) await admin.unsafe(`create database "${dbName}"`);
  } catch (error) {
    await admin.close();
    throw new Error(
      `cannot create the bench database from ${maskUrl(databaseUrl)}: ${error instanceof Error ? error.message : error}`,
    );
  }
  if (kept === undefined)
    onCleanup(`drop database ${dbName}`, async () => {
      try {
        // FORCE ends connections a killed registry may have left behind (Postgres 13+).
        await admin.unsafe(`drop database if exists "${dbName}" with (force)`);
      } finally {
        await admin.close();
      }
    });
  else await admin.close();
  const runUrl = new URL(databaseUrl);
  runUrl.pathname = `/${dbName}`;
  const env: Record<string, string> = { DATABASE_URL: runUrl.toString() };
  const versions: Backend["versions"] = { postgres: postgresVersion };
  let description =
    kept === undefined
      ? `postgres: database ${dbName} created for this run on ${maskUrl(databaseUrl)} (dropped at the end)`
      : `postgres: database ${dbName} on ${maskUrl(databaseUrl)} (${reused ? "reused from an earlier run" : "created"}, kept at the end)`;

  if (!redisUrl) {
    return {
      kind: "postgres",
      description: `${description}; no Redis (in-process cache and limiter)`,
      env,
      versions,
      reused,
    };
  }
  const parsedRedis = new URL(redisUrl);
  if (!/^rediss?:$/.test(parsedRedis.protocol)) throw new Error("BENCH_REDIS_URL must be a redis:// URL");
  warnIfRemote("BENCH_REDIS_URL", parsedRedis);
  const dbNumber = Number(parsedRedis.pathname.replace(/^\//, "") || "0");
  if (!Number.isInteger(dbNumber) || dbNumber < 1)
    throw new Error(
      "BENCH_REDIS_URL must name a dedicated database number other than 0, e.g. redis://127.0.0.1:6379/14: " +
        "the bench flushes that database before and after the run",
    );
  const redis = new RedisClient(redisUrl);
  try {
    const info = String(await redis.send("INFO", ["server"]));
    versions.redis = /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
    await redis.send("FLUSHDB", []);
  } catch (error) {
    redis.close();
    throw new Error(`cannot use ${maskUrl(redisUrl)}: ${error instanceof Error ? error.message : error}`);
  }
  onCleanup(`flush redis db ${dbNumber}`, async () => {
    try {
      await redis.send("FLUSHDB", []);
    } finally {
      redis.close();
    }
  });
  env.REDIS_URL = redisUrl;
  description += `; Redis ${maskUrl(redisUrl)} (db ${dbNumber}, flushed before and after)`;
  return { kind: "postgres+redis", description, env, versions, reused };
}
