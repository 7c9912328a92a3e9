/**
 * Graceful shutdown under load (issue 8, part 2): a registry process over Postgres and Redis, with its
 * background loops running (webhook deliveries, the liveness prober, the federation worker thread),
 * takes concurrent publishes and reads; SIGTERM arrives mid-flight. The process must stop accepting,
 * finish what it accepted (every request that got a response got a 2xx), stop its loops between units
 * of work, close its pools and exit 0 promptly; every acknowledged publish is in Postgres.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  clientToken,
  pgBinDir,
  publisherToken,
  type RegistryProcess,
  registryEnv,
  startRegistryProcess,
  suitePostgres,
  uniqueCard,
  verifyAcknowledged,
} from "./support/faults";
import { describeClasses, isSuccess, startLoad } from "./support/faults-load";
import { eventually, freePort, startRedisServer } from "./support/redis";
import { createTestDatabase } from "./support/db";
import { createLogger } from "../src/infra/logger";
import { createMetrics } from "../src/infra/metrics";
import { createSearchIndexer } from "../src/modules/search/indexer";
import { searchRepo } from "../src/modules/search/repo";

const available =
  (process.env.TEST_DATABASE_URL !== undefined || pgBinDir() !== undefined) &&
  Bun.which("redis-server") !== null;
if (!available && process.env.CI)
  throw new Error("shutdown suite: Postgres and redis-server are required under CI");

describe.skipIf(!available)("graceful shutdown: SIGTERM under load", () => {
  const prefix = `sd${Date.now().toString(36)}`;
  let tmp: string;
  let postgres: Awaited<ReturnType<typeof suitePostgres>>;
  let redis: Awaited<ReturnType<typeof startRedisServer>>;
  let registry: RegistryProcess | undefined;

  beforeAll(async () => {
    tmp = mkdtempSync(join(tmpdir(), "a2a-shutdown-"));
    [postgres, redis] = await Promise.all([suitePostgres(), startRedisServer()]);
  }, 150_000);

  afterAll(async () => {
    await registry?.stop("SIGKILL");
    await redis?.stop();
    await postgres?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 60_000);

  test("in-flight requests finish with 2xx, loops stop, pools close, exit 0; nothing acknowledged is lost", async () => {
    registry = await startRegistryProcess(
      registryEnv({
        port: freePort(),
        databaseUrl: postgres.url,
        redisUrl: redis.url,
        extra: {
          // Every background loop running, so shutdown has to stop each of them.
          ENABLE_FEDERATION: "true",
          PROBE_ENABLED: "true",
          PROBE_INTERVAL_SECONDS: "1",
          PROBE_TIMEOUT_MS: "500",
          LOG_LEVEL: "info",
        },
      }),
      { logDir: tmp, name: "shutdown", timeoutMs: 90_000 },
    );
    const { base } = registry;
    expect(
      await eventually(async () => (await fetch(`${base}/health/ready`)).status === 200, 30_000, 200),
    ).toBe(true);
    const admin = await clientToken(base);
    const { token } = await publisherToken(base, admin);
    // Agents for the readers and the prober (whose probes go to a closed loopback port: refused at once).
    const closedPort = freePort();
    const seeded: string[] = [];
    for (let n = 0; n < 10; n++) {
      const card = { ...uniqueCard(`${prefix}seed`, n), url: `http://127.0.0.1:${closedPort}/a2a/${n}` };
      delete (card as { additionalInterfaces?: unknown }).additionalInterfaces;
      const res = await fetch(`${base}/v1/agents`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ card }),
      });
      expect(res.status).toBe(201);
      seeded.push(((await res.json()) as { id: string }).id);
    }

    // Slow requests: publishes by cardUrl whose card server answers after a second, so they are surely
    // in the middle of their work when the signal lands.
    let cardRequests = 0;
    const cardServer = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      async fetch(request) {
        cardRequests++;
        await Bun.sleep(1000);
        const n = Number(new URL(request.url).pathname.split("/").pop());
        return Response.json(uniqueCard(`${prefix}slow`, n));
      },
    });
    const slow: Array<Promise<{ status: number; id?: string }>> = [];

    const load = startLoad({
      base,
      token,
      readIds: () => seeded,
      workers: { publish: 12, read: 6, search: 2 },
      prefix,
      timeoutMs: 60_000,
    });
    let code: number | null = null;
    let exitMs = 0;
    try {
      // Load is flowing and requests are in flight when the signal lands.
      expect(await eventually(() => load.succeeded("publish") >= 20, 60_000, 50)).toBe(true);
      for (let n = 0; n < 6; n++)
        slow.push(
          fetch(`${base}/v1/agents`, {
            method: "POST",
            headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
            body: JSON.stringify({ cardUrl: `http://127.0.0.1:${cardServer.port}/card/${n}` }),
          }).then(async (res) => ({ status: res.status, id: ((await res.json()) as { id?: string }).id })),
        );
      expect(await eventually(() => cardRequests >= 6, 30_000, 5)).toBe(true);
      expect(load.inFlight()).toBeGreaterThan(0);
      load.phase = "after signal";
      const signalledAt = performance.now();
      registry.proc.kill("SIGTERM");
      code = await Promise.race([registry.proc.exited, Bun.sleep(45_000).then(() => null)]);
      exitMs = performance.now() - signalledAt;
    } finally {
      await load.stop();
    }
    const slowResults = await Promise.all(slow);
    cardServer.stop(true);

    const detail = `publish {${describeClasses(load.classes("publish"))}} read {${describeClasses(
      load.classes("read"),
    )}} search {${describeClasses(load.classes("search"))}}\n${load.failures
      .slice(0, 10)
      .map((f) => `${f.phase} ${f.kind} ${f.cls} ${f.detail ?? ""}`)
      .join("\n")}\n${registry.log().slice(-4000)}`;
    expect(code, `exit code (null: still running 45 s after SIGTERM)\n${detail}`).toBe(0);
    // Every request that got an answer got a 2xx: in-flight ones were finished, not cut off with a 5xx.
    // Requests sent after the listener closed get no answer at all (connection refused or reset).
    for (const kind of ["publish", "read", "search"] as const)
      for (const cls of Object.keys(load.classes(kind)))
        expect(isSuccess(cls) || cls.startsWith("network"), `${kind} ${cls}\n${detail}`).toBe(true);
    // Requests in flight at the signal were answered (draining happened), with a 2xx; the slow ones too.
    expect(load.succeeded("publish", ["before->after signal"]), detail).toBeGreaterThan(0);
    expect(slowResults.map((r) => r.status)).toEqual([201, 201, 201, 201, 201, 201]);
    for (const r of slowResults) load.acked.push({ id: r.id!, sha256: "", name: "slow" });

    const log = registry.log();
    if (process.env.DEBUG_SHUTDOWN)
      console.log(
        log
          .split("\n")
          .filter((l) => !l.includes('"msg":"request"'))
          .slice(-40)
          .join("\n"),
      );
    expect(log).toContain("shutting down: draining requests");
    expect(log).toContain("shutdown complete");
    expect(registry.unhandled(), detail).toEqual([]);
    expect(log).not.toContain("did not stop in time");

    // Nothing acknowledged is lost.
    const check = await verifyAcknowledged(postgres.url, load.acked);
    expect(check.missing).toEqual([]);
    // (the slow ones' bytes are the card server's, not hashed here)
    expect(check.mismatched.filter((id) => !slowResults.some((r) => r.id === id))).toEqual([]);
    console.log(
      `\nshutdown figures: exit ${code} ${Math.round(exitMs)} ms after SIGTERM; publishes {${describeClasses(
        load.classes("publish"),
      )}}; in flight at the signal and answered 2xx: ${load.succeeded("publish", ["before->after signal"]) + load.succeeded("read", ["before->after signal"]) + load.succeeded("search", ["before->after signal"])}; ` +
        `writes acknowledged ${check.acknowledged}, present ${check.present}`,
    );
  }, 170_000);
});

describe("background loops stop between units of work", () => {
  test("the search outbox drain finishes the batch in hand and leaves the rest for the next start", async () => {
    const { database, drop } = await createTestDatabase("pglite");
    try {
      // Three batches of 500 waiting for an external index whose every call takes a while.
      const ids = Array.from({ length: 1500 }, () => crypto.randomUUID());
      await searchRepo(database).enqueue(ids, database.db);
      let calls = 0;
      let released = false;
      let release: () => void = () => {};
      const backend = {
        name: "elasticsearch",
        index: async () => {
          calls++;
          if (!released)
            await new Promise<void>((resolve) => {
              release = () => {
                released = true;
                resolve();
              };
            });
        },
      };
      const indexer = createSearchIndexer({
        database,
        backend: backend as never,
        metrics: createMetrics({ collectProcessMetrics: false }),
        logger: createLogger("silent"),
      });
      const draining = indexer.drain();
      expect(await eventually(() => calls === 1, 10_000, 5)).toBe(true);
      const stopped = indexer.stop();
      release();
      await stopped;
      await draining;
      // Before the fix the loop went on through every batch while shutdown waited for it.
      expect(calls).toBe(1);
      expect(await indexer.pending()).toBe(1000);
    } finally {
      await drop();
    }
  }, 60_000);
});
