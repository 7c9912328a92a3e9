import { readFileSync } from "node:fs";
import { SQL } from "bun";
import { capture, processTree, sleep } from "./process";

/**
 * CPU time spent by the registry process and by the Postgres backends of the bench database while a
 * scenario runs, from /proc (utime + stime). On a machine shared with other work, wall-clock latency
 * swings with the load, but the CPU a request costs stays close to its unloaded service time, so this is
 * the figure that still says something when the latencies do not. Postgres must run on this machine
 * (loopback) and its processes be readable; otherwise only the registry is counted.
 */

const TICK_MS = 1000 / (Number(capture(["getconf", "CLK_TCK"])) || 100);

function ticksOf(pid: number): number | undefined {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined; // gone (a parallel worker that finished, a closed connection)
  }
}

/** The process and its descendants (a registry with WEB_CONCURRENCY > 1 is a supervisor and its workers). */
function treeTicks(pid: number): number {
  return processTree(pid).reduce((sum, member) => sum + (ticksOf(member) ?? 0), 0);
}

export type CpuSample = { registryMs: number; postgresMs: number | undefined };

export function cpuMeter(registryPid: number, databaseUrl: string | undefined) {
  const local = databaseUrl && /^(127\.0\.0\.1|localhost|\[::1\])$/.test(new URL(databaseUrl).hostname);
  const sql = local ? new SQL(databaseUrl, { max: 1 }) : undefined;

  /** Backends of the bench database other than ours, parallel workers included (polled, so very short ones are missed). */
  async function backendPids(): Promise<number[]> {
    if (!sql) return [];
    const rows = (await sql`select pid from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid()`) as Array<{ pid: number }>;
    return rows.map((row) => Number(row.pid));
  }

  return {
    /** Runs `work` while polling the backends every 50 ms; returns what it cost in CPU milliseconds. */
    async measure<T>(work: () => Promise<T>): Promise<{ value: T; cpu: CpuSample }> {
      const first = new Map<number, number>();
      const last = new Map<number, number>();
      const observe = async (initial: boolean) => {
        for (const pid of await backendPids()) {
          const ticks = ticksOf(pid);
          if (ticks === undefined) continue;
          // A backend first seen after the start was started during the run: all its time counts.
          if (!first.has(pid)) first.set(pid, initial ? ticks : 0);
          last.set(pid, ticks);
        }
      };
      await observe(true);
      const registryStart = treeTicks(registryPid);
      let running = true;
      const poller = (async () => {
        while (running) {
          await sleep(50);
          await observe(false).catch(() => {});
        }
      })();
      let value: T;
      try {
        value = await work();
      } finally {
        running = false;
        await poller;
      }
      const registryMs = (treeTicks(registryPid) - registryStart) * TICK_MS;
      await observe(false);
      const postgresTicks = [...last].reduce((sum, [pid, ticks]) => sum + (ticks - (first.get(pid) ?? 0)), 0);
      return { value, cpu: { registryMs, postgresMs: sql ? postgresTicks * TICK_MS : undefined } };
    },
    async close() {
      await sql?.close();
    },
  };
}
