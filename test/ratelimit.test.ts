import { afterAll, beforeAll, describe, expect, spyOn, test } from "bun:test";
import type { Subprocess } from "bun";
import Redis from "ioredis";
import type { EndpointClass, RateLimit } from "../src/config";
import { createLogger } from "../src/infra/logger";
import { createMetrics, type Metrics } from "../src/infra/metrics";
import { createRedisClients } from "../src/infra/redis";
import { createRateLimiter, type LimitDecision, type RateLimiter } from "../src/infra/ratelimit";

const logger = createLogger("silent");

function limits(overrides: Partial<Record<EndpointClass, string>> = {}): Record<EndpointClass, RateLimit> {
  const text: Record<EndpointClass, string> = {
    token: "5/1s",
    read: "10/1s",
    search: "10/1s",
    write: "10/1s",
    admin: "10/1s",
    ...overrides,
  };
  const out = {} as Record<EndpointClass, RateLimit>;
  for (const [cls, value] of Object.entries(text)) {
    const match = /^(\d+)\/(\d+)(ms|s|m|h)$/.exec(value)!;
    const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[3] as "ms" | "s" | "m" | "h"];
    out[cls as EndpointClass] = { limit: Number(match[1]), periodMs: Number(match[2]) * unitMs };
  }
  return out;
}

const prefix = () => `a2a:test:rl:${crypto.randomUUID()}:`;

async function counterValue(metrics: Metrics, name: string, labels: Record<string, string> = {}) {
  const metric = await metrics.registry.getSingleMetric(name)?.get();
  const match = metric?.values.find((v) =>
    Object.entries(labels).every(([k, value]) => v.labels[k] === value),
  );
  return match?.value ?? 0;
}

// ---------- Redis servers owned by this file ----------

function freePort() {
  const server = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = server.port;
  server.stop(true);
  return port;
}

async function startRedis(port: number): Promise<Subprocess> {
  const proc = Bun.spawn(
    ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    { stdout: "ignore", stderr: "ignore" },
  );
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    try {
      const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
      socket.end();
      return proc;
    } catch {
      await Bun.sleep(20);
    }
  }
  proc.kill("SIGKILL");
  throw new Error(`redis-server did not start on port ${port}`);
}

async function stopRedis(proc: Subprocess | undefined) {
  if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGKILL");
  await proc.exited;
}

/** The client options the app is expected to use: fail fast while disconnected, reconnect quickly. */
async function connect(url: string): Promise<Redis> {
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    retryStrategy: () => 100,
    connectTimeout: 1000,
  });
  // Without a listener ioredis prints every reconnect failure of the outage test.
  client.on("error", () => {});
  if (client.status !== "ready") await new Promise((resolve) => client.once("ready", resolve));
  return client;
}

const settle = (values: (LimitDecision | Promise<LimitDecision>)[]) => Promise.all(values);
const allowedCount = (decisions: LimitDecision[]) => decisions.filter((d) => d.allowed).length;

// ---------- in-process ----------

describe("in-process buckets", () => {
  function clockLimiter(overrides: Partial<Record<EndpointClass, string>> = {}) {
    const clock = { t: 1_000_000 };
    const metrics = createMetrics({ collectProcessMetrics: false });
    const limiter = createRateLimiter({ limits: limits(overrides), logger, metrics, now: () => clock.t });
    const take = (key: string, cls: EndpointClass) => {
      const d = limiter.take(key, cls);
      if (d instanceof Promise) throw new Error("in-process decisions must be synchronous");
      return d;
    };
    return { clock, metrics, limiter, take };
  }

  test("allows a burst of N, then denies with headers data, and refills after the period", () => {
    const { clock, limiter, take } = clockLimiter({ read: "5/10s" });
    expect(limiter.mode()).toBe("local");
    const burst = Array.from({ length: 5 }, () => take("1.2.3.4", "read"));
    expect(burst.every((d) => d.allowed)).toBe(true);
    expect(burst.map((d) => d.remaining)).toEqual([4, 3, 2, 1, 0]);
    expect(burst.every((d) => d.limit === 5 && d.retryAfterSeconds === 0)).toBe(true);
    // One token used: full again after 2 s; all five: after the whole period.
    expect(burst[0]!.resetSeconds).toBe(2);
    expect(burst[4]!.resetSeconds).toBe(10);

    const denied = take("1.2.3.4", "read");
    expect(denied).toEqual({
      allowed: false,
      limit: 5,
      remaining: 0,
      resetSeconds: 10,
      retryAfterSeconds: 2,
    });

    // 1.5 s later one token is not there yet (one per 2 s); the wait shrinks to what is left.
    clock.t += 1500;
    expect(take("1.2.3.4", "read")).toMatchObject({ allowed: false, retryAfterSeconds: 1 });
    clock.t += 500;
    expect(take("1.2.3.4", "read")).toMatchObject({ allowed: true, remaining: 0 });
    expect(take("1.2.3.4", "read").allowed).toBe(false);

    clock.t += 10_000;
    const refilled = Array.from({ length: 6 }, () => take("1.2.3.4", "read"));
    expect(allowedCount(refilled)).toBe(5);
    expect(refilled[0]).toMatchObject({ allowed: true, remaining: 4, resetSeconds: 2 });
  });

  test("classes and keys are independent", () => {
    const { take } = clockLimiter({ token: "2/1m", read: "3/1m" });
    expect(allowedCount([take("a", "token"), take("a", "token"), take("a", "token")])).toBe(2);
    expect(take("a", "read")).toMatchObject({ allowed: true, limit: 3, remaining: 2 });
    expect(take("b", "token")).toMatchObject({ allowed: true, limit: 2, remaining: 1 });
    expect(take("a", "token").allowed).toBe(false);
  });

  test("denials are counted in a2a_registry_rate_limited_total by class", async () => {
    const { metrics, take } = clockLimiter({ read: "2/1m", write: "1/1m" });
    for (let i = 0; i < 5; i++) take("client-1", "read");
    for (let i = 0; i < 2; i++) take("client-1", "write");
    const text = await metrics.registry.getSingleMetricAsString("a2a_registry_rate_limited_total");
    expect(text).toContain('a2a_registry_rate_limited_total{class="read"} 3');
    expect(text).toContain('a2a_registry_rate_limited_total{class="write"} 1');
    expect(await counterValue(metrics, "a2a_registry_rate_limiter_fallbacks_total")).toBe(0);
  });

  test("a flood of new keys does not free a drained bucket", () => {
    const { take } = clockLimiter({ read: "3/1h" });
    for (let i = 0; i < 3; i++) take("abuser", "read");
    expect(take("abuser", "read").allowed).toBe(false);
    // More keys than the in-process bound forces eviction; the fullest buckets go first.
    for (let i = 0; i < 120_000; i++) take(`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, "read");
    expect(take("abuser", "read").allowed).toBe(false);
  });
});

// ---------- shared Redis ----------

describe("Redis buckets", () => {
  let url: string;
  let server: Subprocess | undefined;
  const clients: Redis[] = [];
  const limiters: RateLimiter[] = [];

  beforeAll(async () => {
    if (process.env.TEST_REDIS_URL) {
      url = process.env.TEST_REDIS_URL;
    } else {
      const port = freePort();
      server = await startRedis(port);
      url = `redis://127.0.0.1:${port}`;
    }
  });

  afterAll(async () => {
    for (const l of limiters) await l.close();
    for (const c of clients) c.disconnect();
    await stopRedis(server);
  });

  /** Two app instances: separate connections and metrics, same Redis and prefix. */
  async function instances(lims: Record<EndpointClass, RateLimit>, count = 2) {
    const keyPrefix = prefix();
    const out: { limiter: RateLimiter; metrics: Metrics; redis: Redis }[] = [];
    for (let i = 0; i < count; i++) {
      const redis = await connect(url);
      const metrics = createMetrics({ collectProcessMetrics: false });
      const limiter = createRateLimiter({ limits: lims, redis, logger, metrics, keyPrefix });
      clients.push(redis);
      limiters.push(limiter);
      out.push({ limiter, metrics, redis });
    }
    return { keyPrefix, instances: out };
  }

  test("bucket of 50: 200 concurrent takes across two instances allow exactly 50", async () => {
    const {
      instances: [a, b],
    } = await instances(limits({ read: "50/1m" }));
    const calls: (LimitDecision | Promise<LimitDecision>)[] = [];
    for (let i = 0; i < 100; i++)
      calls.push(a!.limiter.take("client-x", "read"), b!.limiter.take("client-x", "read"));
    const decisions = await settle(calls);
    expect(allowedCount(decisions)).toBe(50);
    expect(a!.limiter.mode()).toBe("redis");

    const denied = decisions.filter((d) => !d.allowed);
    expect(denied.every((d) => d.remaining === 0 && d.retryAfterSeconds >= 1 && d.limit === 50)).toBe(true);
    const deniedCounted =
      (await counterValue(a!.metrics, "a2a_registry_rate_limited_total", { class: "read" })) +
      (await counterValue(b!.metrics, "a2a_registry_rate_limited_total", { class: "read" }));
    expect(deniedCounted).toBe(150);
    expect(await counterValue(a!.metrics, "a2a_registry_rate_limiter_fallbacks_total")).toBe(0);

    // Another client and another class still have their own buckets.
    expect((await a!.limiter.take("client-y", "read")).allowed).toBe(true);
    expect((await b!.limiter.take("client-x", "write")).allowed).toBe(true);
  });

  test("a process too busy to read the reply in time does not blame Redis for its own stall", async () => {
    // The connection the app gives the limiter, so ioredis's own timeouts are part of what is tested.
    const clients = createRedisClients(url, logger);
    await clients.ready(5000);
    const metrics = createMetrics({ collectProcessMetrics: false });
    const limiter = createRateLimiter({
      limits: limits({ read: "5/1m" }),
      redis: clients.limiter,
      logger,
      metrics,
      keyPrefix: prefix(),
    });
    try {
      // ioredis's command timeout is a bare timer too, and would drop a reply that arrives after a stall.
      expect(clients.limiter.options.commandTimeout).toBeUndefined();
      // Resumed by a reply, like a handler after a query: what it sends waits until the callback returns.
      await clients.limiter.ping();
      const calls: (LimitDecision | Promise<LimitDecision>)[] = [];
      for (let i = 0; i < 8; i++) calls.push(limiter.take("busy", "read"));
      // Then a long synchronous stretch (a cold embedded query, a GC pause, the host descheduling us),
      // past the limiter's deadline and ioredis's command timeout on the app's other connection.
      const until = performance.now() + 700;
      while (performance.now() < until) {}
      const decisions = await settle(calls);
      expect(limiter.mode()).toBe("redis");
      expect(await counterValue(metrics, "a2a_registry_rate_limiter_fallbacks_total")).toBe(0);
      expect(allowedCount(decisions)).toBe(5);
    } finally {
      await limiter.close();
      await clients.close();
    }
  });

  test("headers data from the shared bucket, and the key expires with the period", async () => {
    const {
      keyPrefix,
      instances: [a],
    } = await instances(limits({ search: "40/1m" }));
    const seen: LimitDecision[] = [];
    for (let i = 0; i < 41; i++) seen.push(await a!.limiter.take("c1", "search"));
    // Leases of 2 while plenty is left, single tokens below the threshold: remaining still counts down by one.
    expect(seen.slice(0, 40).map((d) => d.remaining)).toEqual(Array.from({ length: 40 }, (_, i) => 39 - i));
    // The pooled token is already debited in Redis, so the reset counts it as spent.
    expect(seen[0]).toMatchObject({ allowed: true, limit: 40, resetSeconds: 3, retryAfterSeconds: 0 });
    expect(seen[39]!.resetSeconds).toBeGreaterThanOrEqual(59);
    expect(seen[39]!.resetSeconds).toBeLessThanOrEqual(60);
    expect(seen[40]).toMatchObject({ allowed: false, remaining: 0 });
    // One token per 1.5 s.
    expect(seen[40]!.retryAfterSeconds).toBe(2);

    const pttl = await a!.redis.pttl(`${keyPrefix}search:c1`);
    expect(pttl).toBeGreaterThan(0);
    expect(pttl).toBeLessThanOrEqual(60_000);
  });

  test("refills after the period", async () => {
    const {
      instances: [a, b],
    } = await instances(limits({ write: "50/1s" }));
    const drain = () => {
      const calls: (LimitDecision | Promise<LimitDecision>)[] = [];
      for (let i = 0; i < 40; i++) calls.push(a!.limiter.take("k", "write"), b!.limiter.take("k", "write"));
      return settle(calls);
    };
    // Up to one extra token may drip in (one per 20 ms) while the 80 calls run.
    const first = allowedCount(await drain());
    expect(first).toBeGreaterThanOrEqual(50);
    expect(first).toBeLessThanOrEqual(52);
    const denied = await a!.limiter.take("k", "write");
    expect(denied.allowed).toBe(false);
    expect(denied.retryAfterSeconds).toBe(1);

    await Bun.sleep(1100);
    const second = allowedCount(await drain());
    expect(second).toBeGreaterThanOrEqual(50);
    expect(second).toBeLessThanOrEqual(52);
  });

  test("a large bucket decides mostly synchronously and never over-admits across instances", async () => {
    // An hour-long period keeps the refill during the test below one token, so the bound is exact.
    const {
      instances: [a, b],
    } = await instances(limits({ read: "1000/1h" }));
    // Batch 50, threshold 500: above the threshold one round trip admits 50 requests.
    let sync = 0;
    let allowed = 0;
    for (let i = 0; i < 400; i++) {
      const r = a!.limiter.take("big", "read");
      if (!(r instanceof Promise)) sync++;
      if ((await r).allowed) allowed++;
    }
    expect(allowed).toBe(400);
    expect(sync / 400).toBeGreaterThanOrEqual(0.9);
    console.log(`synchronous decisions above the threshold: ${sync}/400 = ${(sync / 400).toFixed(3)}`);

    // Now both instances drain what is left, concurrently.
    const calls: (LimitDecision | Promise<LimitDecision>)[] = [];
    for (let i = 0; i < 500; i++) calls.push(a!.limiter.take("big", "read"), b!.limiter.take("big", "read"));
    const drained = allowedCount(await settle(calls));
    const total = allowed + drained;
    expect(total).toBeLessThanOrEqual(1000);
    // Tokens can only be stranded in a pool that no later call on that instance asked for.
    expect(total).toBeGreaterThanOrEqual(1000 - 2 * 50);
    console.log(`large bucket: ${total}/1000 admitted across two instances`);
  });

  test("a hot key's leases grow, so it needs a round trip per hundreds of requests, and still never over-admits", async () => {
    const {
      keyPrefix,
      instances: [a],
    } = await instances(limits({ read: "100000/1h" }));
    let scriptCalls = 0;
    const send = a!.redis.sendCommand.bind(a!.redis);
    a!.redis.sendCommand = ((command: { name: string }) => {
      if (/^eval/i.test(command.name)) scriptCalls++;
      return send(command as never);
    }) as typeof send;
    let allowed = 0;
    for (let i = 0; i < 5000; i++) if ((await a!.limiter.take("hot", "read")).allowed) allowed++;
    expect(allowed).toBe(5000);
    // Batches of 100 would take 50 round trips; doubling up to 1,000 takes about a dozen.
    expect(scriptCalls).toBeLessThanOrEqual(20);
    // What Redis debited is what was admitted plus at most the pool this instance still holds: the
    // lease fetched ahead (1,000) and what was left when it was asked for (under half a lease).
    const left = Number(await a!.redis.hget(`${keyPrefix}read:hot`, "tokens"));
    const debited = 100_000 - left;
    expect(debited).toBeGreaterThanOrEqual(5000);
    expect(debited - 5000).toBeLessThanOrEqual(1500);
  });

  test("grown leases still drain a bucket exactly across two instances", async () => {
    const {
      instances: [a, b],
    } = await instances(limits({ read: "5000/1h" }));
    // Warm both instances' leases up to their largest (250 = limit / 20) first.
    let allowed = 0;
    for (let i = 0; i < 1000; i++) {
      if ((await a!.limiter.take("shared", "read")).allowed) allowed++;
      if ((await b!.limiter.take("shared", "read")).allowed) allowed++;
    }
    const calls: (LimitDecision | Promise<LimitDecision>)[] = [];
    for (let i = 0; i < 2000; i++)
      calls.push(a!.limiter.take("shared", "read"), b!.limiter.take("shared", "read"));
    const total = allowed + allowedCount(await settle(calls));
    // A Redis answer slower than the timeout would switch to in-process buckets, which over-admit by
    // design during an outage: this bound holds only while Redis decided every request.
    for (const instance of [a, b])
      expect(await counterValue(instance!.metrics, "a2a_registry_rate_limiter_fallbacks_total")).toBe(0);
    expect(total).toBeLessThanOrEqual(5000);
    // Tokens are stranded only in a pool no later call on that instance asked for: at most one grown
    // lease (250) per instance; below the threshold (10 x 100 tokens) Redis grants one at a time.
    expect(total).toBeGreaterThanOrEqual(5000 - 2 * 250);
  });
});

// ---------- outage ----------

describe("Redis outage", () => {
  let server: Subprocess | undefined;
  let client: Redis | undefined;
  let limiter: RateLimiter | undefined;

  afterAll(async () => {
    await limiter?.close();
    client?.disconnect();
    await stopRedis(server);
  });

  test("falls back to in-process buckets without failing, and returns to Redis on its own", async () => {
    const port = freePort();
    server = await startRedis(port);
    client = await connect(`redis://127.0.0.1:${port}`);
    const metrics = createMetrics({ collectProcessMetrics: false });
    const keyPrefix = prefix();
    const log = createLogger("silent");
    const warn = spyOn(log, "warn");
    const info = spyOn(log, "info");
    limiter = createRateLimiter({
      limits: limits({ read: "100/1m" }),
      redis: client,
      logger: log,
      metrics,
      keyPrefix,
    });
    const fallbacks = () => counterValue(metrics, "a2a_registry_rate_limiter_fallbacks_total");

    for (let i = 0; i < 10; i++) expect((await limiter.take("ip-1", "read")).allowed).toBe(true);
    expect(limiter.mode()).toBe("redis");
    expect(await fallbacks()).toBe(0);

    await stopRedis(server);
    const during: LimitDecision[] = [];
    const started = performance.now();
    for (let i = 0; i < 30; i++) during.push(await limiter.take("ip-1", "read"));
    // Fails fast (offline queue disabled), and every decision still comes back.
    expect(performance.now() - started).toBeLessThan(2000);
    expect(during.every((d) => d.allowed && d.limit === 100)).toBe(true);
    expect(limiter.mode()).toBe("local");
    const counted = await fallbacks();
    expect(counted).toBeGreaterThan(0);
    // The local bucket still limits: 100 in total for this instance during the outage.
    const more: LimitDecision[] = [];
    for (let i = 0; i < 150; i++) more.push(await limiter.take("ip-2", "read"));
    expect(allowedCount(more)).toBe(100);
    expect(await fallbacks()).toBe(counted + 150);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(info).toHaveBeenCalledTimes(0);

    server = await startRedis(port);
    const deadline = Date.now() + 5000;
    while (limiter.mode() !== "redis" && Date.now() < deadline) await Bun.sleep(50);
    expect(limiter.mode()).toBe("redis");
    expect(info).toHaveBeenCalledTimes(1);
    expect(warn).toHaveBeenCalledTimes(1);

    // The restarted Redis is empty: a decision through it creates the bucket there.
    expect((await limiter.take("ip-3", "read")).allowed).toBe(true);
    expect(await client.exists(`${keyPrefix}read:ip-3`)).toBe(1);
    expect(await fallbacks()).toBe(counted + 150);
  }, 15_000);

  test("a hung Redis costs at most the timeout per decision", async () => {
    const port = freePort();
    const own = await startRedis(port);
    const redis = await connect(`redis://127.0.0.1:${port}`);
    const admin = await connect(`redis://127.0.0.1:${port}`);
    const metrics = createMetrics({ collectProcessMetrics: false });
    const hung = createRateLimiter({ limits: limits(), redis, logger, metrics, keyPrefix: prefix() });
    try {
      expect((await hung.take("x", "read")).allowed).toBe(true);
      // CLIENT PAUSE holds every other client's commands, like a Redis stuck on a slow command.
      await admin.call("CLIENT", "PAUSE", "1500", "ALL");
      const started = performance.now();
      const d = await hung.take("y", "read");
      expect(performance.now() - started).toBeLessThan(600);
      expect(d.allowed).toBe(true);
      expect(hung.mode()).toBe("local");
      expect(await counterValue(metrics, "a2a_registry_rate_limiter_fallbacks_total")).toBe(1);
      const deadline = Date.now() + 5000;
      while (hung.mode() !== "redis" && Date.now() < deadline) await Bun.sleep(50);
      expect(hung.mode()).toBe("redis");

      // Stalls of our own restart the wait for Redis, but only a bounded number of times.
      await admin.call("CLIENT", "PAUSE", "4000", "ALL");
      let decided: LimitDecision | undefined;
      void (hung.take("z", "read") as Promise<LimitDecision>).then((d) => {
        decided = d;
      });
      let stalls = 0;
      while (!decided && stalls < 6) {
        const until = performance.now() + 400;
        while (performance.now() < until) {}
        stalls++;
        await Bun.sleep(5);
      }
      expect(decided?.allowed).toBe(true);
      expect(stalls).toBeGreaterThanOrEqual(3);
      expect(stalls).toBeLessThanOrEqual(4);
      expect(hung.mode()).toBe("local");
    } finally {
      await hung.close();
      redis.disconnect();
      admin.disconnect();
      await stopRedis(own);
    }
  }, 15_000);
});
