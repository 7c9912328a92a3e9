/**
 * Real registry processes for the federation tests: `bun src/index.ts` on loopback ports, each with a
 * database of its own (a PGlite data dir, or a Postgres database), started, killed and restarted.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { openDatabase } from "../../src/infra/db/client";
import { freePort } from "./redis";

const ROOT = resolve(import.meta.dir, "../..");
export const ADMIN_ID = "fed-admin";
export const ADMIN_SECRET = "fed-admin-secret-0123456789";
export const SECRET_KEY = "federation-test-secret-key-0123456789abcdef";

const weather = JSON.parse(
  readFileSync(join(ROOT, "../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
) as Record<string, unknown>;

let unique = 0;
/** A valid 0.3 card with a url of its own. */
export function cardFor(label: string, overrides: Record<string, unknown> = {}) {
  unique++;
  return {
    ...weather,
    name: `${label} ${unique}`,
    url: `https://${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}-${unique}-${Date.now()}.example.com/a2a`,
    ...overrides,
  };
}

const cleanups: Array<() => Promise<void> | void> = [];
/** Stops every process and removes every directory the suite made. */
export async function cleanupAll() {
  while (cleanups.length) await cleanups.pop()!();
}

let template: Promise<string> | undefined;
/** A migrated PGlite data dir, made once per test process and copied per registry (boots in ~1 s). */
function templateDir(): Promise<string> {
  template ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), "a2a-fed-template-"));
    // Kept for every suite of this test process (bun runs the files in one process), removed at exit.
    process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
    const database = await openDatabase({ dataDir: dir, poolMax: 1 });
    await database.migrate();
    await database.close();
    return dir;
  })();
  return template;
}

/** A fresh data dir for one registry, copied from the template. */
export async function freshDataDir(): Promise<string> {
  const dir = mkdtempSync(join(tmpdir(), "a2a-fed-data-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cpSync(await templateDir(), dir, { recursive: true });
  return dir;
}

export type RegistryOptions = {
  registryId: string;
  /** PGlite data dir (default: a fresh one) unless databaseUrl is given. */
  dataDir?: string;
  databaseUrl?: string;
  port?: number;
  env?: Record<string, string>;
};

export type Registry = {
  id: string;
  base: string;
  port: number;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything the process wrote so far (stdout + stderr). */
  output(): string;
  /** A new admin access token (cached for a few minutes). */
  adminToken(): Promise<string>;
  request(path: string, init?: RequestInit & { json?: unknown; token?: string | null }): Promise<Response>;
  /** SIGKILL, no goodbye. */
  kill(): Promise<void>;
  /** SIGTERM and wait for a clean exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** Starts the same registry again (same port, same database). */
  restart(): Promise<void>;
};

function baseEnv(
  options: RegistryOptions,
  port: number,
  dataDir: string | undefined,
): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: process.env.HOME ?? tmpdir(),
    DEBUG: "true",
    LOG_LEVEL: "warn",
    PORT: String(port),
    HOST: "127.0.0.1",
    SECRET_KEY,
    ADMIN_CLIENT_ID: ADMIN_ID,
    ADMIN_CLIENT_SECRET: ADMIN_SECRET,
    REGISTRY_ID: options.registryId,
    REGISTRY_BASE_URL: `http://127.0.0.1:${port}`,
    FEDERATION_INTERVAL_SECONDS: "1",
    // Liveness probes of the (made-up) agent URLs are another feature's business and only add load here.
    PROBE_ENABLED: "false",
    WEB_CONCURRENCY: "1",
    RATE_LIMIT_TOKEN: "100000/1s",
    RATE_LIMIT_READ: "100000/1s",
    RATE_LIMIT_WRITE: "100000/1s",
    RATE_LIMIT_ADMIN: "100000/1s",
    ...(options.databaseUrl ? { DATABASE_URL: options.databaseUrl } : { DATA_DIR: dataDir! }),
    ...options.env,
  };
}

export async function startRegistry(options: RegistryOptions): Promise<Registry> {
  const port = options.port ?? freePort();
  const dataDir = options.databaseUrl ? undefined : (options.dataDir ?? (await freshDataDir()));
  const base = `http://127.0.0.1:${port}`;
  let log = "";
  let proc!: Subprocess<"ignore", "pipe", "pipe">;
  const drain = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      log += decoder.decode(chunk, { stream: true });
      if (log.length > 2_000_000) log = log.slice(-1_000_000);
    }
  };
  const spawn = async () => {
    proc = Bun.spawn(["bun", "src/index.ts"], {
      cwd: ROOT,
      env: baseEnv(options, port, dataDir),
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    void drain(proc.stdout);
    void drain(proc.stderr);
    // Generous: a loaded CI machine can take a while to boot several registries at once.
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline) {
      if (proc.exitCode !== null)
        throw new Error(`registry ${options.registryId} exited:\n${log.slice(-3000)}`);
      try {
        if ((await fetch(`${base}/health`)).status === 200) return;
      } catch {
        // not listening yet
      }
      await Bun.sleep(50);
    }
    throw new Error(`registry ${options.registryId} did not start:\n${log.slice(-3000)}`);
  };
  await spawn();

  let token: { value: string; until: number } | undefined;
  const registry: Registry = {
    id: options.registryId,
    base,
    port,
    get proc() {
      return proc;
    },
    output: () => log,
    async adminToken() {
      if (token && token.until > Date.now()) return token.value;
      const res = await fetch(`${base}/oauth/token`, {
        method: "POST",
        headers: { authorization: `Basic ${btoa(`${ADMIN_ID}:${ADMIN_SECRET}`)}` },
        body: new URLSearchParams({ grant_type: "client_credentials" }),
      });
      if (res.status !== 200) throw new Error(`admin token: ${res.status} ${await res.text()}`);
      token = {
        value: ((await res.json()) as { access_token: string }).access_token,
        until: Date.now() + 300_000,
      };
      return token.value;
    },
    async request(path, init = {}) {
      const { json, token: bearer, ...rest } = init;
      const headers = new Headers(rest.headers);
      let body = rest.body;
      if (json !== undefined) {
        headers.set("content-type", "application/json");
        body = JSON.stringify(json);
      }
      const auth = bearer === undefined ? await registry.adminToken() : bearer;
      if (auth) headers.set("authorization", `Bearer ${auth}`);
      return fetch(`${base}${path}`, { ...rest, headers, body });
    },
    async kill() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
    async stop() {
      proc.kill("SIGTERM");
      return proc.exited;
    },
    async restart() {
      token = undefined;
      await spawn();
    },
  };
  cleanups.push(async () => {
    if (proc.exitCode === null) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
  });
  return registry;
}

export async function jsonOf<T = Record<string, unknown>>(res: Response): Promise<T> {
  const text = await res.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`expected JSON (${res.status}): ${text.slice(0, 300)}`);
  }
}

/** A client on `registry` with `scopes`; returns its credentials. */
export async function createClient(registry: Registry, scopes: string[], name = "peer client") {
  const res = await registry.request("/v1/clients", { method: "POST", json: { name, scopes } });
  if (res.status !== 201) throw new Error(`create client: ${res.status} ${await res.text()}`);
  const body = await jsonOf<{ client_id: string; client_secret: string }>(res);
  return { clientId: body.client_id, clientSecret: body.client_secret };
}

export type AgentRecord = {
  id: string;
  name: string;
  url: string;
  version: string;
  visibility: string;
  status: string;
  card: Record<string, unknown>;
  source: { registry: string; originId: string; federated: boolean };
};

export async function publish(
  registry: Registry,
  card: unknown,
  extra: { visibility?: string; token?: string } = {},
): Promise<AgentRecord> {
  const res = await registry.request("/v1/agents", {
    method: "POST",
    json: { card, ...(extra.visibility ? { visibility: extra.visibility } : {}) },
    token: extra.token,
  });
  if (res.status !== 201) throw new Error(`publish: ${res.status} ${await res.text()}`);
  return jsonOf<AgentRecord>(res);
}

/** Adds `peer` as a peer of `registry` with a fresh agents:read client on `peer`. */
export async function addPeer(
  registry: Registry,
  peer: Registry,
  options: {
    name?: string;
    intervalSeconds?: number;
    client?: { clientId: string; clientSecret: string };
  } = {},
) {
  const client = options.client ?? (await createClient(peer, ["agents:read"], `${registry.id} puller`));
  const res = await registry.request("/v1/peers", {
    method: "POST",
    json: {
      name: options.name ?? peer.id,
      baseUrl: peer.base,
      clientId: client.clientId,
      clientSecret: client.clientSecret,
      ...(options.intervalSeconds ? { intervalSeconds: options.intervalSeconds } : {}),
    },
  });
  if (res.status !== 201) throw new Error(`add peer: ${res.status} ${await res.text()}`);
  return { peer: await jsonOf<PeerRecord>(res), client };
}

export type PeerRecord = {
  id: string;
  name: string;
  registryId: string | null;
  lastSeq: number;
  lastStatus: string;
  lastError: string | null;
  lastSyncAt: string | null;
  agentsSynced: number;
  consecutiveFailures: number;
  lagChanges: number;
  lagSeconds: number | null;
  nextSyncAt: string;
};

export async function peerOf(registry: Registry, peerId: string) {
  return jsonOf<PeerRecord>(await registry.request(`/v1/peers/${peerId}`));
}

/** Every agent `registry` lists to its admin (all pages), local and federated. */
export async function allAgents(registry: Registry): Promise<AgentRecord[]> {
  const items: AgentRecord[] = [];
  let cursor: string | null = null;
  do {
    const res = await registry.request(`/v1/agents?limit=100${cursor ? `&cursor=${cursor}` : ""}`);
    const page = await jsonOf<{ items: AgentRecord[]; nextCursor: string | null }>(res);
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor);
  return items;
}

/** Copies `registry` holds of agents from `origin` (by origin id). */
export async function copiesFrom(registry: Registry, origin: string) {
  const all = await allAgents(registry);
  return all.filter((a) => a.source.federated && a.source.registry === origin);
}

/** Polls until `check` returns a truthy value or the time is up (then throws with `what`). */
export async function until<T>(
  what: string,
  check: () => Promise<T | undefined | false | null>,
  timeoutMs = 20_000,
) {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    await Bun.sleep(100);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}
