import { resolve } from "node:path";
import { DIE_WITH_PARENT, onCleanup } from "./process";

export const WRK_DIR = resolve(import.meta.dir, "../wrk");

export type WrkResult = {
  requests: number;
  durationS: number;
  rps: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Responses with a status above 399 (wrk's own count). */
  statusErrors: number;
  /** connect + read + write + timeout. */
  socketErrors: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
};

type DoneLine = {
  requests: number;
  durationUs: number;
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p95Us: number;
  p99Us: number;
  maxUs: number;
  errors: WrkResult["errors"];
};

export type WrkOptions = {
  url: string;
  script: string;
  args: Record<string, string | number>;
  durationS: number;
  connections: number;
  threads: number;
};

/** The wrk command line for a run: the exact thing to paste when a figure needs reproducing by hand. */
export function wrkCommand(options: WrkOptions): string[] {
  return [
    "wrk",
    "-t",
    String(options.threads),
    "-c",
    String(options.connections),
    "-d",
    `${options.durationS}s`,
    // Above any latency we expect even under overload, so a slow response counts as slow, not lost.
    "--timeout",
    "10s",
    "-s",
    resolve(WRK_DIR, options.script),
    options.url,
    "--",
    ...Object.entries(options.args).map(([key, value]) => `${key}=${value}`),
  ];
}

/** Runs wrk to completion and returns the figures its `done()` hook printed as JSON. */
export async function runWrk(options: WrkOptions): Promise<WrkResult> {
  const cmd = wrkCommand(options);
  const proc = Bun.spawn([...DIE_WITH_PARENT, ...cmd], { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  onCleanup("stop wrk", () => {
    if (proc.exitCode === null) proc.kill("SIGKILL");
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const line = stdout.split("\n").find((l) => l.startsWith("@@BENCH@@ "));
  if (code !== 0 || !line)
    throw new Error(`wrk failed (exit ${code}): ${cmd.join(" ")}\n${stdout}\n${stderr}`.trim());
  const done = JSON.parse(line.slice("@@BENCH@@ ".length)) as DoneLine;
  const durationS = done.durationUs / 1e6;
  const { connect, read, write, timeout, status } = done.errors;
  return {
    requests: done.requests,
    durationS,
    rps: durationS > 0 ? done.requests / durationS : 0,
    meanMs: done.meanUs / 1000,
    p50Ms: done.p50Us / 1000,
    p90Ms: done.p90Us / 1000,
    p95Ms: done.p95Us / 1000,
    p99Ms: done.p99Us / 1000,
    maxMs: done.maxUs / 1000,
    statusErrors: status,
    socketErrors: connect + read + write + timeout,
    errors: done.errors,
  };
}
