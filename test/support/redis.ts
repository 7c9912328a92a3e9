import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Redis from "ioredis";
import { createRedisClients, type RedisClients } from "../../src/infra/redis";
import { createLogger } from "../../src/infra/logger";

/** A free TCP port on loopback, found by letting the OS pick one. */
export function freePort(): number {
  const probe = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
  const port = probe.port!;
  probe.stop(true);
  return port;
}

/**
 * A redis-server of the test's own on a spare port, so a test can kill and restart it without
 * touching the shared server on 6379.
 */
export async function startRedisServer(port = freePort()) {
  const dir = mkdtempSync(join(tmpdir(), "a2a-redis-"));
  let proc: ReturnType<typeof Bun.spawn> | undefined;
  const url = `redis://127.0.0.1:${port}`;
  const start = async () => {
    proc = Bun.spawn(
      [
        "redis-server",
        "--port",
        String(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        dir,
      ],
      { stdout: "ignore", stderr: "ignore" },
    );
    const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    client.on("error", () => {});
    for (let i = 0; i < 100; i++) {
      try {
        await client.connect();
        await client.ping();
        client.disconnect();
        return;
      } catch {
        client.disconnect();
        await Bun.sleep(50);
      }
    }
    throw new Error(`redis-server on port ${port} did not start`);
  };
  await start();
  return {
    url,
    port,
    /** SIGKILL: an abrupt outage, no goodbye to clients. */
    async kill() {
      proc?.kill("SIGKILL");
      await proc?.exited;
    },
    restart: start,
    async stop() {
      proc?.kill("SIGKILL");
      await proc?.exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The Redis a suite should use: TEST_REDIS_URL (CI) or a server of its own. */
export async function suiteRedis(): Promise<{ url: string; stop(): Promise<void> }> {
  if (process.env.TEST_REDIS_URL) return { url: process.env.TEST_REDIS_URL, stop: async () => {} };
  const server = await startRedisServer();
  return { url: server.url, stop: server.stop };
}

export function redisClientsFor(url: string): RedisClients {
  return createRedisClients(url, createLogger("silent"));
}

/** Waits until `check` passes or the time is up; returns whether it passed. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 25) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await Bun.sleep(stepMs);
  }
  return check();
}
