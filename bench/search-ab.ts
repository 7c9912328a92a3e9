/**
 * A/B of the Postgres search backend on a seeded database: the query mix's paths, kind by kind, through
 * two versions of `src/infra/search/pg.ts` in this process, alternating path by path (the order swapped
 * each round), each on its own connection. For each kind: Postgres CPU per search (utime + stime of
 * that side's backend, /proc) and this process's CPU per search (process.cpuUsage: statement building,
 * driver, counting), plus wall-time percentiles. On a shared machine the CPU columns are the ones to
 * compare; alternating keeps both sides under the same load.
 *
 *   BENCH_SEARCH_KEEP_DATABASE=a2a_bench_kept BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
 *     bun run bench:search                       # seeds the database once and keeps it
 *   BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/a2a_bench_kept bun bench/search-ab.ts
 *
 * Environment: BENCH_DATABASE_URL (the seeded database: both sides unless told otherwise),
 * SEARCH_AB_A / SEARCH_AB_B (checkout directories whose pg.ts each side runs; this checkout when unset,
 * e.g. a `git worktree` of the commit to compare with), SEARCH_AB_A_DATABASE / SEARCH_AB_B_DATABASE
 * (another database for a side, e.g. a copy migrated to the older schema), SEARCH_AB_A_LIMITS /
 * SEARCH_AB_B_LIMITS (JSON merged into DEFAULT_SEARCH_LIMITS), SEARCH_AB_KINDS (comma-separated, all
 * kinds by default), SEARCH_AB_PATHS (30 per kind), SEARCH_AB_ROUNDS (2), SEARCH_AB_POOL (connections per
 * side, 1; the registry's pool is larger, so statements a search sends at once run at once there).
 * Searches ask for counts with consistent=true, so none is answered from remembered counts.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { sql } from "drizzle-orm";
import { openDatabase } from "../src/infra/db/client";
import type { SearchBackend } from "../src/infra/search/types";
import { ANONYMOUS, type Caller } from "../src/modules/auth/model";
import { agentIdOf, generateAgent } from "./search-corpus";
import { backendQueryOf } from "./search-explain";
import { buildQueryMix, type MixPath, QUERY_KINDS } from "./search-queries";
import type { SeededCorpus } from "./search-seed";
import { capture } from "./support/process";

const url = process.env.BENCH_DATABASE_URL;
if (!url)
  throw new Error("BENCH_DATABASE_URL: a database seeded by bench:search (BENCH_SEARCH_KEEP_DATABASE)");
const databaseUrl: string = url;
const env = (name: string) => process.env[`SEARCH_AB_${name}`] || undefined;
const kinds = env("KINDS")?.split(",") ?? [...QUERY_KINDS];
const perKind = Number(env("PATHS") ?? 30);
const rounds = Number(env("ROUNDS") ?? 2);
const pool = Number(env("POOL") ?? 1);
const TICK_MS = 1000 / (Number(capture(["getconf", "CLK_TCK"])) || 100);
const here = resolve(import.meta.dir, "..");

type Side = {
  label: string;
  search: SearchBackend;
  /** The side's Postgres backends (its pool's connections, found by application_name). */
  pids: () => Promise<number[]>;
  close: () => Promise<void>;
};

async function openSide(label: string): Promise<Side> {
  const root = resolve(env(label) ?? here);
  const { createPostgresSearch, DEFAULT_SEARCH_LIMITS } = await import(`${root}/src/infra/search/pg.ts`);
  const application = `search_ab_${label}`;
  const sideUrl = new URL(env(`${label}_DATABASE`) ?? databaseUrl);
  sideUrl.searchParams.set("application_name", application);
  const database = await openDatabase({ url: sideUrl.toString(), dataDir: "", poolMax: pool });
  const limits = { ...DEFAULT_SEARCH_LIMITS, ...JSON.parse(env(`${label}_LIMITS`) ?? "{}") };
  return {
    label: `${label} (${root})`,
    search: createPostgresSearch(database, limits),
    pids: async () =>
      (
        await database.rows<{ pid: number }>(
          sql`select pid from pg_stat_activity where application_name = ${application}`,
        )
      ).map((row) => Number(row.pid)),
    close: () => database.close(),
  };
}

/** The bench's mix for a corpus of this size, generated once: 100k cards leave garbage behind. */
async function mixFor(agents: number) {
  const file = join(tmpdir(), `a2a-search-ab-mix-${agents}.json`);
  if (!existsSync(file)) {
    const corpus: SeededCorpus = { names: [], visibility: [], owners: [], privateOf: new Map() };
    for (let i = 0; i < agents; i++) {
      const agent = generateAgent(i);
      corpus.names[i] = agent.name;
      corpus.visibility[i] = agent.visibility;
      corpus.owners[i] = agent.owner;
      if (agent.visibility === "private")
        corpus.privateOf.set(agent.owner, (corpus.privateOf.get(agent.owner) ?? 0) + 1);
    }
    const tokenClient = [...corpus.privateOf].sort((a, b) => b[1] - a[1])[0]![0];
    writeFileSync(file, JSON.stringify({ tokenClient, paths: buildQueryMix(4000, corpus, agentIdOf).paths }));
  }
  return JSON.parse(readFileSync(file, "utf8")) as { tokenClient: string; paths: MixPath[] };
}

const ticks = (pids: number[]) =>
  pids.reduce((sum, pid) => {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return sum + (Number(fields[11]) + Number(fields[12])) * TICK_MS;
  }, 0);
const percentile = (values: number[], p: number) => {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? 0;
};

const a = await openSide("A");
const b = await openSide("B");
try {
  const counted = await openDatabase({ url, dataDir: "", poolMax: 1 });
  const [{ n }] = (await counted.rows<{ n: number }>(sql`select count(*)::int as n from agents`)) as [
    { n: number },
  ];
  await counted.close();
  const { tokenClient, paths } = await mixFor(Number(n));
  const client: Caller = {
    kind: "client",
    clientId: tokenClient,
    scopes: ["agents:read"],
    admin: false,
    tokenId: "ab",
  };
  const queryOf = (path: MixPath) => ({
    ...backendQueryOf(path.path, path.auth ? client : ANONYMOUS),
    consistent: true,
  });
  console.log(`A: ${a.label}\nB: ${b.label}\n${paths.length} paths, ${perKind} per kind, ${rounds} rounds`);
  console.log(
    "| kind | searches | A Postgres ms | B Postgres ms | A registry ms | B registry ms | A p50 | B p50 | A p95 | B p95 |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
  const all = { a: { pg: 0, self: 0 }, b: { pg: 0, self: 0 }, searches: 0 };
  for (const kind of kinds) {
    const chosen = paths.filter((path) => path.kind === kind).slice(0, perKind);
    if (chosen.length === 0) continue;
    // One unmeasured pass each: plans, caches and estimates warm on both sides alike.
    for (const side of [a, b]) for (const path of chosen) await side.search.search(queryOf(path));
    // After that pass: a pool opens its connections as searches first need them.
    const backends = new Map<Side, number[]>([
      [a, await a.pids()],
      [b, await b.pids()],
    ]);
    const totals = new Map<Side, { pg: number; self: number; wall: number[] }>([
      [a, { pg: 0, self: 0, wall: [] }],
      [b, { pg: 0, self: 0, wall: [] }],
    ]);
    for (let round = 0; round < rounds; round++)
      for (const path of chosen)
        for (const side of round % 2 === 0 ? [a, b] : [b, a]) {
          const total = totals.get(side)!;
          const pg = ticks(backends.get(side)!);
          const self = process.cpuUsage();
          const started = performance.now();
          await side.search.search(queryOf(path));
          total.wall.push(performance.now() - started);
          const used = process.cpuUsage(self);
          total.self += (used.user + used.system) / 1000;
          total.pg += ticks(backends.get(side)!) - pg;
        }
    const searches = chosen.length * rounds;
    const [ta, tb] = [totals.get(a)!, totals.get(b)!];
    const ms = (value: number) => (value / searches).toFixed(2);
    console.log(
      `| ${kind} | ${searches} | ${ms(ta.pg)} | ${ms(tb.pg)} | ${ms(ta.self)} | ${ms(tb.self)} | ${percentile(ta.wall, 0.5).toFixed(1)} | ${percentile(tb.wall, 0.5).toFixed(1)} | ${percentile(ta.wall, 0.95).toFixed(1)} | ${percentile(tb.wall, 0.95).toFixed(1)} |`,
    );
    all.a.pg += ta.pg;
    all.a.self += ta.self;
    all.b.pg += tb.pg;
    all.b.self += tb.self;
    all.searches += searches;
  }
  const ms = (value: number) => (value / all.searches).toFixed(2);
  console.log(
    `| all kinds | ${all.searches} | ${ms(all.a.pg)} | ${ms(all.b.pg)} | ${ms(all.a.self)} | ${ms(all.b.self)} | | | | |`,
  );
} finally {
  await a.close();
  await b.close();
}
