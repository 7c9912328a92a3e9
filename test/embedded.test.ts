import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import postgres from "postgres";

const ROOT = resolve(import.meta.dir, "..");
const FIXTURES = `${import.meta.dir}/../../shared/fixtures/agent-cards/valid`;
const ADMIN_ID = "embedded-admin";
const ADMIN_SECRET = "embedded-admin-secret-0123456789";

const children = new Set<Subprocess>();
const tempDirs: string[] = [];

function tempDir(prefix: string) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** A minimal environment: nothing from the developer's shell (no DATABASE_URL, no SECRET_KEY). */
function baseEnv(extra: Record<string, string>): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: process.env.HOME ?? tmpdir(),
    LOG_LEVEL: "warn",
    ...extra,
  };
}

async function freePort(): Promise<number> {
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("probe") });
  const port = probe.port!;
  await probe.stop(true);
  return port;
}

type Server = { proc: Subprocess<"ignore", "pipe", "pipe">; base: string; output: () => Promise<string> };

function startServer(dataDir: string, port: number, logLevel = "warn"): Server {
  const proc = Bun.spawn(["bun", "src/index.ts"], {
    cwd: ROOT,
    env: baseEnv({
      DEBUG: "true",
      DATA_DIR: dataDir,
      PORT: String(port),
      HOST: "127.0.0.1",
      ADMIN_CLIENT_ID: ADMIN_ID,
      ADMIN_CLIENT_SECRET: ADMIN_SECRET,
      DATABASE_URL: "",
      ENABLE_FEDERATION: "false",
      LOG_LEVEL: logLevel,
    }),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(proc);
  proc.exited.then(() => children.delete(proc));
  // Drained from the start so a chatty child never blocks on a full pipe.
  const text = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text()]).then(
    ([out, err]) => `${out}\n${err}`,
  );
  return { proc, base: `http://127.0.0.1:${port}`, output: () => text };
}

async function waitHealthy(server: Server, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (server.proc.exitCode !== null)
      throw new Error(`server exited with ${server.proc.exitCode}:\n${await server.output()}`);
    try {
      const res = await fetch(`${server.base}/health`);
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    await Bun.sleep(100);
  }
  throw new Error(`server did not become healthy in ${timeoutMs} ms`);
}

/** Sends SIGTERM and resolves with the exit code, or null when it did not exit in time. */
async function stopServer(server: Server, timeoutMs = 10_000): Promise<number | null> {
  server.proc.kill("SIGTERM");
  const code = await Promise.race([server.proc.exited, Bun.sleep(timeoutMs).then(() => null)]);
  if (code === null) server.proc.kill("SIGKILL");
  return code;
}

async function adminToken(base: string): Promise<string> {
  const res = await fetch(`${base}/oauth/token`, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      authorization: `Basic ${Buffer.from(`${ADMIN_ID}:${ADMIN_SECRET}`).toString("base64")}`,
    },
    body: "grant_type=client_credentials",
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function runCli(args: string[], env: Record<string, string>, timeoutMs = 60_000) {
  const proc = Bun.spawn(args, {
    cwd: ROOT,
    env: baseEnv(env),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(proc);
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  children.delete(proc);
  return { code, output: `${stdout}\n${stderr}` };
}

afterAll(async () => {
  for (const child of children) {
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
  await Promise.all([...children].map((c) => c.exited));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

describe("embedded instance (PGlite in DATA_DIR)", () => {
  test("happy: data survives a graceful restart", async () => {
    const dataDir = tempDir("a2a-embedded-");
    const port = await freePort();
    const card = await Bun.file(`${FIXTURES}/translator-1.0.json`).json();

    const first = startServer(dataDir, port);
    await waitHealthy(first);
    const token = await adminToken(first.base);
    const published = await fetch(`${first.base}/v1/agents`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ card }),
    });
    expect(published.status).toBe(201);
    const record = (await published.json()) as { id: string };
    expect(published.headers.get("location")).toBe(`/v1/agents/${record.id}`);

    const started = Date.now();
    const code = await stopServer(first);
    if (code !== 0) console.error(await first.output());
    expect(code).toBe(0);
    expect(Date.now() - started).toBeLessThan(10_000);

    const second = startServer(dataDir, port);
    await waitHealthy(second);
    const got = await fetch(`${second.base}/v1/agents/${record.id}`);
    expect(got.status).toBe(200);
    const body = (await got.json()) as { id: string; card: unknown; status: string };
    expect(body.id).toBe(record.id);
    expect(body.status).toBe("active");
    expect(body.card).toEqual(card);
    const verbatim = await fetch(`${second.base}/v1/agents/${record.id}/card`);
    expect(await verbatim.json()).toEqual(card);

    // The bootstrap admin is still usable after the restart (bootstrap is idempotent).
    expect((await adminToken(second.base)).length).toBeGreaterThan(0);
    const ready = await fetch(`${second.base}/health/ready`);
    expect(ready.status).toBe(200);

    const secondCode = await stopServer(second);
    expect(secondCode).toBe(0);
  }, 200_000);

  test("security: secrets never appear in the server's own output", async () => {
    const dataDir = tempDir("a2a-embedded-log-");
    const port = await freePort();
    const server = startServer(dataDir, port, "info");
    await waitHealthy(server);
    const token = await adminToken(server.base);
    const audit = await fetch(`${server.base}/v1/audit`, { headers: { authorization: `Bearer ${token}` } });
    expect(audit.status).toBe(200);
    await audit.text();
    // The access log is written just after the response; give it a moment before stopping.
    await Bun.sleep(200);
    expect(await stopServer(server)).toBe(0);
    const output = await server.output();
    expect(output).toContain('"route":"/v1/audit"');
    expect(output).not.toContain(ADMIN_SECRET);
    expect(output).not.toContain(token);
  }, 120_000);
});

describe("graceful shutdown", () => {
  test("happy: SIGTERM lets an in-flight request finish, then exits 0", async () => {
    const card = await Bun.file(`${FIXTURES}/weather-0.3.json`).json();
    // A card host that answers slowly, so the publish is still running when SIGTERM arrives.
    const slowHost = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: async () => {
        await Bun.sleep(1500);
        return Response.json(card);
      },
    });
    try {
      const dataDir = tempDir("a2a-drain-");
      const server = startServer(dataDir, await freePort());
      await waitHealthy(server);
      const token = await adminToken(server.base);
      const publishing = fetch(`${server.base}/v1/agents`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
        body: JSON.stringify({ cardUrl: `http://127.0.0.1:${slowHost.port}/.well-known/agent-card.json` }),
      });
      await Bun.sleep(400);
      const exited = stopServer(server);
      const res = await publishing;
      expect(res.status).toBe(201);
      expect(((await res.json()) as { card: unknown }).card).toEqual(card);
      expect(await exited).toBe(0);

      // What was acknowledged was committed.
      const again = startServer(dataDir, await freePort());
      await waitHealthy(again);
      const list = (await (await fetch(`${again.base}/v1/agents`)).json()) as {
        items: Array<{ name: string }>;
      };
      expect(list.items.map((a) => a.name)).toEqual([card.name]);
      expect(await stopServer(again)).toBe(0);
    } finally {
      await slowHost.stop(true);
    }
  }, 150_000);
});

describe("bun run db:migrate", () => {
  test("happy: against a fresh DATA_DIR exits 0 (and again, idempotently)", async () => {
    const dataDir = tempDir("a2a-migrate-");
    const first = await runCli(["bun", "run", "db:migrate"], { DATA_DIR: dataDir, DATABASE_URL: "" });
    expect(first.output).toContain("migrations applied");
    expect(first.code).toBe(0);
    const again = await runCli(["bun", "run", "db:migrate"], { DATA_DIR: dataDir, DATABASE_URL: "" });
    expect(again.code).toBe(0);
  }, 90_000);

  test("errors: a malformed DATABASE_URL exits non-zero naming it", async () => {
    const { code, output } = await runCli(["bun", "src/cli.ts", "migrate"], {
      DATA_DIR: tempDir("a2a-migrate-bad-"),
      DATABASE_URL: "mysql://nope@localhost/db",
    });
    expect(code).not.toBe(0);
    expect(output).toContain("DATABASE_URL");
  }, 30_000);

  test.skipIf(!process.env.TEST_DATABASE_URL)(
    "happy: against a fresh Postgres database exits 0 and creates the schema",
    async () => {
      const adminUrl = process.env.TEST_DATABASE_URL!;
      const name = `a2a_migrate_${process.pid}_${Date.now().toString(36)}`;
      const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        await admin.unsafe(`create database "${name}"`);
        const url = new URL(adminUrl);
        url.pathname = `/${name}`;
        const env = { DATABASE_URL: url.toString(), DATA_DIR: tempDir("a2a-migrate-pg-") };
        const first = await runCli(["bun", "run", "db:migrate"], env);
        expect(first.output).toContain("migrations applied");
        expect(first.code).toBe(0);
        const again = await runCli(["bun", "src/cli.ts", "migrate"], env);
        expect(again.code).toBe(0);
        const db = postgres(url.toString(), { max: 1, onnotice: () => {} });
        try {
          const tables = await db<{ table_name: string }[]>`
            select table_name from information_schema.tables where table_schema = 'public'`;
          expect(tables.map((r) => r.table_name)).toEqual(
            expect.arrayContaining(["agents", "agent_versions", "clients", "audit_log"]),
          );
        } finally {
          await db.end({ timeout: 5 });
        }
      } finally {
        await admin.unsafe(`drop database if exists "${name}" with (force)`);
        await admin.end({ timeout: 5 });
      }
    },
    90_000,
  );
});
