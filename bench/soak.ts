/**
 * `bun run soak` (issue 8, part 6): minutes of mixed load against one registry process over Postgres
 * and Redis, with Redis killed and restarted periodically, then a consistency check of Postgres against
 * the cache and the search index. Writes the `soak` section of BENCHMARKS.md.
 *
 * Load: a Bun load driver in this process (test/support/faults-load.ts): reads of known agents, searches,
 * publishes, updates (new versions) and deletes, each kind in its own closed loop of workers. Every
 * answer is classified; latencies go into a log-bucketed histogram. Every 10 s the registry's RSS is
 * sampled; the RSS slope is fitted by least squares over the second half (the first is warm-up: caches,
 * JIT, pools fill).
 *
 * Faults: with a redis-server of its own (the default) the soak SIGKILLs it every
 * SOAK_REDIS_RESTART_SECONDS (60) and starts it again SOAK_REDIS_DOWN_SECONDS (5) later, empty. With
 * SOAK_REDIS_URL it cannot restart that server: it kills the registry's connections instead (CLIENT KILL).
 *
 * At the end, with the load stopped:
 * - every acknowledged write is in Postgres with the bytes sent (live ones), deleted ones are deleted;
 * - every Redis copy (a2a:agent:<id>) carries the seq and card of the Postgres row (none stale);
 * - a read through the API of every live agent returns Postgres' card (L1, Redis and Postgres agree);
 * - Postgres search finds every live agent by its unique name word, and no deleted one.
 *
 * Environment: SOAK_MINUTES (10; decimals allowed), SOAK_DATABASE_URL (postgres://postgres@127.0.0.1:5432/
 * postgres: a database a2a_soak_<time> is created there and dropped at the end), SOAK_REDIS_URL (unset:
 * a redis-server on a spare port), SOAK_REDIS_RESTART_SECONDS (60), SOAK_REDIS_DOWN_SECONDS (5),
 * SOAK_READERS (12), SOAK_SEARCHERS (2), SOAK_PUBLISHERS (2), SOAK_UPDATERS (1), SOAK_DELETERS (2),
 * SOAK_MAX_AGENTS (1000: deleters keep the load's live agents at most this many, so the working set is
 * bounded and RSS should plateau), SOAK_SEED (200 agents published before the clock starts),
 * SOAK_OUTPUT (BENCHMARKS.md).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import Redis from "ioredis";
import postgres from "postgres";
import { type AckedWrite, publisherToken, sha256, verifyAcknowledged } from "../test/support/faults";
import { describeClasses, Histogram, isSuccess, type Kind, startLoad } from "../test/support/faults-load";
import { startRedisServer } from "../test/support/redis";
import { maskUrl } from "./support/backend";
import { machineInfo } from "./support/machine";
import { cleanupAll, freePort, logTail, onCleanup, sleep } from "./support/process";
import {
  freshRegistryEnv,
  clientToken,
  intSetting,
  type Registry,
  shownEnv,
  startRegistry,
} from "./support/registry";
import { fmtMs, keyValueLines, runHeaderLines, sectionMarkers, writeSection } from "./support/report";

const REPO = resolve(import.meta.dir, "..");
const KINDS: Kind[] = ["read", "search", "publish", "update", "delete"];

function readSettings() {
  const minutesText = process.env.SOAK_MINUTES || "10";
  const minutes = Number(minutesText);
  if (!Number.isFinite(minutes) || minutes <= 0 || minutes > 24 * 60)
    throw new Error(`SOAK_MINUTES: expected a number of minutes above 0 (up to 1440), got "${minutesText}"`);
  return {
    minutes,
    databaseUrl: process.env.SOAK_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres",
    redisUrl: process.env.SOAK_REDIS_URL || undefined,
    restartEveryS: intSetting("SOAK_REDIS_RESTART_SECONDS", 60, 5, 86_400, "s"),
    downS: intSetting("SOAK_REDIS_DOWN_SECONDS", 5, 1, 600, "s"),
    workers: {
      read: intSetting("SOAK_READERS", 12, 0, 1000),
      search: intSetting("SOAK_SEARCHERS", 2, 0, 1000),
      publish: intSetting("SOAK_PUBLISHERS", 2, 0, 1000),
      update: intSetting("SOAK_UPDATERS", 1, 0, 1000),
      delete: intSetting("SOAK_DELETERS", 2, 0, 1000),
    } satisfies Record<Kind, number>,
    maxLive: intSetting("SOAK_MAX_AGENTS", 1000, 10, 10_000_000),
    seed: intSetting("SOAK_SEED", 200, 1, 1_000_000),
    output: resolve(REPO, process.env.SOAK_OUTPUT || "BENCHMARKS.md"),
  };
}

function rssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/** Least-squares slope of y over x. */
export function slope(points: Array<[number, number]>): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((s, [x]) => s + x, 0) / n;
  const my = points.reduce((s, [, y]) => s + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

/** Runs `fn` over `items` with at most `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");

async function main() {
  const settings = readSettings();
  const startedAt = new Date();
  const loadBefore = loadavg()[0]!;
  const runId = `${startedAt.getTime().toString(36)}`;
  const tmp = mkdtempSync(join(tmpdir(), "a2a-soak-"));
  onCleanup(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  console.log(
    `soak: ${settings.minutes} min; load average ${loadBefore.toFixed(2)} on ${cpus().length} cores`,
  );

  // Postgres: a database of its own on SOAK_DATABASE_URL's server.
  const adminSql = postgres(settings.databaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 10 });
  const dbName = `a2a_soak_${runId}`;
  const version = (await adminSql`show server_version`)[0]?.server_version as string;
  await adminSql.unsafe(`create database "${dbName}"`);
  onCleanup(`drop database ${dbName}`, async () => {
    await adminSql.unsafe(`drop database if exists "${dbName}" with (force)`);
    await adminSql.end({ timeout: 5 });
  });
  const dbUrl = new URL(settings.databaseUrl);
  dbUrl.pathname = `/${dbName}`;
  const databaseUrl = dbUrl.toString();

  // Redis: a server of its own (restartable), or the given one (connections killed instead).
  let redisUrl: string;
  let ownRedis: Awaited<ReturnType<typeof startRedisServer>> | undefined;
  if (settings.redisUrl) redisUrl = settings.redisUrl;
  else {
    ownRedis = await startRedisServer(freePort());
    onCleanup("stop redis-server", () => ownRedis?.stop());
    redisUrl = ownRedis.url;
  }
  const redisVersion = await (async () => {
    const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await probe.connect();
    const info = await probe.info("server");
    probe.disconnect();
    return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
  })();

  const adminId = "soak-admin";
  const { env, adminSecret } = freshRegistryEnv(adminId, {
    DATABASE_URL: databaseUrl,
    REDIS_URL: redisUrl,
    MAX_AGENTS_PER_CLIENT: "10000000",
  });
  const registry: Registry = await startRegistry("soak registry", REPO, env, tmp);
  const admin = await clientToken(registry.base, adminId, adminSecret);
  const publisher = await publisherToken(registry.base, admin, "soak publisher");

  // Seed: agents the readers read from the start (the load's own publishes join them).
  const prefix = `soak${runId}`;
  const seedLoad = startLoad({
    base: registry.base,
    token: publisher.token,
    readIds: () => [],
    workers: { publish: 8 },
    prefix,
  });
  while (seedLoad.acked.length < settings.seed) await sleep(50);
  await seedLoad.stop();
  console.log(`seeded ${seedLoad.acked.length} agents`);

  let readable: string[] = seedLoad.acked.map((a) => a.id);
  const load = startLoad({
    base: registry.base,
    token: publisher.token,
    readIds: () => readable,
    workers: settings.workers,
    maxLive: settings.maxLive,
    prefix: `${prefix}l`,
    timeoutMs: 30_000,
  });
  let knownAcked = 0;

  const durationMs = settings.minutes * 60_000;
  const t0 = performance.now();
  const rss: Array<{ minute: number; kb: number; served: number }> = [];
  const served = () => KINDS.reduce((sum, kind) => sum + load.succeeded(kind) + load.failed(kind), 0);
  let restarts = 0;
  let nextRestart = settings.restartEveryS * 1000;
  let lastPrint = 0;
  while (performance.now() - t0 < durationMs) {
    await sleep(1000);
    const elapsed = performance.now() - t0;
    // Readers read what exists: the load's new agents join, deleted ones leave (a read racing a delete
    // may still see a 404, which the figures count apart).
    while (knownAcked < load.acked.length) readable.push(load.acked[knownAcked++]!.id);
    if (load.deleted.size) readable = readable.filter((id) => !load.deleted.has(id));
    if (rss.length === 0 || elapsed - rss.at(-1)!.minute * 60_000 >= 10_000)
      rss.push({ minute: elapsed / 60_000, kb: rssKb(registry.pid), served: served() });
    if (registry.exitCode() !== null)
      throw new Error(`the registry exited (${registry.exitCode()}):\n${logTail(registry.logPath)}`);
    if (elapsed >= nextRestart && elapsed + settings.downS * 1000 < durationMs - 5000) {
      restarts++;
      load.phase = `redis down #${restarts}`;
      if (ownRedis) {
        await ownRedis.kill();
        await sleep(settings.downS * 1000);
        await ownRedis.restart();
      } else {
        const direct = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
        await direct.connect();
        const list = String(await direct.client("LIST"));
        for (const line of list.split("\n")) {
          const id = /\bid=(\d+)/.exec(line)?.[1];
          if (id && /\bname=a2a-registry/.test(line)) await direct.client("KILL", "ID", id).catch(() => 0);
        }
        direct.disconnect();
        await sleep(settings.downS * 1000);
      }
      load.phase = `redis back #${restarts}`;
      nextRestart += settings.restartEveryS * 1000;
    }
    if (elapsed - lastPrint >= 30_000) {
      lastPrint = elapsed;
      const failed = KINDS.reduce((sum, kind) => sum + load.failed(kind), 0);
      console.log(
        `${(elapsed / 60_000).toFixed(1)} min: ${fmtInt(served())} requests, ${failed} failed, RSS ${(rssKb(registry.pid) / 1024).toFixed(0)} MiB, ${restarts} Redis restarts`,
      );
    }
  }
  const elapsedS = (performance.now() - t0) / 1000;
  load.phase = "drain";
  await load.stop();
  rss.push({ minute: elapsedS / 60, kb: rssKb(registry.pid), served: served() });
  console.log("load stopped; checking consistency");
  // Let writes settle and the cache catch up (write-through happens before a write returns; this only
  // covers Redis having just come back).
  await sleep(2000);

  // ---- consistency --------------------------------------------------------------------------------
  const acked: AckedWrite[] = [...seedLoad.acked, ...load.acked];
  const uncertain = load.uncertain;
  const liveWrites = [...seedLoad.acked, ...load.live()].filter((w) => !uncertain.has(w.id));
  const deletedIds = [...load.deleted].filter((id) => !uncertain.has(id));
  const presence = await verifyAcknowledged(databaseUrl, liveWrites);
  const sql = postgres(databaseUrl, { max: 4, onnotice: () => {} });
  type Row = { id: string; seq: string; card_raw: string; status: string; name: string };
  const rows = await sql<
    Row[]
  >`select id::text, seq::text, card_raw, status, name from agents where owner = ${publisher.clientId}`;
  await sql.end({ timeout: 5 });
  const byId = new Map(rows.map((r) => [r.id, r]));
  const deletedNotDeleted = deletedIds.filter((id) => byId.get(id)?.status !== "deleted");
  const acknowledgedPresent = acked.filter((a) => byId.has(a.id)).length;

  // Redis copies: every one there must be the Postgres row's seq and bytes.
  const direct = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await direct.connect();
  let cached = 0;
  let stale = 0;
  const staleIds: string[] = [];
  for (let i = 0; i < rows.length; i += 500) {
    const batch = rows.slice(i, i + 500);
    const values = await direct.mget(...batch.map((r) => `a2a:agent:${r.id}`));
    batch.forEach((row, j) => {
      const text = values[j];
      if (text == null) return;
      cached++;
      const bar = text.indexOf("|");
      const seq = text.slice(0, bar);
      const body = text.slice(bar + 1);
      const ok =
        row.status === "deleted"
          ? body === "" || seq === row.seq
          : seq === row.seq &&
            body !== "" &&
            (JSON.parse(body) as { cardRaw: string }).cardRaw === row.card_raw;
      if (!ok) {
        stale++;
        if (staleIds.length < 10) staleIds.push(row.id);
      }
    });
  }
  direct.disconnect();

  // Through the API (L1 -> Redis -> Postgres): every live agent's card is Postgres' card.
  const live = rows.filter((r) => r.status !== "deleted");
  let apiMismatch = 0;
  await pool(live, 16, async (row) => {
    const res = await fetch(`${registry.base}/v1/agents/${row.id}/card`);
    const text = await res.text();
    if (res.status !== 200 || sha256(text) !== sha256(row.card_raw)) apiMismatch++;
  });

  // Search: every live agent is found by its unique word; no deleted one is.
  const wordOf = (name: string) => name.split(" ")[0]!;
  let searchMissing = 0;
  let searchDeletedFound = 0;
  const searchMissingIds: string[] = [];
  await pool(rows, 8, async (row) => {
    const res = await fetch(
      `${registry.base}/v1/search?q=${encodeURIComponent(wordOf(row.name))}&limit=10&consistent=true`,
    );
    const body = (await res.json()) as { items?: Array<{ agent: { id: string } }> };
    const found = (body.items ?? []).some((item) => item.agent.id === row.id);
    if (row.status === "deleted" ? found : !found) {
      if (row.status === "deleted") searchDeletedFound++;
      else {
        searchMissing++;
        if (searchMissingIds.length < 10) searchMissingIds.push(row.id);
      }
    }
  });

  const unhandled = readFileSync(registry.logPath, "utf8")
    .split("\n")
    .filter((line) => /unhandled|uncaught/i.test(line));
  const exitBeforeStop = registry.exitCode();
  await registry.stop();
  const exitCode = registry.exitCode();

  // ---- figures ------------------------------------------------------------------------------------
  const all: Record<string, number> = {};
  const perKind = KINDS.map((kind) => {
    const classes = load.classes(kind);
    for (const [cls, n] of Object.entries(classes)) all[cls] = (all[cls] ?? 0) + n;
    const total = Object.values(classes).reduce((s, n) => s + n, 0);
    const h = load.latency.get(kind) ?? new Histogram();
    return { kind, total, classes, p50: h.percentile(50), p99: h.percentile(99) };
  });
  const overall = new Histogram();
  for (const h of load.latency.values()) overall.merge(h);
  const total = Object.values(all).reduce((s, n) => s + n, 0);
  const fivexx = Object.entries(all)
    .filter(([cls]) => /^5\d\d/.test(cls))
    .reduce((s, [, n]) => s + n, 0);
  const documented503 = all["503 DEPENDENCY_UNAVAILABLE"] ?? 0;
  const noAnswer = Object.entries(all)
    .filter(([cls]) => cls === "timeout" || cls.startsWith("network"))
    .reduce((s, [, n]) => s + n, 0);
  // 404s of reads are expected: readers pick from every acknowledged id, and deleters remove some.
  const failures = Object.entries(all)
    .filter(([cls]) => !isSuccess(cls) && cls !== "404 NOT_FOUND")
    .reduce((s, [, n]) => s + n, 0);
  const secondHalf = rss
    .filter((s) => s.minute >= elapsedS / 120)
    .map((s) => [s.minute, s.kb / 1024] as [number, number]);
  const slopeMiBPerMin = slope(secondHalf);
  const meanMiB = secondHalf.reduce((s, [, y]) => s + y, 0) / Math.max(1, secondHalf.length);
  const perHourPct = meanMiB > 0 ? (slopeMiBPerMin * 60 * 100) / meanMiB : 0;
  const flat = Math.abs(perHourPct) < 10;
  const loadAfter = loadavg()[0]!;
  const consistent =
    presence.missing.length === 0 &&
    presence.mismatched.length === 0 &&
    deletedNotDeleted.length === 0 &&
    stale === 0 &&
    apiMismatch === 0 &&
    searchMissing === 0 &&
    searchDeletedFound === 0;

  const status = (ok: boolean) => (ok ? "met" : "missed");
  const lines: string[] = [];
  const { begin, end } = sectionMarkers("soak");
  lines.push(begin, "## Soak: mixed load with Redis restarts (issue 8)", "");
  lines.push(
    ...runHeaderLines({
      startedAt,
      wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
      backendDescription: `Postgres ${version} (database ${dbName} on ${maskUrl(settings.databaseUrl)}, dropped at the end); Redis ${redisVersion} ${ownRedis ? `(a redis-server of the soak's own on ${redisUrl}, SIGKILLed and restarted empty)` : `at ${maskUrl(redisUrl)} (its registry connections killed, CLIENT KILL)`}`,
      command: [
        ...Object.keys(process.env)
          .filter((k) => k.startsWith("SOAK_") && process.env[k])
          .sort()
          .map((k) => `${k}=${k.endsWith("_URL") ? maskUrl(process.env[k]!) : process.env[k]}`),
        process.env.npm_lifecycle_event === "soak" ? "bun run soak" : "bun bench/soak.ts",
      ].join(" "),
      registryEnv: shownEnv(
        Object.fromEntries(
          Object.entries(env).filter(([k]) => !["PATH", "HOME", "TMPDIR", "LANG", "TZ"].includes(k)),
        ),
      ),
    }),
  );
  lines.push(
    `- The machine is shared and was loaded by other work during the run (1-minute load average ${loadBefore.toFixed(2)} at the start, ${loadAfter.toFixed(2)} at the end, on ${cpus().length} logical cores), and the load driver runs on it too: throughput and latency are lower bounds of what the registry does alone; error counts, consistency and the RSS trend do not depend on it.`,
  );
  lines.push(
    ...keyValueLines("Machine", machineInfo(REPO)),
    ...keyValueLines("Settings", [
      ["Duration", `${settings.minutes} min of load (${elapsedS.toFixed(0)} s measured)`],
      ["Workers (closed loops, no pause)", KINDS.map((k) => `${k} ${settings.workers[k]}`).join(", ")],
      ["Agents seeded before the clock", String(settings.seed)],
      [
        "Working set",
        `deleters keep at most ${settings.maxLive} of the load's agents live (plus the seeded ones), so memory should plateau once that is reached`,
      ],
      [
        "Redis faults",
        `every ${settings.restartEveryS} s, down ${settings.downS} s; ${restarts} during the run`,
      ],
    ]),
  );
  lines.push(
    "",
    "### Figures",
    "",
    "| figure | measured | target | result |",
    "| --- | --- | --- | --- |",
    `| requests served | ${fmtInt(total)} (${fmtInt(total / elapsedS)} req/s) | - | - |`,
    `| 5xx responses | ${fmtInt(fivexx)} (503 DEPENDENCY_UNAVAILABLE: ${fmtInt(documented503)}) | 0 outside documented 503s (Redis faults must cause none) | ${status(fivexx === 0)} |`,
    `| requests with no answer (timeout, reset, refused) | ${fmtInt(noAnswer)} | 0 | ${status(noAnswer === 0)} |`,
    `| failed requests, all classes (404 reads of deleted agents excluded) | ${fmtInt(failures)} | 0 | ${status(failures === 0)} |`,
    `| writes acknowledged vs present (publishes) | ${fmtInt(acked.length)} acknowledged, ${fmtInt(acknowledgedPresent)} present | equal | ${status(acknowledgedPresent === acked.length)} |`,
    `| acknowledged live agents with exactly the bytes of their last acknowledged write | ${fmtInt(presence.present - presence.mismatched.length)} of ${fmtInt(presence.acknowledged)} | all | ${status(presence.missing.length === 0 && presence.mismatched.length === 0)} |`,
    `| RSS slope over the second half (least squares) | ${slopeMiBPerMin >= 0 ? "+" : ""}${(slopeMiBPerMin * 60).toFixed(1)} MiB/h (${perHourPct >= 0 ? "+" : ""}${perHourPct.toFixed(1)} % of ${meanMiB.toFixed(0)} MiB per hour) | flat (< 10 %/h) | ${status(flat)} |`,
    `| p99 latency, all requests | ${fmtMs(overall.percentile(99))} | - | - |`,
    `| registry process | ${exitBeforeStop === null ? "alive throughout" : `exited ${exitBeforeStop}`}; SIGTERM at the end -> exit ${exitCode}; ${unhandled.length} unhandled errors/rejections in its log | alive, exit 0, none | ${status(exitBeforeStop === null && exitCode === 0 && unhandled.length === 0)} |`,
    `| consistency: Postgres vs cache vs search | ${consistent ? "consistent" : "INCONSISTENT (below)"} | consistent | ${status(consistent)} |`,
  );
  lines.push(
    "",
    "### By request kind",
    "",
    "| kind | requests | req/s | p50 | p99 | answers by class |",
    "| --- | ---: | ---: | ---: | ---: | --- |",
    ...perKind.map(
      (k) =>
        `| ${k.kind} | ${fmtInt(k.total)} | ${fmtInt(k.total / elapsedS)} | ${fmtMs(k.p50)} | ${fmtMs(k.p99)} | ${describeClasses(k.classes)} |`,
    ),
  );
  const phases = new Map<string, Record<string, number>>();
  for (const kind of KINDS)
    for (const [at, byClass] of load.counts.get(kind) ?? [])
      for (const [cls, n] of byClass)
        if (!isSuccess(cls) && !(kind === "read" && cls === "404 NOT_FOUND")) {
          const entry = phases.get(`${kind} in "${at}"`) ?? {};
          entry[cls] = (entry[cls] ?? 0) + n;
          phases.set(`${kind} in "${at}"`, entry);
        }
  if (phases.size) {
    lines.push("", "### Failures by phase", "", "| kind and phase | classes |", "| --- | --- |");
    for (const [label, classes] of phases) lines.push(`| ${label} | ${describeClasses(classes)} |`);
  }
  lines.push(
    "",
    "### RSS over time",
    "",
    "Sampled every 10 s; one row a minute here (the slope uses every sample of the second half).",
    "",
    "| minute | RSS | requests so far |",
    "| ---: | ---: | ---: |",
  );
  let lastMinute = -1;
  for (const sample of rss) {
    const minute = Math.floor(sample.minute);
    if (minute === lastMinute && sample !== rss.at(-1)) continue;
    lastMinute = minute;
    lines.push(
      `| ${sample.minute.toFixed(1)} | ${(sample.kb / 1024).toFixed(0)} MiB | ${fmtInt(sample.served)} |`,
    );
  }
  lines.push(
    "",
    "### Consistency check (load stopped)",
    "",
    "| check | result |",
    "| --- | --- |",
    `| agents of the soak's publisher in Postgres | ${fmtInt(rows.length)} (${fmtInt(live.length)} live, ${fmtInt(rows.length - live.length)} deleted) |`,
    `| acknowledged live writes missing / with other bytes | ${presence.missing.length} / ${presence.mismatched.length} |`,
    `| acknowledged deletes not deleted | ${deletedNotDeleted.length} |`,
    `| writes with an unknown outcome (no answer), not asserted | ${uncertain.size} |`,
    `| Redis copies checked against Postgres (seq and card bytes) | ${fmtInt(cached)} present, ${stale} stale${staleIds.length ? ` (${staleIds.join(", ")})` : ""} |`,
    `| live agents read through the API (L1/Redis/Postgres) with a card other than Postgres' | ${apiMismatch} of ${fmtInt(live.length)} |`,
    `| live agents Postgres search does not find by name | ${searchMissing} of ${fmtInt(live.length)}${searchMissingIds.length ? ` (${searchMissingIds.join(", ")})` : ""} |`,
    `| deleted agents search still finds | ${searchDeletedFound} of ${fmtInt(rows.length - live.length)} |`,
  );
  lines.push("", end);
  writeSection(settings.output, "soak", lines.join("\n"));
  console.log(
    lines
      .filter((l) => l.startsWith("| "))
      .slice(0, 60)
      .join("\n"),
  );
  console.log(`\nwrote the soak section of ${settings.output}`);
  return (
    consistent && fivexx === 0 && noAnswer === 0 && failures === 0 && exitCode === 0 && unhandled.length === 0
  );
}

let ok = false;
try {
  ok = await main();
} catch (error) {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
} finally {
  await cleanupAll();
}
process.exit(ok ? 0 : 1);
