import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createTestDatabase, type TestDatabase } from "./support/db";
import { eventually, freePort, suiteRedis } from "./support/redis";

const ROOT = join(import.meta.dir, "..");
const card = JSON.parse(
  readFileSync(join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
);

function childPids(parent: number): number[] {
  const out = Bun.spawnSync(["pgrep", "-P", String(parent)])
    .stdout.toString()
    .trim();
  return out ? out.split("\n").map(Number) : [];
}

// Several processes need a database they can share: real Postgres only.
describe.skipIf(!process.env.TEST_DATABASE_URL)("WEB_CONCURRENCY: processes sharing one port", () => {
  let db: TestDatabase;
  let redis: { url: string; stop(): Promise<void> };
  let supervisor: ReturnType<typeof Bun.spawn>;
  let base: string;
  let token: string;

  beforeAll(async () => {
    db = await createTestDatabase("postgres");
    redis = await suiteRedis();
    const port = freePort();
    base = `http://127.0.0.1:${port}`;
    supervisor = Bun.spawn(["bun", "src/index.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        WEB_CONCURRENCY: "3",
        DEBUG: "true",
        PORT: String(port),
        HOST: "127.0.0.1",
        DATABASE_URL: db.url!,
        REDIS_URL: redis.url,
        LOG_LEVEL: "warn",
        ADMIN_CLIENT_ID: "cluster-admin",
        ADMIN_CLIENT_SECRET: "cluster-admin-secret-0123",
        RATE_LIMIT_READ: "1000000/1s",
        RATE_LIMIT_WRITE: "1000000/1s",
      },
      stdout: "ignore",
      stderr: "inherit",
    });
    const up = await eventually(async () => {
      try {
        return (await fetch(`${base}/health/ready`)).status === 200 && childPids(supervisor.pid).length === 3;
      } catch {
        return false;
      }
    }, 20_000);
    expect(up).toBe(true);
    const res = await fetch(`${base}/oauth/token`, {
      method: "POST",
      headers: { authorization: `Basic ${btoa("cluster-admin:cluster-admin-secret-0123")}` },
      body: new URLSearchParams({ grant_type: "client_credentials" }),
    });
    token = ((await res.json()) as { access_token: string }).access_token;
  });

  afterAll(async () => {
    supervisor?.kill("SIGKILL");
    for (const pid of childPids(supervisor.pid)) process.kill(pid, "SIGKILL");
    await db?.drop();
    await redis?.stop();
  });

  test("N processes serve; a write through one is what every process reads next", async () => {
    expect(childPids(supervisor.pid)).toHaveLength(3);
    const created = await fetch(`${base}/v1/agents`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({
        card: { ...card, url: `https://cluster-${Date.now()}.example.com/a2a`, version: "1.0.0" },
      }),
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    for (let version = 2; version <= 6; version++) {
      // warm every process's L1 (new connections spread across processes), then write
      await Promise.all(
        Array.from({ length: 12 }, () => fetch(`${base}/v1/agents/${id}`, { keepalive: false })),
      );
      const put = await fetch(`${base}/v1/agents/${id}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({
          card: { ...card, url: `https://cluster-v.example.com/${id}`, version: `${version}.0.0` },
        }),
      });
      expect(put.status).toBe(200);
      const reads = await Promise.all(
        Array.from({ length: 12 }, async () => {
          const res = await fetch(`${base}/v1/agents/${id}`, { keepalive: false });
          return ((await res.json()) as { version: string }).version;
        }),
      );
      expect(new Set(reads)).toEqual(new Set([`${version}.0.0`]));
    }
  });

  test("a worker that dies is replaced; SIGTERM stops them all and exits 0", async () => {
    const [first] = childPids(supervisor.pid);
    process.kill(first!, "SIGKILL");
    expect(
      await eventually(() => {
        const pids = childPids(supervisor.pid);
        return pids.length === 3 && !pids.includes(first!);
      }, 10_000),
    ).toBe(true);
    expect((await fetch(`${base}/health`)).status).toBe(200);
    const children = childPids(supervisor.pid);
    supervisor.kill("SIGTERM");
    expect(await supervisor.exited).toBe(0);
    for (const pid of children) expect(() => process.kill(pid, 0)).toThrow();
  });
});
