/**
 * Processes a fault test can kill: a Postgres cluster of its own (initdb + pg_ctl in a temp dir, on a
 * spare port), a registry process (`bun src/index.ts`) with its log in a file, and the checks shared by
 * the fault and shutdown suites and by `bun run soak` (bench/soak.ts): metrics scraping, the log's
 * "unhandled" lines, and "every acknowledged write is present with the bytes that were sent".
 */
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import postgres from "postgres";
import { freePort } from "./redis";

export const ROOT = resolve(import.meta.dir, "../..");
export const FIXTURES = resolve(ROOT, "../shared/fixtures/agent-cards/valid");

/** Children get SIGTERM from the kernel when the test runner dies, so nothing outlives a crashed run. */
const DIE_WITH_PARENT = Bun.which("setpriv") ? ["setpriv", "--pdeathsig", "TERM", "--"] : [];

const sha256 = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");

// ---------------------------------------------------------------------------------------------------
// Postgres cluster of the test's own

/** The newest installed server's bin directory (Debian: /usr/lib/postgresql/<major>/bin), if any. */
export function pgBinDir(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const majors = readdirSync(base)
    .filter((v) => existsSync(join(base, v, "bin", "pg_ctl")) && existsSync(join(base, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return majors[0] ? join(base, majors[0], "bin") : undefined;
}

export type PgCluster = {
  /** postgres://postgres@127.0.0.1:<port>/postgres */
  url: string;
  port: number;
  dir: string;
  logPath: string;
  /** pg_ctl start, waiting until it accepts connections. */
  start(): Promise<void>;
  /** pg_ctl stop: "fast" ends sessions cleanly, "immediate" is a crash (recovery at the next start). */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  /** Stops it (immediate) and removes the directory. */
  destroy(): Promise<void>;
};

const isRoot = () => process.getuid?.() === 0;

/** Postgres refuses to run as root: as root every server command runs as the postgres user. */
function asServerUser(cmd: string[]): string[] {
  if (!isRoot()) return cmd;
  if (Bun.which("runuser")) return ["runuser", "-u", "postgres", "--", ...cmd];
  return [
    "su",
    "postgres",
    "-s",
    "/bin/sh",
    "-c",
    cmd.map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" "),
  ];
}

async function run(cmd: string[], what: string, timeoutMs = 120_000): Promise<string> {
  const proc = Bun.spawn(cmd, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${what} failed (exit ${code}):\n${out}\n${err}`);
  return out + err;
}

const liveClusters = new Set<PgCluster>();
// A test runner that exits without its afterAll (a crash, a timeout) must not leave a postmaster behind:
// pg_ctl daemonises it, so the parent-death signal does not reach it.
process.on("exit", () => {
  for (const cluster of liveClusters) {
    const bin = pgBinDir();
    if (bin)
      Bun.spawnSync(
        asServerUser([join(bin, "pg_ctl"), "-D", join(cluster.dir, "data"), "-m", "immediate", "stop"]),
        {
          stdout: "ignore",
          stderr: "ignore",
        },
      );
    rmSync(cluster.dir, { recursive: true, force: true });
  }
});

/**
 * A fresh cluster in a temp dir on a spare port, trust auth on loopback only, fsync off (a test machine
 * does not lose power; what a clean or crash stop keeps is still Postgres' own business).
 */
export async function startPostgresCluster(options: { port?: number } = {}): Promise<PgCluster> {
  const bin = pgBinDir();
  if (!bin)
    throw new Error(
      "no Postgres server binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)",
    );
  const port = options.port ?? freePort();
  const dir = mkdtempSync(join(tmpdir(), "a2a-pg-"));
  if (isRoot()) {
    const pw = readFileSync("/etc/passwd", "utf8")
      .split("\n")
      .find((line) => line.startsWith("postgres:"))
      ?.split(":");
    if (!pw) throw new Error("running as root but there is no postgres user to run the server as");
    chownSync(dir, Number(pw[2]), Number(pw[3]));
  }
  const data = join(dir, "data");
  const logPath = join(dir, "postgres.log");
  await run(
    asServerUser([
      join(bin, "initdb"),
      "-D",
      data,
      "-U",
      "postgres",
      "-A",
      "trust",
      "-E",
      "UTF8",
      "--locale=C",
      "--no-sync",
    ]),
    "initdb",
  );
  const serverOptions = [
    `-p ${port}`,
    "-c listen_addresses=127.0.0.1",
    `-k ${dir}`,
    "-c fsync=off",
    "-c full_page_writes=off",
    "-c max_connections=60",
    "-c shared_buffers=32MB",
  ].join(" ");
  const pgCtl = join(bin, "pg_ctl");
  const cluster: PgCluster = {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    dir,
    logPath,
    async start() {
      await run(
        asServerUser([pgCtl, "-D", data, "-l", logPath, "-o", serverOptions, "-w", "-t", "120", "start"]),
        "pg_ctl start",
        150_000,
      );
    },
    async stop(mode = "fast") {
      await run(
        asServerUser([pgCtl, "-D", data, "-m", mode, "-w", "-t", "120", "stop"]),
        "pg_ctl stop",
        150_000,
      );
    },
    async destroy() {
      liveClusters.delete(cluster);
      await run(asServerUser([pgCtl, "-D", data, "-m", "immediate", "-w", "stop"]), "pg_ctl stop").catch(
        () => undefined,
      );
      rmSync(dir, { recursive: true, force: true });
    },
  };
  liveClusters.add(cluster);
  await cluster.start();
  return cluster;
}

/** A database for one suite: a fresh one on TEST_DATABASE_URL's server when set, else a cluster of its own. */
export async function suitePostgres(): Promise<{ url: string; stop(): Promise<void> }> {
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) {
    const cluster = await startPostgresCluster();
    return { url: cluster.url, stop: () => cluster.destroy() };
  }
  const name = `a2a_test_${process.pid}_${Date.now().toString(36)}_faults`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  await admin.unsafe(`create database "${name}"`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    stop: async () => {
      await admin.unsafe(`drop database if exists "${name}" with (force)`).catch(() => undefined);
      await admin.end({ timeout: 5 });
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// A registry process

export const ADMIN_ID = "faults-admin";
export const ADMIN_SECRET = "faults-admin-secret-0123456789";
const RAISED = "100000000/1s";

export type RegistryProcess = {
  proc: Subprocess;
  base: string;
  port: number;
  logPath: string;
  log(): string;
  /** Lines of the log that report an unhandled error or rejection (there must be none). */
  unhandled(): string[];
  /** Sends `signal` and waits for the exit code (null: did not exit in time, then killed). */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
};

export function registryEnv(options: {
  port: number;
  databaseUrl: string;
  redisUrl?: string;
  extra?: Record<string, string>;
}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: process.env.HOME ?? tmpdir(),
    HOST: "127.0.0.1",
    PORT: String(options.port),
    REGISTRY_BASE_URL: `http://127.0.0.1:${options.port}`,
    DEBUG: "true",
    LOG_LEVEL: "warn",
    WEB_CONCURRENCY: "1",
    PROBE_ENABLED: "false",
    ENABLE_FEDERATION: "false",
    DATABASE_URL: options.databaseUrl,
    ...(options.redisUrl ? { REDIS_URL: options.redisUrl } : {}),
    ADMIN_CLIENT_ID: ADMIN_ID,
    ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    MAX_AGENTS_PER_CLIENT: "1000000",
    ...Object.fromEntries(
      ["TOKEN", "READ", "SEARCH", "WRITE", "ADMIN"].map((c) => [`RATE_LIMIT_${c}`, RAISED]),
    ),
    ...options.extra,
  };
}

/** `bun src/index.ts` with exactly `env`; resolves once /health answers (not /health/ready: faults test that). */
export async function startRegistryProcess(
  env: Record<string, string>,
  options: { logDir: string; name?: string; timeoutMs?: number },
): Promise<RegistryProcess> {
  const port = Number(env.PORT);
  const logPath = join(options.logDir, `${options.name ?? "registry"}-${port}.log`);
  const logFile = Bun.file(logPath);
  const proc = Bun.spawn([...DIE_WITH_PARENT, process.execPath, "src/index.ts"], {
    cwd: ROOT,
    env,
    stdin: "ignore",
    stdout: logFile,
    stderr: logFile,
  });
  const base = `http://127.0.0.1:${port}`;
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  const deadline = Date.now() + (options.timeoutMs ?? 60_000);
  for (;;) {
    if (proc.exitCode !== null)
      throw new Error(`registry exited with ${proc.exitCode} during boot:\n${log()}`);
    try {
      if ((await fetch(`${base}/health`)).status === 200) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(`registry did not answer /health in time:\n${log()}`);
    }
    await Bun.sleep(100);
  }
  return {
    proc,
    base,
    port,
    logPath,
    log,
    unhandled: () =>
      log()
        .split("\n")
        .filter((line) => /unhandled|uncaught/i.test(line)),
    async stop(signal = "SIGTERM", timeoutMs = 30_000) {
      if (proc.exitCode !== null) return proc.exitCode;
      proc.kill(signal);
      const code = await Promise.race([proc.exited, Bun.sleep(timeoutMs).then(() => null)]);
      if (code === null) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
      return code;
    },
  };
}

export async function clientToken(base: string, clientId = ADMIN_ID, secret = ADMIN_SECRET): Promise<string> {
  const res = await fetch(`${base}/oauth/token`, {
    method: "POST",
    headers: {
      authorization: `Basic ${Buffer.from(`${clientId}:${secret}`).toString("base64")}`,
      "content-type": "application/x-www-form-urlencoded",
    },
    body: "grant_type=client_credentials",
  });
  if (res.status !== 200) throw new Error(`token: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

/** A publisher client (agents:write) created through the admin API, and a token for it. */
export async function publisherToken(base: string, adminToken: string, name = "fault publisher") {
  const res = await fetch(`${base}/v1/clients`, {
    method: "POST",
    headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
    body: JSON.stringify({ name, scopes: ["agents:read", "agents:write"] }),
  });
  if (res.status !== 201) throw new Error(`create client: ${res.status} ${await res.text()}`);
  const client = (await res.json()) as { client_id: string; client_secret: string };
  return {
    clientId: client.client_id,
    token: await clientToken(base, client.client_id, client.client_secret),
  };
}

// ---------------------------------------------------------------------------------------------------
// Agents, metrics and the checks

const weather = JSON.parse(readFileSync(join(FIXTURES, "weather-0.3.json"), "utf8")) as Record<
  string,
  unknown
>;

/**
 * A unique card: the name carries one lowercase word (`<prefix>x<n>`) so a search for it finds exactly
 * this agent, and the url is unique so publishes never collide.
 */
export function uniqueCard(prefix: string, n: number, version = "1.0.0"): Record<string, unknown> {
  const word = `${prefix}x${n}`;
  return {
    ...weather,
    name: `${word} forecaster`,
    url: `https://${word}.faults.example.com/a2a/v1`,
    additionalInterfaces: [{ url: `https://${word}.faults.example.com/a2a/v1`, transport: "JSONRPC" }],
    version,
  };
}

/** The word a search should find `uniqueCard(prefix, n)` by. */
export const searchWord = (prefix: string, n: number) => `${prefix}x${n}`;

/** Sum of a Prometheus counter's samples whose labels include every given label. */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = Object.fromEntries(
      [...(match[3] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((m) => [m[1], m[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(match[4]);
  }
  return total;
}

export async function metricsText(base: string): Promise<string> {
  return (await fetch(`${base}/metrics`)).text();
}

export type AckedWrite = { id: string; sha256: string; name: string };

/**
 * Every acknowledged write, read back from Postgres: present, live, and with exactly the card bytes sent.
 * Returns the figures for the report; `missing` and `mismatched` must be empty.
 */
export async function verifyAcknowledged(databaseUrl: string, acked: AckedWrite[]) {
  const sql = postgres(databaseUrl, { max: 2, onnotice: () => {}, connect_timeout: 10 });
  try {
    const present = new Map<string, string>();
    for (let i = 0; i < acked.length; i += 1000) {
      const ids = acked.slice(i, i + 1000).map((a) => a.id);
      const rows = await sql<{ id: string; card_raw: string; status: string }[]>`
        select id::text, card_raw, status from agents where id = any(${ids}::uuid[])`;
      for (const row of rows) if (row.status !== "deleted") present.set(row.id, sha256(row.card_raw));
    }
    const missing = acked.filter((a) => !present.has(a.id)).map((a) => a.id);
    const mismatched = acked
      .filter((a) => present.has(a.id) && present.get(a.id) !== a.sha256)
      .map((a) => a.id);
    return { acknowledged: acked.length, present: acked.length - missing.length, missing, mismatched };
  } finally {
    await sql.end({ timeout: 5 });
  }
}

export { sha256 };
