/**
 * `bun run bench`: the read-path benchmark suite of issue 3, in one run.
 *
 * Seeds agents through the public API, then measures with wrk, one scenario after another, each for the
 * same duration, connections and threads: (a) a bare Bun.serve (the ceiling), (b) cached GET
 * /v1/agents/:id over every seeded id, (i) the same at half that rate for its p99, (c) the same with
 * CACHE_ENABLED=false, (d) the card, (e) the list, (f) If-None-Match 304s, (g) publish, (h) /health.
 * Writes the section of BENCHMARKS.md for the backend it ran on (see bench/support/report.ts).
 *
 * Environment: BENCH_DATABASE_URL / BENCH_REDIS_URL (unset: embedded PGlite, no Redis), BENCH_AGENTS
 * (10000), BENCH_DURATION (10 s), BENCH_CONNECTIONS (64), BENCH_THREADS (2), BENCH_WARMUP (3 s),
 * BENCH_SEED_CONCURRENCY (32), BENCH_WEB_CONCURRENCY (1), BENCH_CPU_PROF (unset; 1 profiles process A),
 * BENCH_OUTPUT (BENCHMARKS.md). Everything listens on and talks to 127.0.0.1 only.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { maskUrl, prepareBackend } from "./support/backend";
import { cardTemplates, publishBody } from "./support/cards";
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
import {
  fmtMs,
  fmtRps,
  type RunReport,
  type ScenarioResult,
  type TargetCheck,
  writeBenchmarks,
} from "./support/report";
import { runWrk, type WrkOptions, type WrkResult } from "./support/wrk";

const REPO = resolve(import.meta.dir, "..");
const HOST = "127.0.0.1";
/** High enough that no bucket ever empties, so the limiter runs on every request but never answers 429. */
const RAISED_RATE_LIMIT = "100000000/1s";
const RATE_LIMIT_VARIABLES = ["TOKEN", "READ", "SEARCH", "WRITE", "ADMIN"].map((c) => `RATE_LIMIT_${c}`);

function intSetting(name: string, fallback: number, min: number, max: number, unit = ""): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const value = Number(unit ? text.replace(new RegExp(`${unit}$`), "") : text);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(
      `${name}: expected an integer from ${min} to ${max}${unit ? ` (optionally with "${unit}")` : ""}, got "${text}"`,
    );
  return value;
}

function readSettings() {
  const threads = intSetting("BENCH_THREADS", 2, 1, 64);
  return {
    agents: intSetting("BENCH_AGENTS", 10_000, 1, 10_000_000),
    durationS: intSetting("BENCH_DURATION", 10, 1, 3600, "s"),
    warmupS: intSetting("BENCH_WARMUP", 3, 1, 600, "s"),
    connections: intSetting("BENCH_CONNECTIONS", 64, threads, 100_000),
    threads,
    seedConcurrency: intSetting("BENCH_SEED_CONCURRENCY", 32, 1, 1024),
    webConcurrency: intSetting("BENCH_WEB_CONCURRENCY", 1, 1, 256),
    cpuProfile: ["1", "true"].includes(process.env.BENCH_CPU_PROF ?? ""),
    output: resolve(REPO, process.env.BENCH_OUTPUT || "BENCHMARKS.md"),
  };
}

/** The command as typed, with the BENCH_* variables that were set (URLs masked), for the report. */
function commandLine(): string {
  const vars = Object.keys(process.env)
    .filter((k) => k.startsWith("BENCH_") && process.env[k])
    .sort()
    .map((k) => `${k}=${k.endsWith("_URL") ? maskUrl(process.env[k]!) : process.env[k]}`);
  const command = process.env.npm_lifecycle_event === "bench" ? "bun run bench" : "bun bench/run.ts";
  return [...vars, command].join(" ");
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight; rejects on the first failure. */
async function pool(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < count) {
      const i = next++;
      try {
        await task(i);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

// ------------------------------------------------------------------------------------------ registry

type Registry = Managed & { port: number; base: string };

async function waitReady(managed: Managed, url: string, timeoutMs = 90_000): Promise<unknown> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (managed.exitCode() !== null)
      throw new Error(
        `${managed.name} exited (code ${managed.exitCode()}) during boot:\n${logTail(managed.logPath)}`,
      );
    try {
      const response = await fetch(url);
      if (response.ok) return response.json().catch(() => undefined);
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline)
      throw new Error(`${managed.name} not ready after ${timeoutMs} ms:\n${logTail(managed.logPath)}`);
    await sleep(100);
  }
}

async function startRegistry(
  name: string,
  env: Record<string, string>,
  tmp: string,
  extraBunFlags: string[] = [],
): Promise<{ registry: Registry; readiness: unknown }> {
  const port = Number(env.PORT);
  const managed = startManaged({
    name,
    cmd: [process.execPath, ...extraBunFlags, "src/index.ts"],
    cwd: REPO,
    env,
    logPath: join(tmp, `${name.replace(/\W+/g, "-")}.log`),
  });
  const base = `http://${HOST}:${port}`;
  const readiness = await waitReady(managed, `${base}/health/ready`);
  return { registry: Object.assign(managed, { port, base }), readiness };
}

async function adminToken(base: string, clientId: string, secret: string): Promise<string> {
  const response = await fetch(`${base}/oauth/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials",
  });
  if (!response.ok) throw new Error(`token request failed: ${response.status} ${await response.text()}`);
  return ((await response.json()) as { access_token: string }).access_token;
}

/** One request shaped like a scenario's, checked for the status wrk will count as success. */
async function probe(url: string, init: RequestInit, expected: number, what: string) {
  const response = await fetch(url, init);
  const body = await response.text();
  if (response.status !== expected)
    throw new Error(`${what}: expected ${expected}, got ${response.status}: ${body.slice(0, 500)}`);
}

/** Cache and limiter counters by series (`name{labels}`); empty when this build exports none. */
type Counters = Map<string, number>;
const COUNTER_PATTERN =
  /^(a2a_registry_(?:cache_requests_total|rate_limited_total|rate_limiter_fallbacks_total)\{[^}]*\}) (\S+)$/;

async function scrapeCounters(base: string): Promise<Counters> {
  const counters: Counters = new Map();
  try {
    for (const line of (await (await fetch(`${base}/metrics`)).text()).split("\n")) {
      const match = COUNTER_PATTERN.exec(line);
      if (match) counters.set(match[1]!, Number(match[2]));
    }
  } catch {
    // a scrape failure only loses the counter line of the report
  }
  return counters;
}

function counterDelta(after: Counters, before: Counters): Counters {
  const delta: Counters = new Map();
  for (const [series, value] of after) {
    const change = value - (before.get(series) ?? 0);
    if (change !== 0) delta.set(series, change);
  }
  return delta;
}

const sumOf = (counters: Counters, name: string) =>
  [...counters].filter(([series]) => series.startsWith(`${name}{`)).reduce((sum, [, n]) => sum + n, 0);

/** "l1 hit 803 / miss 9,034 (8% hit)" per cache layer, plus limiter counts when any moved. */
function describeCounters(delta: Counters): string {
  const layers = new Map<string, Map<string, number>>();
  const other: string[] = [];
  for (const [series, n] of delta) {
    const layer = /layer="([^"]*)"/.exec(series)?.[1];
    const result = /result="([^"]*)"/.exec(series)?.[1];
    if (series.startsWith("a2a_registry_cache_requests_total{") && layer && result) {
      const byResult = layers.get(layer) ?? new Map<string, number>();
      byResult.set(result, (byResult.get(result) ?? 0) + n);
      layers.set(layer, byResult);
    } else other.push(`${series} +${n.toLocaleString("en-US")}`);
  }
  const parts = [...layers].map(([layer, byResult]) => {
    const total = [...byResult.values()].reduce((a, b) => a + b, 0);
    const hits = byResult.get("hit") ?? 0;
    const counts = [...byResult].map(([r, n]) => `${r} ${n.toLocaleString("en-US")}`).join(" / ");
    return `${layer} ${counts} (${total ? Math.round((hits / total) * 100) : 0}% hit)`;
  });
  return [...parts, ...other].join("; ") || "no cache or limiter counter moved";
}

// ---------------------------------------------------------------------------------------------- main

async function main() {
  if (!Bun.which("wrk")) {
    console.error("wrk is missing: apt-get install -y wrk");
    process.exit(1);
  }
  const settings = readSettings();
  const startedAt = new Date();
  const runId = `${startedAt.toISOString().replace(/[-:T]/g, "").slice(0, 14)}_${process.pid}`;
  const tmp = mkdtempSync(join(tmpdir(), "a2a-bench-"));
  onCleanup(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));

  const backend = await prepareBackend(runId);
  console.log(`backend: ${backend.description}`);
  const machine = machineInfo(REPO);
  for (const [k, v] of machine) console.log(`${k}: ${v}`);
  if (backend.versions.postgres) machine.push(["PostgreSQL", backend.versions.postgres]);
  if (backend.versions.redis) machine.push(["Redis", backend.versions.redis]);

  const templates = cardTemplates();
  // The largest fixture for the publish scenario: the most realistic per-request validation cost.
  const publishTemplate = templates.reduce((a, b) => (b.text.length > a.text.length ? b : a));
  const adminId = "bench-admin";
  const adminSecret = Buffer.from(crypto.getRandomValues(new Uint8Array(24))).toString("base64url");
  const secretKey = Buffer.from(crypto.getRandomValues(new Uint8Array(36))).toString("base64url");

  // A clean environment, not process.env: a DATABASE_URL or REDIS_URL in the caller's shell must not
  // silently change the backend being measured.
  const inherited = Object.fromEntries(
    ["PATH", "HOME", "TMPDIR", "LANG", "TZ"].flatMap((k) => (process.env[k] ? [[k, process.env[k]!]] : [])),
  );
  // One port and base URL for every registry process of the run, like instances behind one address:
  // the base URL names the registry inside each record (source.registry), so it must not vary.
  const registryPort = freePort();
  const registryEnv: Record<string, string> = {
    HOST,
    PORT: String(registryPort),
    REGISTRY_BASE_URL: `http://${HOST}:${registryPort}`,
    SECRET_KEY: secretKey,
    // Access logs off: the per-request line is written at info; warnings and errors still reach the log.
    LOG_LEVEL: "warn",
    ADMIN_CLIENT_ID: adminId,
    ADMIN_CLIENT_SECRET: adminSecret,
    ACCESS_TOKEN_EXPIRE_MINUTES: "240",
    WEB_CONCURRENCY: String(settings.webConcurrency),
    // The federation worker is not what is measured: keep its background syncs out of the figures.
    ENABLE_FEDERATION: "false",
    // The seeded agents' URLs are made up: liveness probes would only add outbound load to the figures.
    PROBE_ENABLED: "false",
    ...Object.fromEntries(RATE_LIMIT_VARIABLES.map((k) => [k, RAISED_RATE_LIMIT])),
    ...backend.env,
  };
  const shownEnv = Object.fromEntries(
    Object.entries({ ...registryEnv, CACHE_ENABLED: "true | false (process B)" }).map(([k, v]) => [
      k,
      k === "SECRET_KEY" || k === "ADMIN_CLIENT_SECRET" ? "<random>" : k.endsWith("_URL") ? maskUrl(v) : v,
    ]),
  );

  const scenarios: ScenarioResult[] = [];
  const extras: string[] = [];
  const rss: Array<[string, number]> = [];
  const observations: string[] = [];
  const wrkBase = {
    durationS: settings.durationS,
    connections: settings.connections,
    threads: settings.threads,
  };
  const threadsArg = { threads: settings.threads };
  /** What each registry scenario did to the cache and limiter counters (deltas around the wrk run). */
  const counters: Array<[string, Counters]> = [];
  const measure = async (
    key: string,
    label: string,
    request: string,
    options: Omit<WrkOptions, "durationS" | "connections" | "threads">,
    registryBase?: string,
  ) => {
    process.stdout.write(`(${key}) ${label} ... `);
    const before = registryBase ? await scrapeCounters(registryBase) : undefined;
    const result = await runWrk({ ...wrkBase, ...options });
    if (registryBase && before)
      counters.push([key, counterDelta(await scrapeCounters(registryBase), before)]);
    scenarios.push({ key, label, request, result });
    const errors = result.statusErrors + result.socketErrors;
    console.log(
      `${fmtRps(result.rps)} req/s, p50 ${fmtMs(result.p50Ms)}, p99 ${fmtMs(result.p99Ms)}, errors ${errors}`,
    );
    return result;
  };
  const warmUp = (url: string, script: string, args: WrkOptions["args"]) =>
    runWrk({ ...wrkBase, durationS: settings.warmupS, url, script, args });

  // (a) The ceiling. Ids of the same shape as real ones, so wrk sends byte-for-byte comparable requests.
  const fakeIdsPath = join(tmp, "baseline-ids.txt");
  writeFileSync(
    fakeIdsPath,
    `${Array.from({ length: settings.agents }, () => Bun.randomUUIDv7()).join("\n")}\n`,
  );
  const startBaseline = async (run: number) => {
    const port = freePort();
    const copies = Array.from({ length: settings.webConcurrency }, (_, i) =>
      startManaged({
        name: `baseline ${i + 1}`,
        cmd: [process.execPath, "bench/baseline.ts"],
        cwd: REPO,
        env: { ...inherited, HOST, PORT: String(port) },
        logPath: join(tmp, `baseline-${run}-${i + 1}.log`),
      }),
    );
    const base = `http://${HOST}:${port}`;
    for (const copy of copies) await waitReady(copy, `${base}/health`);
    await warmUp(base, "get.lua", { ids: fakeIdsPath, ...threadsArg });
    return { base, copies, stop: () => Promise.all(copies.map((copy) => copy.stop())) };
  };
  {
    const baseline = await startBaseline(1);
    await measure("a", "bare Bun.serve constant JSON (ceiling)", "GET /v1/agents/:id", {
      url: baseline.base,
      script: "get.lua",
      args: { ids: fakeIdsPath, ...threadsArg },
    });
    await baseline.stop();
    rss.push(["bare Bun.serve (ceiling)", baseline.copies.reduce((sum, c) => sum + c.peakRssKb(), 0)]);
  }

  // Process A, cache on: seeding, (b), (i), (f).
  const idsPath = join(tmp, "ids.txt");
  const ids: string[] = [];
  let cachedGet: WrkResult;
  let halfRate: { targetRps: number; delayMs: number; result: WrkResult; ceiling: WrkResult };
  let notModified: WrkResult;
  const etagsPath = join(tmp, "etags.txt");
  // Outside the checkout (and outside the run's temp dir, which is removed): a profile is kept for reading.
  const profileDir = join(tmpdir(), `a2a-bench-profile-${runId}`);
  {
    const flags = settings.cpuProfile ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${profileDir}`] : [];
    if (settings.cpuProfile) mkdirSync(profileDir, { recursive: true });
    const { registry, readiness } = await startRegistry(
      "registry A (cache on)",
      { ...inherited, ...registryEnv, CACHE_ENABLED: "true" },
      tmp,
      flags,
    );
    const cacheCheck = (readiness as { checks?: { cache?: { status?: string } } })?.checks?.cache?.status;
    observations.push(`Readiness cache check at boot: ${cacheCheck ?? "not reported"}.`);
    const token = await adminToken(registry.base, adminId, adminSecret);
    const authJson = { authorization: `Bearer ${token}`, "content-type": "application/json" };

    process.stdout.write(`seeding ${settings.agents} agents (${settings.seedConcurrency} concurrent) ... `);
    const seedStart = performance.now();
    const seeded: string[] = new Array(settings.agents);
    // The ETag of each record as the publish response states it, for (f); checked against reads later.
    const etags: string[] = new Array(settings.agents);
    await pool(settings.agents, settings.seedConcurrency, async (i) => {
      const template = templates[i % templates.length]!;
      const response = await fetch(`${registry.base}/v1/agents`, {
        method: "POST",
        headers: authJson,
        body: publishBody(template.text, `s${runId.replace("_", "-")}-${i}`),
      });
      const text = await response.text();
      if (response.status !== 201)
        throw new Error(`seeding agent ${i} (${template.name}): ${response.status} ${text.slice(0, 500)}`);
      const id = (JSON.parse(text) as { id: string }).id;
      seeded[i] = id;
      etags[i] = `${id}\t${response.headers.get("etag")}`;
    });
    const seedSeconds = (performance.now() - seedStart) / 1000;
    ids.push(...seeded);
    writeFileSync(idsPath, `${ids.join("\n")}\n`);
    writeFileSync(etagsPath, `${etags.join("\n")}\n`);
    const seedRate = settings.agents / seedSeconds;
    console.log(`${seedSeconds.toFixed(1)} s, ${fmtRps(seedRate)} agents/s`);
    extras.push(
      `Seeding: ${settings.agents.toLocaleString("en-US")} agents through \`POST /v1/agents\` in ${seedSeconds.toFixed(1)} s = **${fmtRps(seedRate)} agents/s** (fetch from Bun, ${settings.seedConcurrency} concurrent, admin token; cards rotate over ${templates.map((t) => t.name).join(", ")}).`,
    );

    // No read sweep to "fill the cache": publish writes through, and an L1 entry lives only
    // CACHE_L1_TTL_MS, so the short wrk pass right before the measurement is what warms it (and the JIT).
    const getArgs = { ids: idsPath, ...threadsArg };
    await probe(`${registry.base}/v1/agents/${ids[0]}`, {}, 200, "cached read probe");
    await warmUp(registry.base, "get.lua", getArgs);
    cachedGet = await measure(
      "b",
      "cached read",
      "GET /v1/agents/:id",
      { url: registry.base, script: "get.lua", args: getArgs },
      registry.base,
    );

    // (i) wrk has no rate option: each connection pauses between requests. A connection's cycle is its
    // pause plus the response time, so a short calibration pass (not recorded) measures the cycle at
    // the first guess and the pause is shortened by the excess before the measured run.
    const targetRps = cachedGet.rps / 2;
    const cycleMs = (settings.connections / targetRps) * 1000;
    process.stdout.write(`(i) cached read at half rate (${fmtRps(targetRps)} req/s target) ... `);
    const calibration = await runWrk({
      ...wrkBase,
      durationS: settings.warmupS,
      url: registry.base,
      script: "paced.lua",
      args: { ...getArgs, delay_ms: cycleMs.toFixed(4) },
    });
    const measuredCycleMs = (settings.connections / calibration.rps) * 1000;
    const delayMs = Math.max(0, cycleMs - (measuredCycleMs - cycleMs));
    const before = await scrapeCounters(registry.base);
    const paced = await runWrk({
      ...wrkBase,
      url: registry.base,
      script: "paced.lua",
      args: { ...getArgs, delay_ms: delayMs.toFixed(4) },
    });
    counters.push(["i", counterDelta(await scrapeCounters(registry.base), before)]);
    console.log(`${fmtRps(paced.rps)} req/s achieved, p50 ${fmtMs(paced.p50Ms)}, p99 ${fmtMs(paced.p99Ms)}`);

    // (f) on the process that ran (b), right after it: the 304 path is compared with the cached read
    // under the same cache contents and heap, not across processes. The ETags are those the publish
    // responses stated; a sample read must agree, or every id is read again so (f) sends what this
    // process answers (a mismatch is reported, not hidden).
    const etagLines = readFileSync(etagsPath, "utf8").trimEnd().split("\n");
    const sample = Array.from({ length: Math.min(64, ids.length) }, (_, k) =>
      Math.floor((k * ids.length) / Math.min(64, ids.length)),
    );
    let mismatched = 0;
    for (const i of sample) {
      const response = await fetch(`${registry.base}/v1/agents/${ids[i]}`);
      await response.arrayBuffer();
      if (`${ids[i]}\t${response.headers.get("etag")}` !== etagLines[i]) mismatched++;
    }
    if (mismatched > 0) {
      observations.push(
        `${mismatched} of ${sample.length} sampled ETags read back differed from those in the publish responses: the ETags for (f) were read again.`,
      );
      await pool(ids.length, settings.seedConcurrency, async (i) => {
        const response = await fetch(`${registry.base}/v1/agents/${ids[i]}`);
        await response.arrayBuffer();
        const etag = response.headers.get("etag");
        if (response.status !== 200 || !etag) throw new Error(`ETag read of ${ids[i]}: ${response.status}`);
        etagLines[i] = `${ids[i]}\t${etag}`;
      });
      writeFileSync(etagsPath, `${etagLines.join("\n")}\n`);
    }
    const firstEtag = etagLines[0]!.split("\t")[1]!;
    await probe(
      `${registry.base}/v1/agents/${ids[0]}`,
      { headers: { "if-none-match": firstEtag } },
      304,
      "304 probe",
    );
    notModified = await measure(
      "f",
      "If-None-Match, 304",
      "GET /v1/agents/:id + If-None-Match",
      {
        url: registry.base,
        script: "not-modified.lua",
        args: { etags: etagsPath, ...threadsArg },
      },
      registry.base,
    );
    await registry.stop();
    rss.push(["registry A, cache on (seeding, b, i, f)", registry.peakRssKb()]);

    // The same pacing against the ceiling: the p99 this machine (wrk included) gives at that rate with
    // no registry work at all, so (i)'s tail can be read against it.
    process.stdout.write("(i) the ceiling paced the same way ... ");
    const baseline = await startBaseline(2);
    const pacedCeiling = await runWrk({
      ...wrkBase,
      url: baseline.base,
      script: "paced.lua",
      args: { ids: fakeIdsPath, ...threadsArg, delay_ms: delayMs.toFixed(4) },
    });
    await baseline.stop();
    console.log(
      `${fmtRps(pacedCeiling.rps)} req/s, p50 ${fmtMs(pacedCeiling.p50Ms)}, p99 ${fmtMs(pacedCeiling.p99Ms)}`,
    );
    halfRate = { targetRps, delayMs, result: paced, ceiling: pacedCeiling };
  }

  // Process B, CACHE_ENABLED=false on the same data: (c). PGlite allows one process per data dir.
  {
    const { registry } = await startRegistry(
      "registry B (cache off)",
      { ...inherited, ...registryEnv, CACHE_ENABLED: "false" },
      tmp,
    );
    const getArgs = { ids: idsPath, ...threadsArg };
    await probe(`${registry.base}/v1/agents/${ids[0]}`, {}, 200, "uncached read probe");
    await warmUp(registry.base, "get.lua", getArgs);
    await measure(
      "c",
      "read, CACHE_ENABLED=false",
      "GET /v1/agents/:id",
      { url: registry.base, script: "get.lua", args: getArgs },
      registry.base,
    );
    await registry.stop();
    rss.push(["registry B, cache off (c)", registry.peakRssKb()]);
  }

  // Process C, cache on: (d), (e), (g), (h).
  let publish: WrkResult;
  let publishCpu: CpuSample;
  {
    const { registry } = await startRegistry(
      "registry C (cache on)",
      { ...inherited, ...registryEnv, CACHE_ENABLED: "true" },
      tmp,
    );
    const token = await adminToken(registry.base, adminId, adminSecret);
    const getArgs = { ids: idsPath, ...threadsArg };
    // C starts with an empty L1. With Redis it fills from there in the warm-up pass; without, each
    // miss is a database read, and the short pass covered only a few thousand ids, so (d) measured a
    // cold cache on embedded PGlite. Every id is read once first, as on A after seeding.
    await pool(ids.length, settings.seedConcurrency, async (i) => {
      const response = await fetch(`${registry.base}/v1/agents/${ids[i]}`);
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`warming read of ${ids[i]}: ${response.status}`);
    });
    await warmUp(registry.base, "get.lua", getArgs);

    await probe(`${registry.base}/v1/agents/${ids[0]}/card`, {}, 200, "card probe");
    await measure(
      "d",
      "card",
      "GET /v1/agents/:id/card",
      {
        url: registry.base,
        script: "get.lua",
        args: { ...getArgs, suffix: "/card" },
      },
      registry.base,
    );
    await probe(`${registry.base}/v1/agents?limit=20`, {}, 200, "list probe");
    await measure(
      "e",
      "list",
      "GET /v1/agents?limit=20",
      {
        url: registry.base,
        script: "path.lua",
        args: { path: "/v1/agents?limit=20" },
      },
      registry.base,
    );
    const templatePath = join(tmp, "publish-template.json");
    writeFileSync(templatePath, publishBody(publishTemplate.text, "__N__"));
    const tag = `p${runId.replace("_", "-")}`;
    await probe(
      `${registry.base}/v1/agents`,
      {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: publishBody(publishTemplate.text, `${tag}-probe`),
      },
      201,
      "publish probe",
    );
    // Warmed up like every read scenario (the publish path's JIT), then measured with its CPU cost.
    await warmUp(registry.base, "publish.lua", { template: templatePath, token, tag: `${tag}-warm` });
    const meter = cpuMeter(registry.pid, backend.env.DATABASE_URL);
    const measured = await meter.measure(() =>
      measure(
        "g",
        "publish",
        "POST /v1/agents",
        {
          url: registry.base,
          script: "publish.lua",
          args: { template: templatePath, token, tag },
        },
        registry.base,
      ),
    );
    await meter.close();
    publish = measured.value;
    publishCpu = measured.cpu;
    await probe(`${registry.base}/health`, {}, 200, "health probe");
    await measure(
      "h",
      "liveness",
      "GET /health",
      {
        url: registry.base,
        script: "path.lua",
        args: { path: "/health" },
      },
      registry.base,
    );
    await registry.stop();
    rss.push(["registry C, cache on (d, e, g, h)", registry.peakRssKb()]);
  }

  // ------------------------------------------------------------------------------------ figures
  const ceiling = scenarios.find((s) => s.key === "a")!.result.rps;
  const created = publish.requests - publish.statusErrors;
  const publishRate = created / publish.durationS;
  extras.push(
    `Publish (g): **${fmtRps(publishRate)} agents/s** (${created.toLocaleString("en-US")} created in ${publish.durationS.toFixed(1)} s, ${publish.statusErrors} non-2xx, ${publish.socketErrors} socket errors; card ${publishTemplate.name} with a unique url per request). CPU per publish (utime + stime from /proc, during the run): registry ${(publishCpu.registryMs / created).toFixed(3)} ms${publishCpu.postgresMs === undefined ? "" : `, Postgres backends ${(publishCpu.postgresMs / created).toFixed(3)} ms`}.`,
  );
  if (backend.env.DATABASE_URL) {
    const reference = await postgresCommitCeiling(backend.env.DATABASE_URL);
    extras.push(
      `Postgres reference, measured right after (g) on the same database: one-row insert transactions from 16 connections commit **${fmtRps(reference)} tx/s**. Concurrent publishes share transactions (one statement writes a batch's agent rows with their indexes, version and audit rows; then its webhook events; one commit), so this commit rate is a reference for the database, not a ceiling for publish (publish reaches ${(publishRate / reference).toFixed(2)} x of it).`,
    );
  }
  const { targetRps, delayMs, result: paced, ceiling: pacedCeiling } = halfRate;
  extras.push(
    `Half rate (i): cached read paced at ${fmtRps(targetRps)} req/s (half of (b); each connection pauses ${delayMs.toFixed(2)} ms between requests, calibrated by a ${settings.warmupS} s unrecorded pass): achieved **${fmtRps(paced.rps)} req/s**, p50 ${fmtMs(paced.p50Ms)}, **p99 ${fmtMs(paced.p99Ms)}**, errors ${paced.statusErrors + paced.socketErrors}. Run right after (b) on the same process. The ceiling's bare Bun.serve paced with the same pause right after (its quicker answers make its rate a little higher): ${fmtRps(pacedCeiling.rps)} req/s, p50 ${fmtMs(pacedCeiling.p50Ms)}, p99 ${fmtMs(pacedCeiling.p99Ms)}: the tail this machine and wrk give without any registry work.`,
  );
  extras.push(
    `Cache and limiter counters during each scenario (deltas of \`/metrics\` around the wrk run): ${counters
      .map(([key, delta]) => `(${key}) ${describeCounters(delta)}`)
      .join("; ")}.`,
  );

  const uncached = scenarios.find((s) => s.key === "c")!.result;
  const allCounters: Counters = new Map();
  for (const [, delta] of counters)
    for (const [series, n] of delta) allCounters.set(series, (allCounters.get(series) ?? 0) + n);
  if (sumOf(allCounters, "a2a_registry_cache_requests_total") === 0)
    observations.push(
      "No `a2a_registry_cache_requests_total` counts: this build serves reads without a cache, so (b) and (c) measure the same path.",
    );
  observations.push(
    `Cached vs uncached read: ${(cachedGet.rps / uncached.rps).toFixed(2)} x (${fmtRps(cachedGet.rps)} vs ${fmtRps(uncached.rps)} req/s).`,
  );
  // The L1 hit ratio of (b) says whether "cached" was really served from memory.
  const duringB = counters.find(([key]) => key === "b")?.[1] ?? new Map<string, number>();
  const l1 = (filter: RegExp) =>
    sumOf(
      new Map([...duringB].filter(([k]) => k.includes('layer="l1"') && filter.test(k))),
      "a2a_registry_cache_requests_total",
    );
  const l1Hits = l1(/result="hit"/);
  const l1All = l1(/./);
  if (l1All > 0 && l1Hits / l1All < 0.5)
    observations.push(
      `L1 hit ratio in (b) is ${Math.round((l1Hits / l1All) * 100)}%: at ${fmtRps(cachedGet.rps)} req/s a round-robin over ${ids.length.toLocaleString("en-US")} ids revisits each id every ${(ids.length / cachedGet.rps).toFixed(1)} s, longer than the L1 TTL (CACHE_L1_TTL_MS, default 2000 ms), so most reads go to the next layer.`,
    );
  const limited = sumOf(allCounters, "a2a_registry_rate_limited_total");
  if (limited > 0)
    observations.push(
      `The limiter rejected ${limited} requests despite the raised limits: figures include 429s.`,
    );
  if (Math.abs(paced.rps - targetRps) / targetRps > 0.1)
    observations.push(
      `The paced run missed its rate by more than 10% (${fmtRps(paced.rps)} vs ${fmtRps(targetRps)} req/s): wrk pauses in whole milliseconds (dithered here) and each connection's cycle also includes its response time, which the calibration pass only estimates.`,
    );

  const onPostgres = backend.kind !== "embedded";
  const ratio = cachedGet.rps / ceiling;
  const targets: TargetCheck[] = [
    {
      target: "cached `GET /v1/agents/:id` >= 0.6 x ceiling",
      measured: `${ratio.toFixed(2)} x (${fmtRps(cachedGet.rps)} / ${fmtRps(ceiling)} req/s)`,
      status: ratio >= 0.6 ? "met" : "missed",
    },
    {
      target: "p99 < 2 ms at half the cached rate",
      measured: `p99 ${fmtMs(paced.p99Ms)} at ${fmtRps(paced.rps)} req/s`,
      status: paced.p99Ms < 2 ? "met" : "missed",
    },
    {
      target: "publish >= 2,000 agents/s sustained against Postgres",
      measured: `${fmtRps(publishRate)} agents/s${onPostgres ? "" : " (embedded PGlite)"}`,
      status: onPostgres ? (publishRate >= 2000 ? "met" : "missed") : "n/a",
    },
    {
      target: "304 path at least as fast as the cached read",
      measured: `${fmtRps(notModified.rps)} vs ${fmtRps(cachedGet.rps)} req/s (${(notModified.rps / cachedGet.rps).toFixed(2)} x)`,
      status: notModified.rps >= cachedGet.rps ? "met" : "missed",
    },
  ];
  const cores = Number(machine.find(([k]) => k === "Cores (logical)")?.[1]);
  if (cores !== 2)
    observations.push(`The targets are stated for a 2-core machine; this one has ${cores} logical cores.`);
  if (targets.some((t) => t.status === "missed"))
    observations.push(
      "A target is missed: `BENCH_CPU_PROF=1 bun run bench` writes a CPU profile (with a markdown summary) of process A (seeding, (b), (i)) to show what bounds it; the figures of such a run include profiler overhead.",
    );
  if (settings.cpuProfile) observations.push(`CPU profile of process A written to ${profileDir}.`);

  const notes = [
    `Backend: **${backend.kind}**.`,
    `Access logs are off during the run: LOG_LEVEL=warn drops the info-level line per request (warnings and errors still reach the process log).`,
    `Rate limits raised via ${RATE_LIMIT_VARIABLES.join(", ")}=${RAISED_RATE_LIMIT}: the limiter still runs on every limited request but admits everything.`,
    "Reads are anonymous (public agents); seeding and publish use the bootstrap admin's bearer token (admins are exempt from MAX_AGENTS_PER_CLIENT).",
    "Registry processes in turn on the same database: A (CACHE_ENABLED=true) seeds and runs (b), (i) and (f); B (CACHE_ENABLED=false) runs (c); C (CACHE_ENABLED=true) runs (d), (e), (g) and (h). Each is stopped before the next starts (PGlite allows one process per data dir; Postgres runs the same sequence for comparability).",
    `Before the measured runs on each process: a ${settings.warmupS} s wrk pass of reads over the ids (not recorded) warms the cache and the JIT; process C, which starts with an empty in-process cache, first reads every id once (A's was filled by the publishes). (f) runs on process A right after (i), so the 304 path and the cached read (b) are compared on one process with the same cache contents; the ETags it sends are those of the publish responses, checked against reads of 64 ids first.`,
    "Ids are taken round-robin, the threads starting at evenly spaced offsets, so every seeded id is read in (b), (c), (d) and (f).",
  ];
  const settingsTable: Array<[string, string]> = [
    ["Agents seeded", settings.agents.toLocaleString("en-US")],
    ["Duration per scenario", `${settings.durationS} s (warm-up ${settings.warmupS} s)`],
    ["Connections / wrk threads", `${settings.connections} / ${settings.threads}`],
    ["Registry processes (WEB_CONCURRENCY)", String(settings.webConcurrency)],
    ["Seeding concurrency", String(settings.seedConcurrency)],
  ];
  const report: RunReport = {
    backendKind: backend.kind,
    backendDescription: backend.description,
    startedAt,
    wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
    command: commandLine(),
    registryEnv: shownEnv,
    settings: settingsTable,
    machine,
    scenarios,
    extras,
    rss,
    targets,
    observations,
    notes,
  };
  writeBenchmarks(settings.output, report);

  console.log("");
  for (const t of targets) console.log(`target ${t.status.padEnd(6)} ${t.target}: ${t.measured}`);
  for (const [name, kb] of rss) console.log(`peak RSS ${name}: ${(kb / 1024).toFixed(0)} MiB`);
  console.log(`backend: ${backend.kind}; wrote ${settings.output} (section "${backend.kind}")`);
  if (settings.cpuProfile) console.log(`CPU profile of process A: ${profileDir}`);
}

let exitCode = 0;
try {
  await main();
} catch (error) {
  console.error(`\nbench failed: ${error instanceof Error ? error.message : error}`);
  exitCode = 1;
} finally {
  await cleanupAll();
}
process.exit(exitCode);

/** How many trivial transactions Postgres commits per second here: the bound for one-transaction-per-publish. */
async function postgresCommitCeiling(url: string, seconds = 3, connections = 16): Promise<number> {
  const sql = new Bun.SQL(url, { max: connections });
  try {
    await sql`create table if not exists bench_commit_probe (id bigserial primary key, v text)`;
    let committed = 0;
    const deadline = performance.now() + seconds * 1000;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: connections }, async () => {
        while (performance.now() < deadline) {
          await sql.begin(async (tx) => {
            await tx`insert into bench_commit_probe (v) values ('x')`;
          });
          committed++;
        }
      }),
    );
    return committed / ((performance.now() - started) / 1000);
  } finally {
    await sql`drop table if exists bench_commit_probe`;
    await sql.close();
  }
}
