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
 * Backend: embedded PGlite (a temp dir each) by default; with BENCH_DATABASE_URL, two databases of their
 * own on that server (created and dropped). Writes the `federation` section of BENCHMARKS.md between its
 * markers and leaves the rest of the file as it is. Everything listens on 127.0.0.1.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { SQL } from "bun";
import { copyId } from "../src/modules/federation/page";
import { seedAgents } from "../test/support/federation-seed";
import { maskUrl } from "./support/backend";
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

async function prepareDatabases(runId: string, tmp: string) {
  const url = process.env.BENCH_DATABASE_URL;
  if (!url) {
    return {
      kind: "embedded" as const,
      description: "embedded PGlite, one temporary DATA_DIR per registry, no Redis",
      a: { dataDir: join(tmp, "a-data") },
      b: { dataDir: join(tmp, "b-data") },
      envOf: (t: { dataDir?: string; databaseUrl?: string }) => ({ DATA_DIR: t.dataDir! }),
    };
  }
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
    a: { databaseUrl: urlOf(names[0]!) },
    b: { databaseUrl: urlOf(names[1]!) },
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

async function main() {
  const runId = new Date()
    .toISOString()
    .replace(/[-:T.Z]/g, "")
    .slice(0, 14);
  const tmp = mkdtempSync(join(tmpdir(), "a2a-bench-fed-"));
  onCleanup(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));
  const startedAt = new Date();
  const loadBefore = loadavg()[0]!;
  const backend = await prepareDatabases(runId, tmp);
  console.log(`federation bench: ${backend.description}; ${fmtInt(settings.agents)} agents`);

  const seedStart = performance.now();
  await seedAgents(backend.a, settings.agents, "Bench");
  const seedMs = performance.now() - seedStart;
  console.log(`seeded A with ${fmtInt(settings.agents)} agents in ${fmtS(seedMs)}`);

  const a = await startRegistry(
    "registry-a",
    "bench-a",
    { ...backend.envOf(backend.a), ENABLE_FEDERATION: "false" },
    tmp,
  );
  const b = await startRegistry(
    "registry-b",
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

  // (1) Initial replication.
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
  let status: { agentsSynced: number; lastStatus: string; lastSeq: number } | undefined;
  let lastPrint = 0;
  for (;;) {
    status = (await call<typeof status>(B.base, `/v1/peers/${peerId}`, bAdmin)).body;
    const elapsed = performance.now() - replicationStart;
    if (status!.agentsSynced >= settings.agents && status!.lastStatus === "success") break;
    if (elapsed - lastPrint > 5000) {
      lastPrint = elapsed;
      console.log(`  ${fmtS(elapsed)}: ${fmtInt(status!.agentsSynced)} copied (${status!.lastStatus})`);
    }
    if (elapsed > 30 * 60_000) throw new Error(`replication did not finish:\n${logTail(B.logPath)}`);
    await sleep(100);
  }
  const replicationMs = performance.now() - replicationStart;
  const runs = (
    await call<{
      items: Array<{ pages: number; added: number; startedAt: string; finishedAt: string; status: string }>;
    }>(B.base, `/v1/peers/${peerId}/syncs?limit=10`, bAdmin)
  ).body.items;
  const firstRun = runs.at(-1)!;
  const runMs = Date.parse(firstRun.finishedAt) - Date.parse(firstRun.startedAt);
  console.log(
    `replicated ${fmtInt(settings.agents)} agents in ${fmtS(replicationMs)} (${fmtInt((settings.agents / replicationMs) * 1000)}/s; the sync run itself ${fmtS(runMs)}, ${firstRun.pages} pages)`,
  );
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
    `steady state: an operation on A every ${settings.opIntervalMs} ms for ${settings.lagSeconds} s`,
  );
  const pending = new Map<string, Pending>();
  const lags: { publish: number[]; delete: number[] } = { publish: [], delete: [] };
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
        url: `https://steady-${runId}-${ops}.example.com/a2a`,
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
  await poller;
  const all = [...lags.publish, ...lags.delete].sort((x, y) => x - y);
  const publishLags = [...lags.publish].sort((x, y) => x - y);
  const deleteLags = [...lags.delete].sort((x, y) => x - y);
  console.log(
    `lag over ${all.length} operations: p50 ${fmtMs(percentile(all, 50))}, p95 ${fmtMs(percentile(all, 95))}, max ${fmtMs(all.at(-1)!)}`,
  );
  const rss = { a: A.peakRssKb(), b: B.peakRssKb() };
  const wallSeconds = (Date.now() - startedAt.getTime()) / 1000;

  const lines = [
    BEGIN,
    "## Federation",
    "",
    `Generated by \`bun run bench:federation\` (bench/federation.ts), run ${startedAt.toISOString()} (${wallSeconds.toFixed(0)} s wall). ${backend.description}.`,
    "Registry A serves its change feed; registry B pulls it through its sync worker thread. Both run on this",
    "machine with the bench (they share the cores).",
    "",
    "| target | measured | result |",
    "| --- | --- | --- |",
    `| ${fmtInt(settings.agents)} agents replicated A -> empty B < ${REPLICATION_TARGET_S} s | ${fmtS(replicationMs)} | ${replicationMs < REPLICATION_TARGET_S * 1000 ? "met" : "missed"} |`,
    `| steady-state lag < 2 s at a 1 s interval (p95) | ${fmtMs(percentile(all, 95))} | ${percentile(all, 95) < LAG_TARGET_MS ? "met" : "missed"} |`,
    "",
    "### Initial replication",
    "",
    "| | |",
    "| --- | --- |",
    `| agents on A | ${fmtInt(settings.agents)} (seeded straight into the database in ${fmtS(seedMs)}; not measured) |`,
    `| from POST /v1/peers to B reporting all copied | ${fmtS(replicationMs)} |`,
    `| the sync run itself (peer_syncs row) | ${fmtS(runMs)}, ${firstRun.pages} pages of ${settings.pageSize} |`,
    `| throughput | ${fmtInt((settings.agents / replicationMs) * 1000)} agents/s |`,
    `| peak RSS after replication | A ${(rssAfterReplication.a / 1024).toFixed(0)} MiB, B ${(rssAfterReplication.b / 1024).toFixed(0)} MiB |`,
    "",
    "### Steady-state lag (FEDERATION_INTERVAL_SECONDS=1)",
    "",
    `An operation on A every ${settings.opIntervalMs} ms for ${settings.lagSeconds} s (four publishes, then a delete of an`,
    "earlier agent); lag is from A's response to B serving the change (copy readable, or 404).",
    "",
    "| operations | n | p50 | p95 | p99 | max |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...(
      [
        ["all", all],
        ["publish", publishLags],
        ["delete", deleteLags],
      ] as const
    ).map(
      ([label, values]) =>
        `| ${label} | ${values.length} | ${fmtMs(percentile(values, 50))} | ${fmtMs(percentile(values, 95))} | ${fmtMs(percentile(values, 99))} | ${fmtMs(values.at(-1) ?? Number.NaN)} |`,
    ),
    "",
    `Not seen on B within 60 s: ${pending.size}. Peak RSS over the whole run: A ${(rss.a / 1024).toFixed(0)} MiB, B ${(rss.b / 1024).toFixed(0)} MiB.`,
    "",
    "### Raw settings",
    "",
    "```sh",
    Object.entries({
      ...Object.fromEntries(
        Object.entries(b.env).filter(([k]) => k.startsWith("FEDERATION_") || k === "ENABLE_FEDERATION"),
      ),
      BENCH_FED_AGENTS: settings.agents,
      BENCH_FED_LAG_SECONDS: settings.lagSeconds,
      BENCH_FED_OP_INTERVAL_MS: settings.opIntervalMs,
      BENCH_FED_PAGE_SIZE: settings.pageSize,
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
  console.log(`wrote the federation section of ${OUTPUT}`);
  await B.stop();
  await A.stop();
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
