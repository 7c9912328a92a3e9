import { join } from "node:path";
import { maskUrl } from "./backend";
import { freePort, logTail, type Managed, sleep, startManaged } from "./process";

/**
 * Booting a registry process for a bench (bench/search.ts; bench/run.ts keeps its own copy of the same
 * steps): the environment every bench process gets, waiting for readiness, and client tokens.
 */

export const HOST = "127.0.0.1";
/** High enough that no bucket ever empties, so the limiter runs on every request but never answers 429. */
export const RAISED_RATE_LIMIT = "100000000/1s";
export const RATE_LIMIT_VARIABLES = ["TOKEN", "READ", "SEARCH", "WRITE", "ADMIN"].map(
  (c) => `RATE_LIMIT_${c}`,
);

/** Only these variables come from the caller's shell: a DATABASE_URL there must not change the backend. */
export function inheritedEnv(): Record<string, string> {
  return Object.fromEntries(
    ["PATH", "HOME", "TMPDIR", "LANG", "TZ"].flatMap((k) => (process.env[k] ? [[k, process.env[k]!]] : [])),
  );
}

/** The environment of a measured registry: access logs off, limits raised, no background workers. */
export function benchRegistryEnv(options: {
  port: number;
  secretKey: string;
  adminId: string;
  adminSecret: string;
  backendEnv: Record<string, string>;
}): Record<string, string> {
  return {
    HOST,
    PORT: String(options.port),
    REGISTRY_BASE_URL: `http://${HOST}:${options.port}`,
    SECRET_KEY: options.secretKey,
    LOG_LEVEL: "warn",
    ADMIN_CLIENT_ID: options.adminId,
    ADMIN_CLIENT_SECRET: options.adminSecret,
    ACCESS_TOKEN_EXPIRE_MINUTES: "240",
    WEB_CONCURRENCY: "1",
    // Background loops are not what is measured: no federation syncs, no liveness probes (which would
    // also rewrite health and seq of seeded agents while the bench runs).
    ENABLE_FEDERATION: "false",
    PROBE_ENABLED: "false",
    // As `bun start`, `bun run dev` and the image run it (see ops/Dockerfile).
    MIMALLOC_PURGE_DELAY: "-1",
    ...Object.fromEntries(RATE_LIMIT_VARIABLES.map((k) => [k, RAISED_RATE_LIMIT])),
    ...options.backendEnv,
  };
}

const randomSecret = (bytes: number) =>
  Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("base64url");

/** benchRegistryEnv() on the shell's inherited variables, with a free port and fresh secrets. */
export function freshRegistryEnv(adminId: string, backendEnv: Record<string, string>) {
  const adminSecret = randomSecret(24);
  const env = {
    ...inheritedEnv(),
    ...benchRegistryEnv({ port: freePort(), secretKey: randomSecret(36), adminId, adminSecret, backendEnv }),
  };
  return { env, adminSecret };
}

/** The environment as the report shows it: secrets replaced, URLs masked. */
export function shownEnv(env: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).map(([k, v]) => [
      k,
      k === "SECRET_KEY" || k === "ADMIN_CLIENT_SECRET" ? "<random>" : k.endsWith("_URL") ? maskUrl(v) : v,
    ]),
  );
}

/** The command as typed, with the BENCH_* variables that were set (URLs masked), for the report. */
export function benchCommandLine(script: string, scriptName: string): string {
  const vars = Object.keys(process.env)
    .filter((k) => k.startsWith("BENCH_") && process.env[k])
    .sort()
    .map((k) => `${k}=${k.endsWith("_URL") ? maskUrl(process.env[k]!) : process.env[k]}`);
  const event = process.env.npm_lifecycle_event;
  const command = event === "bench" || event === scriptName ? `bun run ${event}` : `bun ${script}`;
  return [...vars, command].join(" ");
}

export async function waitReady(managed: Managed, url: string, timeoutMs = 120_000): Promise<unknown> {
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

export type Registry = Managed & { port: number; base: string };

/** `bun [bunFlags] src/index.ts` in the repo with exactly `env`, its output in a log in `tmp`, ready when it returns. */
export async function startRegistry(
  name: string,
  repo: string,
  env: Record<string, string>,
  tmp: string,
  bunFlags: string[] = [],
): Promise<Registry> {
  const port = Number(env.PORT);
  const managed = startManaged({
    name,
    cmd: [process.execPath, ...bunFlags, "src/index.ts"],
    cwd: repo,
    env,
    logPath: join(tmp, `${name.replace(/\W+/g, "-")}.log`),
  });
  const base = `http://${HOST}:${port}`;
  await waitReady(managed, `${base}/health/ready`);
  return Object.assign(managed, { port, base });
}

/** A bearer token by the client-credentials grant (HTTP Basic). */
export async function clientToken(base: string, clientId: string, secret: string): Promise<string> {
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

/** Reads an integer setting from the environment, with a unit suffix allowed ("10s"). */
export function intSetting(name: string, fallback: number, min: number, max: number, unit = ""): number {
  const text = process.env[name];
  if (text === undefined || text === "") return fallback;
  const value = Number(unit ? text.replace(new RegExp(`${unit}$`), "") : text);
  if (!Number.isInteger(value) || value < min || value > max)
    throw new Error(
      `${name}: expected an integer from ${min} to ${max}${unit ? ` (optionally with "${unit}")` : ""}, got "${text}"`,
    );
  return value;
}
