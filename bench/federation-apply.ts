/**
 * `bun bench/federation-apply.ts`: CPU per stage of the federation apply path and of a publish's insert,
 * measured in-process against Postgres (BENCH_DATABASE_URL), without HTTP or worker threads in between.
 *
 * A holds BENCH_APPLY_AGENTS (20,000) seeded agents. Stages, per page of BENCH_APPLY_PAGE (500) agents:
 *   feed      A's Postgres backend CPU and this process's CPU to read and render one feed page
 *   prepare   this process's CPU to check and prepare the page (preparePage: parse, validate, hash)
 *   apply     B's Postgres backend CPU and this process's CPU to apply it (store.applyPage), one by one
 * and per publish: B's backend CPU for one insertPublished of one agent (its own transaction), for
 * BENCH_APPLY_PUBLISHES (2,000) agents.
 *
 * CPU is utime + stime from /proc of the single backend each pool holds (pool size 1), so the figures
 * hold up on a busy machine where wall clock does not. Throwaway databases are created and dropped.
 */
import { readFileSync } from "node:fs";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { testConfig } from "../src/config";
import { type Database, openDatabase } from "../src/infra/db/client";
import { createLogger } from "../src/infra/logger";
import type { Caller } from "../src/modules/auth/model";
import { agentsRepo, type NewAgent } from "../src/modules/agents/repo";
import { createChangeFeed } from "../src/modules/federation/feed";
import { type PreparedPage, type PreparedUpsert, preparePage } from "../src/modules/federation/page";
import { createSyncStore } from "../src/modules/federation/store";
import { seedAgents } from "../test/support/federation-seed";
import { capture } from "./support/process";

const ADMIN_URL = process.env.BENCH_DATABASE_URL;
if (!ADMIN_URL) throw new Error("set BENCH_DATABASE_URL (a Postgres server on this machine)");
const AGENTS = Number(process.env.BENCH_APPLY_AGENTS || 20_000);
const PAGE = Number(process.env.BENCH_APPLY_PAGE || 500);
const PUBLISHES = Number(process.env.BENCH_APPLY_PUBLISHES || 2_000);
const TICK_MS = 1000 / (Number(capture(["getconf", "CLK_TCK"])) || 100);

const ADMIN: Caller = { kind: "client", clientId: "bench", scopes: ["admin"], admin: true, tokenId: "t" };

function ticksOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]);
}

async function backendPid(database: Database) {
  const rows = await database.rows<{ pid: number }>(sql`select pg_backend_pid() as pid`);
  return Number(rows[0]!.pid);
}

const selfMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** CPU of `work` in this process and in the given backends. */
async function measure<T>(pids: number[], work: () => Promise<T>) {
  const before = pids.map(ticksOf);
  const self = selfMs();
  const value = await work();
  return {
    value,
    selfMs: selfMs() - self,
    backendMs: pids.map((pid, i) => (ticksOf(pid) - before[i]!) * TICK_MS),
  };
}

const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
const run = Date.now().toString(36);
const names = [`a2a_bench_apply_a_${run}`, `a2a_bench_apply_b_${run}`];
const urlOf = (name: string) => {
  const u = new URL(ADMIN_URL);
  u.pathname = `/${name}`;
  return u.toString();
};
for (const name of names) await admin.unsafe(`create database "${name}"`);

try {
  const [aUrl, bUrl] = names.map(urlOf) as [string, string];
  const seedStart = performance.now();
  await seedAgents({ databaseUrl: aUrl }, AGENTS, "Apply");
  console.log(`seeded ${AGENTS} agents on A in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);

  const a = await openDatabase({ url: aUrl, dataDir: "unused", poolMax: 1 });
  const b = await openDatabase({ url: bUrl, dataDir: "unused", poolMax: 1 });
  await b.migrate();
  const config = testConfig({ registryId: "apply-b" });
  const feed = createChangeFeed({
    config: testConfig({ registryId: "apply-a" }),
    database: a,
    logger: createLogger("silent"),
  });
  const store = createSyncStore({ config, database: b });
  const peerId = crypto.randomUUID();
  await b.rows(sql`insert into peers (id, name, base_url, client_id, client_secret_enc)
    values (${peerId}, 'a', 'http://127.0.0.1:1', 'c', 'x')`);
  const [sync] = await b.rows<{ id: number }>(
    sql`insert into peer_syncs (peer_id, status, from_seq, instance) values (${peerId}, 'running', 0, 'bench') returning id`,
  );
  const aPid = await backendPid(a);
  const bPid = await backendPid(b);

  const totals = { feedA: 0, feedSelf: 0, prepare: 0, applyB: 0, applySelf: 0, pages: 0, bytes: 0 };
  /** Every copy prepared: its columns serve again as the publishes measured below. */
  const copies: PreparedUpsert[] = [];
  let since = 0;
  for (;;) {
    const read = await measure([aPid], () => feed.page(ADMIN, since, PAGE));
    const prepared = await measure([], async () => preparePage(read.value.body, since, "apply-b"));
    const page: PreparedPage = prepared.value;
    copies.push(...page.upserts);
    const applied = await measure([bPid], () => store.applyPage(peerId, Number(sync!.id), page));
    totals.feedA += read.backendMs[0]!;
    totals.feedSelf += read.selfMs;
    totals.prepare += prepared.selfMs;
    totals.applyB += applied.backendMs[0]!;
    totals.applySelf += applied.selfMs;
    totals.pages++;
    totals.bytes += read.value.body.length;
    since = page.nextSince;
    if (!page.hasMore) break;
  }
  const per = (ms: number) => (ms / totals.pages).toFixed(1);
  console.log(
    `${totals.pages} pages of ${PAGE} (${(totals.bytes / totals.pages / 1024).toFixed(0)} KiB each), CPU ms per page:`,
  );
  console.log(`  feed on A:     postgres ${per(totals.feedA)}, bun ${per(totals.feedSelf)}`);
  console.log(`  prepare on B:  bun ${per(totals.prepare)}`);
  console.log(`  apply on B:    postgres ${per(totals.applyB)}, bun ${per(totals.applySelf)}`);

  // Publish inserts: one agent per transaction, as a lone publish commits. The columns are those a
  // page prepared (the same analysis a publish makes), as local agents of B.
  const repo = agentsRepo(b);
  const agents: NewAgent[] = copies.slice(0, PUBLISHES).map(({ columns }) => {
    const {
      facetKeys: _facetKeys,
      checkedAt: _checkedAt,
      createdAt: _createdAt,
      updatedAt: _updatedAt,
      ...values
    } = columns;
    return {
      values: { ...values, id: crypto.randomUUID(), owner: "bench" },
      audit: { actor: "bench", action: "agent.create", outcome: "success" },
    };
  });
  const published = await measure([bPid], async () => {
    for (const agent of agents) await b.db.transaction((tx) => repo.insertPublished([agent], tx));
  });
  console.log(
    `publish insert (1 agent per transaction, ${PUBLISHES}): postgres ${(published.backendMs[0]! / PUBLISHES).toFixed(3)} ms CPU each`,
  );
  const [size] = await b.rows<{ agents: string; versions: string }>(
    sql`select pg_size_pretty(pg_total_relation_size('agents')) as agents,
      pg_size_pretty(pg_total_relation_size('agent_versions')) as versions`,
  );
  console.log(`B table sizes: agents ${size!.agents}, agent_versions ${size!.versions}`);
  await a.close();
  await b.close();
} finally {
  for (const name of names) await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
}
