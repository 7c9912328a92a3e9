import { existsSync, readdirSync, readFileSync } from "node:fs";
import type { Subprocess } from "bun";

/**
 * Everything the run must undo (subprocesses, temp dirs, the bench database), newest first. Kept in one
 * list so the normal `finally` and the signal handlers run the same code.
 */
const cleanups: Array<{ label: string; run: () => Promise<void> | void }> = [];

export function onCleanup(label: string, run: () => Promise<void> | void) {
  cleanups.push({ label, run });
}

let cleaning: Promise<void> | undefined;
export function cleanupAll(): Promise<void> {
  cleaning ??= (async () => {
    while (cleanups.length) {
      const step = cleanups.pop()!;
      try {
        await step.run();
      } catch (error) {
        console.error(`cleanup "${step.label}" failed: ${error instanceof Error ? error.message : error}`);
      }
    }
  })();
  return cleaning;
}

// Ctrl-C or a CI timeout must not leave a registry holding the port or a database behind.
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    console.error(`\n${signal}: cleaning up`);
    void cleanupAll().finally(() => process.exit(130));
  });
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function statusKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
      readFileSync(`/proc/${pid}/status`, "utf8"),
    );
    return match ? Number(match[1]) : 0;
  } catch {
    return 0; // the process (or thread) ended between listing and reading
  }
}

/** The pid and all its descendants, so a registry that forks workers (WEB_CONCURRENCY) is measured whole. */
export function processTree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    const taskDir = `/proc/${all[i]}/task`;
    if (!existsSync(taskDir)) continue;
    try {
      for (const task of readdirSync(taskDir)) {
        const children = readFileSync(`${taskDir}/${task}/children`, "utf8").trim();
        if (children) for (const child of children.split(/\s+/)) all.push(Number(child));
      }
    } catch {
      // raced with an exit; the sample is slightly low, the next one catches up
    }
  }
  return all;
}

/**
 * The signal handlers above cover Ctrl-C and `kill`; a SIGKILL or a crash of the bench itself runs no
 * JavaScript, so children also get SIGTERM from the kernel when their parent dies (setpriv execs the
 * command, so the pid and the memory samples stay those of the child).
 */
export const DIE_WITH_PARENT = Bun.which("setpriv") ? ["setpriv", "--pdeathsig", "TERM", "--"] : [];

export type Managed = {
  name: string;
  pid: number;
  logPath: string;
  proc: Subprocess;
  /** Highest resident set size seen: max of the summed VmRSS samples of the tree and the main VmHWM. */
  peakRssKb(): number;
  exitCode(): number | null;
  stop(): Promise<void>;
};

/**
 * Starts a long-running child with its output in a log file (read back when it fails), samples its
 * memory every 100 ms, and registers its shutdown: SIGTERM, then SIGKILL after `graceMs`.
 */
export function startManaged(options: {
  name: string;
  cmd: string[];
  cwd: string;
  env: Record<string, string>;
  logPath: string;
  graceMs?: number;
}): Managed {
  const log = Bun.file(options.logPath);
  const proc = Bun.spawn([...DIE_WITH_PARENT, ...options.cmd], {
    cwd: options.cwd,
    env: options.env,
    stdin: "ignore",
    stdout: log,
    stderr: log,
  });
  let peakKb = 0;
  let code: number | null = null;
  void proc.exited.then((c) => {
    code = c;
  });
  const sample = () => {
    if (code !== null) return;
    let total = 0;
    for (const pid of processTree(proc.pid)) total += statusKb(pid, "VmRSS");
    peakKb = Math.max(peakKb, total, statusKb(proc.pid, "VmHWM"));
  };
  const timer = setInterval(sample, 100);
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      sample();
      clearInterval(timer);
      if (code !== null) return;
      proc.kill("SIGTERM");
      const exited = await Promise.race([proc.exited.then(() => true), sleep(options.graceMs ?? 10_000)]);
      if (!exited) {
        console.error(`${options.name} did not stop within ${options.graceMs ?? 10_000} ms: SIGKILL`);
        proc.kill("SIGKILL");
        await proc.exited;
      }
    })();
    return stopped;
  };
  onCleanup(`stop ${options.name}`, stop);
  return {
    name: options.name,
    pid: proc.pid,
    logPath: options.logPath,
    proc,
    peakRssKb: () => {
      sample();
      return peakKb;
    },
    exitCode: () => code,
    stop,
  };
}

/** The last lines of a child's log, for error messages. */
export function logTail(path: string, lines = 30): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** A port nobody listens on right now, on loopback (the OS picks it; the window until reuse is tiny). */
export function freePort(): number {
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response(null) });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

/** Runs a short command and returns its stdout (stderr appended), or undefined when it cannot run. */
export function capture(cmd: string[], cwd?: string): string | undefined {
  try {
    const result = Bun.spawnSync(cmd, { cwd, stdout: "pipe", stderr: "pipe" });
    return (result.stdout.toString() + result.stderr.toString()).trim();
  } catch {
    return undefined;
  }
}
