/**
 * `bun run bench:publish`: scenario (g) of bench/run.ts alone, for working on publish throughput.
 *
 * Boots a registry on a fresh backend, then runs wrk's publish.lua (the largest shared fixture card,
 * a unique url per request, the admin's token) for a warm-up pass and then `BENCH_PUBLISH_ROUNDS`
 * measured passes, and prints for each the publishes per second and what each publish cost in CPU:
 * the registry's (its process tree, so WEB_CONCURRENCY workers count) and the Postgres backends' of the
 * bench database, from /proc (support/cpu.ts). On this shared machine the CPU per publish is the
 * figure to compare; the rate moves with everyone else's load, which is printed with it. It writes no
 * report: BENCHMARKS.md is bench/run.ts's.
 *
 * Environment: BENCH_DATABASE_URL / BENCH_REDIS_URL (as bench/run.ts), BENCH_DURATION (10 s),
 * BENCH_WARMUP (2 s), BENCH_CONNECTIONS (64), BENCH_THREADS (2), BENCH_WEB_CONCURRENCY (1),
 * BENCH_PUBLISH_ROUNDS (3), BENCH_CPU_PROF (1: `bun --cpu-prof` of the registry, one process only).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { prepareBackend } from "./support/backend";
import { cardTemplates, publishBody } from "./support/cards";
import { cpuMeter } from "./support/cpu";
import { cleanupAll, onCleanup } from "./support/process";
import { clientToken, freshRegistryEnv, intSetting, startRegistry } from "./support/registry";
import { fmtMs, fmtRps } from "./support/report";
import { runWrk } from "./support/wrk";

const REPO = resolve(import.meta.dir, "..");

async function main() {
  if (!Bun.which("wrk")) {
    console.error("wrk is missing: apt-get install -y wrk");
    process.exit(1);
  }
  const threads = intSetting("BENCH_THREADS", 2, 1, 64);
  const settings = {
    durationS: intSetting("BENCH_DURATION", 10, 1, 3600, "s"),
    warmupS: intSetting("BENCH_WARMUP", 2, 1, 600, "s"),
    connections: intSetting("BENCH_CONNECTIONS", 64, threads, 100_000),
    threads,
    webConcurrency: intSetting("BENCH_WEB_CONCURRENCY", 1, 1, 256),
    rounds: intSetting("BENCH_PUBLISH_ROUNDS", 3, 1, 100),
    cpuProfile: ["1", "true"].includes(process.env.BENCH_CPU_PROF ?? ""),
  };
  if (settings.cpuProfile && settings.webConcurrency > 1)
    throw new Error("BENCH_CPU_PROF profiles one process: leave BENCH_WEB_CONCURRENCY at 1");
  const runId = `${new Date().toISOString().replace(/[-:T]/g, "").slice(0, 14)}_${process.pid}`;
  const tmp = mkdtempSync(join(tmpdir(), "a2a-bench-publish-"));
  onCleanup(`remove ${tmp}`, () => rmSync(tmp, { recursive: true, force: true }));

  const backend = await prepareBackend(runId);
  console.log(`backend: ${backend.description}`);
  const adminId = "bench-admin";
  const fresh = freshRegistryEnv(adminId, backend.env);
  const { adminSecret } = fresh;
  const env = { ...fresh.env, WEB_CONCURRENCY: String(settings.webConcurrency) };
  const profileDir = join(tmpdir(), `a2a-bench-publish-profile-${runId}`);
  if (settings.cpuProfile) mkdirSync(profileDir, { recursive: true });
  const registry = await startRegistry(
    "registry",
    REPO,
    env,
    tmp,
    settings.cpuProfile ? ["--cpu-prof", "--cpu-prof-md", `--cpu-prof-dir=${profileDir}`] : [],
  );
  const token = await clientToken(registry.base, adminId, adminSecret);

  const template = cardTemplates().reduce((a, b) => (b.text.length > a.text.length ? b : a));
  const templatePath = join(tmp, "publish-template.json");
  writeFileSync(templatePath, publishBody(template.text, "__N__"));
  const probe = await fetch(`${registry.base}/v1/agents`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: publishBody(template.text, `p${runId.replace("_", "-")}-probe`),
  });
  if (probe.status !== 201) throw new Error(`publish probe: ${probe.status} ${await probe.text()}`);

  const meter = cpuMeter(registry.pid, backend.env.DATABASE_URL);
  onCleanup("close the CPU meter", () => meter.close());
  const pass = (round: string, durationS: number) =>
    runWrk({
      url: registry.base,
      script: "publish.lua",
      args: { template: templatePath, token, tag: `p${runId.replace("_", "-")}-${round}` },
      durationS,
      connections: settings.connections,
      threads: settings.threads,
    });
  console.log(
    `card ${template.name} (${template.text.length} bytes), ${settings.connections} connections, ` +
      `${settings.threads} wrk threads, WEB_CONCURRENCY=${settings.webConcurrency}, ${settings.durationS} s per round`,
  );
  await pass("warmup", settings.warmupS);
  for (let round = 1; round <= settings.rounds; round++) {
    const load = loadavg()[0]!;
    const { value: result, cpu } = await meter.measure(() => pass(String(round), settings.durationS));
    const created = result.requests - result.statusErrors;
    const perPublish = (ms: number | undefined) => (ms === undefined ? "n/a" : (ms / created).toFixed(3));
    console.log(
      `round ${round}: ${fmtRps(created / result.durationS)} agents/s (${created} created, ` +
        `${result.statusErrors} non-2xx, ${result.socketErrors} socket errors), p50 ${fmtMs(result.p50Ms)}, ` +
        `p99 ${fmtMs(result.p99Ms)}; CPU per publish: registry ${perPublish(cpu.registryMs)} ms, ` +
        `Postgres ${perPublish(cpu.postgresMs)} ms; load average ${load.toFixed(2)} -> ${loadavg()[0]!.toFixed(2)}`,
    );
  }
  await registry.stop();
  if (settings.cpuProfile) console.log(`CPU profile: ${profileDir}`);
}

try {
  await main();
} finally {
  await cleanupAll();
}
