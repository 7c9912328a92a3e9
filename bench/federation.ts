/**
 * `bun run bench:federation`: the federation benchmark of issue 5.
 *
 * (1) Initial replication: registry A holds BENCH_FED_AGENTS (100k) public agents, seeded straight into
 *     its database (test/support/federation-seed.ts: valid canonical cards with their real hashes,
 *     facets and search documents, as a publish stores them); registry B is empty. B adds A as a peer
 *     (POST /v1/peers) and the clock runs until B's peer status says every agent is copied and the run
 *     succeeded. Target: < 30 s.
 * (2) Steady-state lag, FEDERATION_INTERVAL_SECONDS=1: for BENCH_FED_LAG_SECONDS, an operation on A
 *     every BENCH_FED_OP_INTERVAL_MS (4 publishes, then a delete of an earlier one); the lag of each is the
 *     time from A's response to the moment B serves the change (the copy readable, or gone). Target: < 2 s.
 *
 * Backends: embedded PGlite (a temp dir per registry), and with BENCH_DATABASE_URL also Postgres (two
 * databases of their own on that server, created and dropped); BENCH_FED_BACKENDS=embedded,postgres picks.
 * Writes the `federation` section of BENCHMARKS.md between its markers (one block per backend run) and
 * leaves the rest of the file as it is. Everything listens on 127.0.0.1.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SQL } from "bun";
import { copyId } from "../src/modules/federation/page";
import { seedAgents } from "../test/support/federation-seed";
import { maskUrl } from "./support/backend";
import { type CpuSample, cpuMeter } from "./support/cpu";
import { machineInfo } from "./support/machine";
import {
  cleanupAll,
  freePort,
  logTail,
  type Managed,
  onCleanup,
  sleep,
  startManaged,
} from "./support/process";

const REPO = resolve(import.meta.dir, "..");
const OUTPUT = resolve(REPO, process.env.BENCH_OUTPUT || "BENCHMARKS.md");
const BEGIN = "<!-- bench:begin federation -->";
const END = "<!-- bench:end federation -->";
const REPLICATION_TARGET_S = 30;
const LAG_TARGET_MS = 2000;

function intSetting(name: string, fallback: number, min: number, max: number) {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(`${name}: expected an integer from ${min} to ${max}, got "${text}"`);
  return value;
}

const settings = {
  agents: intSetting("BENCH_FED_AGENTS", 100_000, 100, 5_000_000),
  lagSeconds: intSetting("BENCH_FED_LAG_SECONDS", 30, 5, 3600),
  opIntervalMs: intSetting("BENCH_FED_OP_INTERVAL_MS", 250, 20, 60_000),
  pageSize: intSetting("BENCH_FED_PAGE_SIZE", 500, 1, 1000),
};

const ADMIN_ID = "bench-admin";
const ADMIN_SECRET = `bench-${crypto.randomUUID()}`;
const SECRET_KEY = `bench-secret-${crypto.randomUUID()}`;
const HOST = "127.0.0.1";

function percentile(sorted: number[], p: number) {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}
const fmtS = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const fmtMs = (ms: number) => `${Math.round(ms)} ms`;
const fmtInt = (n: number) => Math.round(n).toLocaleString("en-US");

type BackendKind = "embedded" | "postgres";

async function prepareDatabases(kind: BackendKind, runId: string, tmp: string) {
  const url = process.env.BENCH_DATABASE_URL;
  if (kind === "embedded") {
    return {
      kind: "embedded" as const,
      description: "embedded PGlite, one temporary DATA_DIR per registry, no Redis",
      a: { dataDir: join(tmp, "embedded-a-data") } as { dataDir?: string; databaseUrl?: string },
      b: { dataDir: join(tmp, "embedded-b-data") } as { dataDir?: string; databaseUrl?: string },
      envOf: (t: { dataDir?: string; databaseUrl?: string }) => ({ DATA_DIR: t.dataDir! }),
    };
  }
  if (!url) throw new Error("the postgres backend needs BENCH_DATABASE_URL");
  const admin = new SQL(url);
  const names = [`a2a_bench_fed_a_${runId}`, `a2a_bench_fed_b_${runId}`];
  for (const name of names) await admin.unsafe(`create database "${name}"`);
  onCleanup("drop the bench databases", async () => {
    for (const name of names) await admin.unsafe(`drop database if exists "${name}" with (force)`);
    await admin.close();
  });
  const urlOf = (name: string) => {
    const u = new URL(url);
    u.pathname = `/${name}`;
    return u.toString();
  };
  const version = ((await admin`show server_version`) as Array<{ server_version: string }>)[0]
    ?.server_version;
  return {
    kind: "postgres" as const,
    description: `PostgreSQL ${version} at ${maskUrl(url)}, one database per registry, no Redis`,
    a: { databaseUrl: urlOf(names[0]!) } as { dataDir?: string; databaseUrl?: string },
    b: { databaseUrl: urlOf(names[1]!) } as { dataDir?: string; databaseUrl?: string },
    envOf: (t: { dataDir?: string; databaseUrl?: string }) => ({ DATABASE_URL: t.databaseUrl! }),
  };
}

async function startRegistry(name: string, registryId: string, env: Record<string, string>, tmp: string) {
  const port = freePort();
  const base = `http://${HOST}:${port}`;
  const fullEnv = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? tmpdir(),
    HOST,
    PORT: String(port),
    REGISTRY_ID: registryId,
    REGISTRY_BASE_URL: base,
    SECRET_KEY,
    ADMIN_CLIENT_ID: ADMIN_ID,
    ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    DEBUG: "true",
    LOG_LEVEL: "warn",
    WEB_CONCURRENCY: "1",
    // The seeded agents' URLs are made up: liveness probes would only add load to what is measured.
    PROBE_ENABLED: "false",
    ...Object.fromEntries(
      ["TOKEN", "READ", "SEARCH", "WRITE", "ADMIN"].map((c) => [`RATE_LIMIT_${c}`, "100000000/1s"]),
    ),
    ...env,
  };
  const managed = startManaged({
    name,
    cmd: [process.execPath, "src/index.ts"],
    cwd: REPO,
    env: fullEnv,
    logPath: join(tmp, `${name}.log`),
  });
  const deadline = Date.now() + 180_000;
  for (;;) {
    if (managed.exitCode() !== null)
      throw new Error(`${name} exited during boot:\n${logTail(managed.logPath)}`);
    try {
      if ((await fetch(`${base}/health`)).ok) break;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${name} did not boot:\n${logTail(managed.logPath)}`);
    await sleep(100);
  }
  const registry: Managed & { base: string; registryId: string } = Object.assign(managed, {
    base,
    registryId,
  });
  return { registry, env: fullEnv };
}

async function token(base: string, id: string, secret: string) {
  const res = await fetch(`${base}/oauth/token`, {
    method: "POST",
    headers: { authorization: `Basic ${btoa(`${id}:${secret}`)}` },
    body: new URLSearchParams({ grant_type: "client_credentials" }),
  });
  if (!res.ok) throw new Error(`token: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function call<T>(
  base: string,
  path: string,
  bearer: string,
  init: RequestInit & { json?: unknown } = {},
) {
  const { json, ...rest } = init;
  const res = await fetch(`${base}${path}`, {
    ...rest,
    headers: { authorization: `Bearer ${bearer}`, ...(json ? { "content-type": "application/json" } : {}) },
    body: json ? JSON.stringify(json) : rest.body,
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
}

const weather = JSON.parse(
  readFileSync(join(REPO, "../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
) as Record<string, unknown>;

type Pending = { kind: "publish" | "delete"; copy: string; ackedAt: number };

type Lags = { all: number[]; publish: number[]; delete: number[] };

type BackendResult = {
  kind: BackendKind;
  description: string;
  seedMs: number;
  replicationMs: number;
  /** CPU spent during the replication by each registry process and its database's backends. */
  cpu: { a: CpuSample; b: CpuSample };
  runMs: number;
  pages: number;
  rssAfterReplication: { a: number; b: number };
  lags: Lags;
  unseen: number;
  rss: { a: number; b: number };
  federationEnv: Record<string, string>;
};

async function runBackend(kind: BackendKind, runId: string, tmp: string): Promise<BackendResult> {
  const backend = await prepareDatabases(kind, runId, tmp);
  console.log(`\n[${kind}] ${backend.description}; ${fmtInt(settings.agents)} agents`);

  const seedStart = performance.now();
  await seedAgents(backend.a, settings.agents, "Bench");
  const seedMs = performance.now() - seedStart;
  console.log(`[${kind}] seeded A with ${fmtInt(settings.agents)} agents in ${fmtS(seedMs)}`);

  const a = await startRegistry(
    `${kind}-registry-a`,
    "bench-a",
    { ...backend.envOf(backend.a), ENABLE_FEDERATION: "false" },
    tmp,
  );
  const b = await startRegistry(
    `${kind}-registry-b`,
    "bench-b",
    {
      ...backend.envOf(backend.b),
      ENABLE_FEDERATION: "true",
      FEDERATION_INTERVAL_SECONDS: "1",
      FEDERATION_PAGE_SIZE: String(settings.pageSize),
    },
    tmp,
  );
  const A = a.registry;
  const B = b.registry;
  const aAdmin = await token(A.base, ADMIN_ID, ADMIN_SECRET);
  const bAdmin = await token(B.base, ADMIN_ID, ADMIN_SECRET);
  const puller = await call<{ client_id: string; client_secret: string }>(A.base, "/v1/clients", aAdmin, {
    method: "POST",
    json: { name: "bench puller", scopes: ["agents:read"] },
  });

  // (1) Initial replication, with the CPU each side spends on it (from /proc: the registry process, all
  // its threads, and the Postgres backends of its database; PGlite runs inside the registry process).
  const meterA = cpuMeter(A.pid, backend.a.databaseUrl);
  const meterB = cpuMeter(B.pid, backend.b.databaseUrl);
  const replicate = async () => {
    const replicationStart = performance.now();
    const added = await call<{ id: string }>(B.base, "/v1/peers", bAdmin, {
      method: "POST",
      json: {
        name: "bench-a",
        baseUrl: A.base,
        clientId: puller.body.client_id,
        clientSecret: puller.body.client_secret,
      },
    });
    if (added.status !== 201) throw new Error(`add peer: ${added.status} ${JSON.stringify(added.body)}`);
    const peerId = added.body.id;
    let lastPrint = 0;
    for (;;) {
      const status = (
        await call<{ agentsSynced: number; lastStatus: string }>(B.base, `/v1/peers/${peerId}`, bAdmin)
      ).body;
      const elapsed = performance.now() - replicationStart;
      if (status.agentsSynced >= settings.agents && status.lastStatus === "success") break;
      if (elapsed - lastPrint > 5000) {
        lastPrint = elapsed;
        console.log(
          `[${kind}]   ${fmtS(elapsed)}: ${fmtInt(status.agentsSynced)} copied (${status.lastStatus})`,
        );
      }
      if (elapsed > 30 * 60_000) throw new Error(`replication did not finish:\n${logTail(B.logPath)}`);
      await sleep(100);
    }
    return { peerId, replicationMs: performance.now() - replicationStart };
  };
  const replication = replicate();
  const [measuredA, measuredB] = await Promise.all([
    meterA.measure(() => replication),
    meterB.measure(() => replication),
  ]);
  await Promise.all([meterA.close(), meterB.close()]);
  const { peerId, replicationMs } = measuredA.value;
  const cpu = { a: measuredA.cpu, b: measuredB.cpu };
  const runs = (
    await call<{ items: Array<{ pages: number; added: number; startedAt: string; finishedAt: string }> }>(
      B.base,
      `/v1/peers/${peerId}/syncs?limit=100`,
      bAdmin,
    )
  ).body.items.filter((run) => run.added > 0);
  const runMs = runs.reduce((sum, run) => sum + Date.parse(run.finishedAt) - Date.parse(run.startedAt), 0);
  const pages = runs.reduce((sum, run) => sum + run.pages, 0);
  console.log(
    `[${kind}] replicated ${fmtInt(settings.agents)} agents in ${fmtS(replicationMs)} (${fmtInt((settings.agents / replicationMs) * 1000)}/s; sync runs ${fmtS(runMs)}, ${pages} pages)`,
  );
  console.log(`[${kind}] CPU per page: ${cpuPerPage(cpu, pages)}`);
  const rssAfterReplication = { a: A.peakRssKb(), b: B.peakRssKb() };

  // Spot check: a sample of copies is readable on B with A's card bytes.
  const sample = await call<{ items: Array<{ id: string }> }>(A.base, "/v1/agents?limit=20", aAdmin);
  for (const agent of sample.body.items) {
    const [origin, copy] = await Promise.all([
      fetch(`${A.base}/v1/agents/${agent.id}/card`).then((r) => r.text()),
      fetch(`${B.base}/v1/agents/${copyId("bench-a", agent.id)}/card`).then((r) => r.text()),
    ]);
    if (origin !== copy) throw new Error(`copy of ${agent.id} differs from its origin`);
  }

  // (2) Steady-state lag at a 1 s interval.
  console.log(
    `[${kind}] steady state: an operation on A every ${settings.opIntervalMs} ms for ${settings.lagSeconds} s`,
  );
  const pending = new Map<string, Pending>();
  const lags: Lags = { all: [], publish: [], delete: [] };
  const published: string[] = [];
  let done = false;
  const poller = (async () => {
    while (!done || pending.size > 0) {
      await Promise.all(
        [...pending.entries()].map(async ([key, op]) => {
          const res = await fetch(`${B.base}/v1/agents/${op.copy}`, {
            headers: { authorization: `Bearer ${bAdmin}` },
          });
          await res.arrayBuffer();
          const seen = op.kind === "publish" ? res.status === 200 : res.status === 404;
          if (seen && pending.delete(key)) lags[op.kind].push(performance.now() - op.ackedAt);
        }),
      );
      await sleep(20);
    }
  })();
  const lagStart = performance.now();
  let ops = 0;
  while (performance.now() - lagStart < settings.lagSeconds * 1000) {
    const tick = performance.now();
    ops++;
    if (ops % 5 === 0 && published.length > 0) {
      const id = published.shift()!;
      const res = await fetch(`${A.base}/v1/agents/${id}`, {
        method: "DELETE",
        headers: { authorization: `Bearer ${aAdmin}` },
      });
      if (res.status !== 204) throw new Error(`delete: ${res.status}`);
      pending.set(`d:${id}`, { kind: "delete", copy: copyId("bench-a", id), ackedAt: performance.now() });
    } else {
      const card = {
        ...weather,
        name: `Steady ${ops}`,
        url: `https://steady-${runId}-${kind}-${ops}.example.com/a2a`,
      };
      const res = await call<{ id: string }>(A.base, "/v1/agents", aAdmin, {
        method: "POST",
        json: { card },
      });
      if (res.status !== 201) throw new Error(`publish: ${res.status}`);
      published.push(res.body.id);
      pending.set(`p:${res.body.id}`, {
        kind: "publish",
        copy: copyId("bench-a", res.body.id),
        ackedAt: performance.now(),
      });
    }
    await sleep(Math.max(0, settings.opIntervalMs - (performance.now() - tick)));
  }
  done = true;
  const drainDeadline = performance.now() + 60_000;
  while (pending.size > 0 && performance.now() < drainDeadline) await sleep(50);
  const unseen = pending.size;
  pending.clear();
  await poller;
  const sorted = (values: number[]) => [...values].sort((x, y) => x - y);
  lags.all = sorted([...lags.publish, ...lags.delete]);
  lags.publish = sorted(lags.publish);
  lags.delete = sorted(lags.delete);
  console.log(
    `[${kind}] lag over ${lags.all.length} operations: p50 ${fmtMs(percentile(lags.all, 50))}, p95 ${fmtMs(percentile(lags.all, 95))}, max ${fmtMs(lags.all.at(-1)!)}`,
  );
  const rss = { a: A.peakRssKb(), b: B.peakRssKb() };
  await B.stop();
  await A.stop();
  return {
    kind,
    description: backend.description,
    seedMs,
    replicationMs,
    cpu,
    runMs,
    pages,
    rssAfterReplication,
    lags,
    unseen,
    rss,
    federationEnv: Object.fromEntries(
      Object.entries(b.env).filter(([k]) => k.startsWith("FEDERATION_") || k === "ENABLE_FEDERATION"),
    ),
  };
}

const mib = (kb: number) => `${(kb / 1024).toFixed(0)} MiB`;

/** CPU per applied page by side, and what all of it would take on this machine's cores at best. */
function cpuPerPage(cpu: BackendResult["cpu"], pages: number) {
  const per = (ms: number | undefined) => (ms === undefined ? "n/a" : `${Math.round(ms / pages)} ms`);
  const total = cpu.a.registryMs + cpu.b.registryMs + (cpu.a.postgresMs ?? 0) + (cpu.b.postgresMs ?? 0);
  const cores = navigator.hardwareConcurrency || 1;
  return [
    `A registry ${per(cpu.a.registryMs)}`,
    `A postgres ${per(cpu.a.postgresMs)}`,
    `B registry ${per(cpu.b.registryMs)}`,
    `B postgres ${per(cpu.b.postgresMs)}`,
    `total ${per(total)} (${fmtS(total)} of CPU: ${fmtS(total / cores)} on ${cores} cores if nothing waited)`,
  ].join(", ");
}

function renderBackend(r: BackendResult): string[] {
  return [
    `### ${r.kind}`,
    "",
    `${r.description}.`,
    "",
    "| initial replication | |",
    "| --- | --- |",
    `| agents on A | ${fmtInt(settings.agents)} (seeded straight into the database in ${fmtS(r.seedMs)}; not measured) |`,
    `| from POST /v1/peers to B reporting all copied | ${fmtS(r.replicationMs)} |`,
    `| sync runs (peer_syncs rows) | ${fmtS(r.runMs)}, ${r.pages} pages of up to ${settings.pageSize} |`,
    `| throughput | ${fmtInt((settings.agents / r.replicationMs) * 1000)} agents/s |`,
    `| CPU per page (from /proc; PGlite's work counts as its registry's) | ${cpuPerPage(r.cpu, r.pages)} |`,
    `| peak RSS after replication | A ${mib(r.rssAfterReplication.a)}, B ${mib(r.rssAfterReplication.b)} |`,
    "",
    `Steady state (FEDERATION_INTERVAL_SECONDS=1): an operation on A every ${settings.opIntervalMs} ms for ${settings.lagSeconds} s`,
    "(four publishes, then a delete of an earlier agent); lag is from A's response to B serving the change",
    `(copy readable, or 404). Not seen on B within 60 s: ${r.unseen}. Peak RSS over the run: A ${mib(r.rss.a)}, B ${mib(r.rss.b)}.`,
    "",
    "| operations | n | p50 | p95 | p99 | max |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...(["all", "publish", "delete"] as const).map((label) => {
      const values = r.lags[label];
      return `| ${label} | ${values.length} | ${fmtMs(percentile(values, 50))} | ${fmtMs(percentile(values, 95))} | ${fmtMs(percentile(values, 99))} | ${fmtMs(values.at(-1) ?? Number.NaN)} |`;
    }),
    "",
  ];
}

async function main() {
  const runId = new Date()
    .toISOString()
    .replace(/[-:T.Z]/g, "")
    .slice(0, 14);
  const tmp = mkdtempSync(join(tmpdir(), "a2a-bench-fed-"));
  onCleanup(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  const startedAt = new Date();
  const loadBefore = loadavg()[0]!;
  const kinds = (
    process.env.BENCH_FED_BACKENDS || (process.env.BENCH_DATABASE_URL ? "embedded,postgres" : "embedded")
  )
    .split(",")
    .map((k) => k.trim()) as BackendKind[];
  for (const kind of kinds)
    if (kind !== "embedded" && kind !== "postgres")
      throw new Error(`BENCH_FED_BACKENDS: unknown backend "${kind}" (embedded, postgres)`);
  const results: BackendResult[] = [];
  for (const kind of kinds) results.push(await runBackend(kind, runId, tmp));
  const wallSeconds = (Date.now() - startedAt.getTime()) / 1000;

  const lines = [
    BEGIN,
    "## Federation",
    "",
    `Generated by \`bun run bench:federation\` (bench/federation.ts), run ${startedAt.toISOString()} (${wallSeconds.toFixed(0)} s wall).`,
    "Registry A serves its change feed; registry B pulls it through its sync worker thread. Both run on this",
    "machine with the bench (they share its cores). Targets of the federation issue:",
    "",
    "| backend | target | measured | result |",
    "| --- | --- | --- | --- |",
    ...results.flatMap((r) => [
      `| ${r.kind} | ${fmtInt(settings.agents)} agents replicated A -> empty B < ${REPLICATION_TARGET_S} s | ${fmtS(r.replicationMs)} | ${r.replicationMs < REPLICATION_TARGET_S * 1000 ? "met" : "missed"} |`,
      `| ${r.kind} | steady-state lag < 2 s at a 1 s interval (p95) | ${fmtMs(percentile(r.lags.all, 95))} | ${percentile(r.lags.all, 95) < LAG_TARGET_MS && r.unseen === 0 ? "met" : "missed"} |`,
    ]),
    "",
    ...results.flatMap(renderBackend),
    "### Raw settings",
    "",
    "```sh",
    Object.entries({
      ...results[0]?.federationEnv,
      BENCH_FED_AGENTS: settings.agents,
      BENCH_FED_LAG_SECONDS: settings.lagSeconds,
      BENCH_FED_OP_INTERVAL_MS: settings.opIntervalMs,
      BENCH_FED_PAGE_SIZE: settings.pageSize,
      BENCH_FED_BACKENDS: kinds.join(","),
    })
      .map(([k, v]) => `${k}=${v}`)
      .join(" \\\n  "),
    "```",
    "",
    "### Machine",
    "",
    "| | |",
    "| --- | --- |",
    ...machineInfo(REPO)
      .filter(([k]) => k !== "wrk")
      .map(([k, v]) => `| ${k} | ${v} |`),
    `| Load average (1 min) at start / end | ${loadBefore.toFixed(2)} / ${loadavg()[0]!.toFixed(2)} |`,
    "",
    END,
  ];
  writeSection(lines.join("\n"));
  console.log(`\nwrote the federation section of ${OUTPUT}`);
}

/** Replaces the federation section between its markers (or appends it); the rest of the file stays. */
function writeSection(section: string) {
  const text = existsSync(OUTPUT) ? readFileSync(OUTPUT, "utf8") : "# Benchmarks\n";
  const from = text.indexOf(BEGIN);
  const to = text.indexOf(END, from);
  const next =
    from >= 0 && to > from
      ? `${text.slice(0, from)}${section}${text.slice(to + END.length)}`
      : `${text.trimEnd()}\n\n${section}\n`;
  writeFileSync(OUTPUT, next);
}

try {
  await main();
} catch (error) {
  console.error(error instanceof Error ? error.message : error);
  process.exitCode = 1;
} finally {
  await cleanupAll();
}
