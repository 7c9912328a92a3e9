import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import Redis from "ioredis";
import { createInvalidationBus } from "../src/infra/bus";
import { createVersionedCache } from "../src/infra/cache";
import { createLogger } from "../src/infra/logger";
import { createMetrics } from "../src/infra/metrics";
import { cachedAgentCodec, type SerializedAgent } from "../src/modules/agents/service";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";
import { eventually, startRedisServer, suiteRedis } from "./support/redis";

const baseCard = JSON.parse(
  readFileSync(join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
);
let n = 0;
const cardWith = (extra: Record<string, unknown> = {}) => ({
  ...baseCard,
  name: `Cached ${++n}`,
  url: `https://cached-${n}-${Date.now()}.example.com/a2a`,
  version: "1.0.0",
  ...extra,
});

async function metricValue(t: TestApp, layer: string, result: string) {
  const text = await (await t.request("/metrics")).text();
  const line = text
    .split("\n")
    .find((l) => l.startsWith(`a2a_registry_cache_requests_total{layer="${layer}",result="${result}"}`));
  return line ? Number(line.split(" ").pop()) : 0;
}

for (const backend of BACKENDS) {
  describe(`cache across two instances sharing Postgres and Redis [${backend}]`, () => {
    let db: TestDatabase;
    let redis: { url: string; stop(): Promise<void> };
    let a: TestApp;
    let b: TestApp;
    let writer: { clientId: string; token: string };
    let reader: { clientId: string; token: string };

    beforeAll(async () => {
      db = await createTestDatabase(backend);
      redis = await suiteRedis();
      a = await createTestApp(backend, { db, redisUrl: redis.url });
      b = await createTestApp(backend, { db, redisUrl: redis.url });
      const coherent = await eventually(() => a.app.services.bus.coherent() && b.app.services.bus.coherent());
      expect(coherent).toBe(true);
      writer = await a.client(["agents:write"], "writer");
      reader = await a.client(["agents:read"], "reader");
    });
    afterAll(async () => {
      await a.close();
      await b.close();
      await db.drop();
      await redis.stop();
    });

    const publish = async (card = cardWith(), extra: Record<string, unknown> = {}) => {
      const res = await a.request("/v1/agents", {
        method: "POST",
        json: { card, ...extra },
        token: writer.token,
      });
      expect(res.status).toBe(201);
      return json<{ id: string; version: string }>(res);
    };

    test("a record read from Redis on B is byte for byte what A answered, its card stored once", async () => {
      // Pretty-printed, with a member named card inside the card, quotes, a newline and non-ASCII text.
      const card = cardWith({
        description: 'Says "hello"\nin 日本語 and émoji 😀',
        card: { nested: true },
      });
      const cardText = JSON.stringify(card, null, 2);
      const text = `{"card": ${cardText}}`;
      const res = await a.request("/v1/agents", {
        method: "POST",
        body: text,
        headers: { "content-type": "application/json" },
        token: writer.token,
      });
      expect(res.status).toBe(201);
      const { id } = await json<{ id: string }>(res);
      const fromA = {
        record: await (await a.request(`/v1/agents/${id}`)).text(),
        card: await (await a.request(`/v1/agents/${id}/card`)).text(),
      };
      b.app.services.agentCache.clearLocal();
      const before = await metricValue(b, "redis", "hit");
      const record = await b.request(`/v1/agents/${id}`);
      expect(await metricValue(b, "redis", "hit")).toBe(before + 1);
      expect(await record.text()).toBe(fromA.record);
      expect(await (await b.request(`/v1/agents/${id}/card`)).text()).toBe(fromA.card);
      expect(fromA.card).toBe(cardText);
      const stored = (await new Redis(redis.url).get(`a2a:agent:${id}`))!;
      expect(stored.split(fromA.card).length).toBe(2); // the card's text appears exactly once
    });

    test("a write on A is seen by the next read on B, every time (no stale L1 after the write returns)", async () => {
      const card = cardWith();
      const { id } = await publish(card);
      for (let version = 2; version <= 21; version++) {
        // warm B's L1 with the current version, then change it on A
        expect((await b.request(`/v1/agents/${id}`)).status).toBe(200);
        expect(b.app.services.agentCache.peek(id)).toBeDefined();
        const next = { ...card, version: `${version}.0.0` };
        const put = await a.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card: next },
          token: writer.token,
        });
        expect(put.status).toBe(200);
        const read = await json<{ version: string }>(await b.request(`/v1/agents/${id}`));
        expect(read.version).toBe(`${version}.0.0`);
        expect(await (await b.request(`/v1/agents/${id}/card`)).json()).toEqual(next);
      }
    });

    test("a burst of publishes on A: B reads each from Redis at once, with the ETag A answered", async () => {
      const responses = await Promise.all(
        Array.from({ length: 10 }, () =>
          a.request("/v1/agents", { method: "POST", json: { card: cardWith() }, token: writer.token }),
        ),
      );
      expect(responses.map((r) => r.status)).toEqual(Array(10).fill(201));
      const metricsBefore = await (await b.request("/metrics")).text();
      const redisHits = (text: string) =>
        Number(
          /a2a_registry_cache_requests_total\{[^}]*layer="redis",result="hit"[^}]*\} (\d+)/.exec(text)?.[1] ??
            0,
        );
      for (const response of responses) {
        const { id } = await json<{ id: string }>(response.clone());
        const read = await b.request(`/v1/agents/${id}`);
        expect(read.status).toBe(200);
        expect(read.headers.get("etag")).toBe(response.headers.get("etag"));
        expect(await read.text()).toBe(await response.text());
      }
      const metricsAfter = await (await b.request("/metrics")).text();
      expect(redisHits(metricsAfter) - redisHits(metricsBefore)).toBe(10);
    });

    test("delete on A gives 404 on B at once, also for the card", async () => {
      const { id } = await publish();
      expect((await b.request(`/v1/agents/${id}`)).status).toBe(200);
      expect((await b.request(`/v1/agents/${id}/card`)).status).toBe(200);
      expect((await a.request(`/v1/agents/${id}`, { method: "DELETE", token: writer.token })).status).toBe(
        204,
      );
      expect((await b.request(`/v1/agents/${id}`)).status).toBe(404);
      expect((await b.request(`/v1/agents/${id}/card`)).status).toBe(404);
      expect((await a.request(`/v1/agents/${id}`)).status).toBe(404);
    });

    test("making an agent private is enforced on cached entries on both instances", async () => {
      const { id } = await publish();
      for (const app of [a, b]) expect((await app.request(`/v1/agents/${id}`)).status).toBe(200);
      const patch = await a.request(`/v1/agents/${id}`, {
        method: "PATCH",
        json: { visibility: "private" },
        token: writer.token,
      });
      expect(patch.status).toBe(200);
      for (const app of [a, b]) {
        expect((await app.request(`/v1/agents/${id}`)).status).toBe(404);
        expect((await app.request(`/v1/agents/${id}/card`)).status).toBe(404);
        expect((await app.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(404);
        expect((await app.request(`/v1/agents/${id}`, { token: writer.token })).status).toBe(200);
      }
      // the cached record itself is checked on every read: it is in B's L1 now, still hidden
      expect(b.app.services.agentCache.peek(id)).toBeDefined();
      expect((await b.request(`/v1/agents/${id}`)).status).toBe(404);
      // an entitlement granted on A lets the reader see it on B at once
      const grant = await a.request(`/v1/agents/${id}/entitlements/${reader.clientId}`, {
        method: "PUT",
        token: writer.token,
      });
      expect(grant.status).toBe(204);
      expect((await b.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(200);
    });

    test("a client revoked on A cannot use its token on B", async () => {
      const victim = await a.client(["agents:write"], "victim");
      expect((await b.request("/v1/agents", { token: victim.token })).status).toBe(200);
      const admin = await a.client(["admin"], "admin");
      expect(
        (await a.request(`/v1/clients/${victim.clientId}`, { method: "DELETE", token: admin.token })).status,
      ).toBe(204);
      expect((await b.request("/v1/agents", { token: victim.token })).status).toBe(401);
    });

    test("reads on B are served from memory after the first one (L1 hits counted)", async () => {
      const { id } = await publish();
      await b.request(`/v1/agents/${id}`);
      const before = await metricValue(b, "l1", "hit");
      for (let i = 0; i < 5; i++) expect((await b.request(`/v1/agents/${id}`)).status).toBe(200);
      expect(await metricValue(b, "l1", "hit")).toBeGreaterThanOrEqual(before + 5);
    });
  });

  describe(`Redis outage at run time [${backend}]`, () => {
    let server: Awaited<ReturnType<typeof startRedisServer>>;
    let t: TestApp;
    let writer: { token: string };

    beforeAll(async () => {
      server = await startRedisServer();
      t = await createTestApp(backend, { redisUrl: server.url });
      await eventually(() => t.app.services.bus.coherent());
      writer = await t.client(["agents:write"]);
    });
    afterAll(async () => {
      await t.close();
      await server.stop();
    });

    test("reads fall back to Postgres without failing, writes succeed, and the cache recovers by itself", async () => {
      const card = cardWith();
      const res = await t.request("/v1/agents", { method: "POST", json: { card }, token: writer.token });
      const { id } = await json<{ id: string }>(res);
      expect((await t.request(`/v1/agents/${id}`)).status).toBe(200);

      await server.kill();
      expect(await eventually(() => !t.app.services.bus.coherent())).toBe(true);
      const errorsBefore = await metricValue(t, "redis", "error");
      for (let i = 0; i < 10; i++) {
        const read = await t.request(`/v1/agents/${id}`);
        expect(read.status).toBe(200);
      }
      // a write during the outage commits to Postgres and is read back, not a stale copy
      const put = await t.request(`/v1/agents/${id}`, {
        method: "PUT",
        json: { card: { ...card, version: "2.0.0" } },
        token: writer.token,
      });
      expect(put.status).toBe(200);
      expect((await json<{ version: string }>(await t.request(`/v1/agents/${id}`))).version).toBe("2.0.0");
      expect(await metricValue(t, "redis", "error")).toBeGreaterThan(errorsBefore);
      const ready = await json<{ status: string; checks: { cache: { status: string } } }>(
        await t.request("/health/ready"),
      );
      expect(ready.status).toBe("ready");
      expect(ready.checks.cache.status).toBe("degraded");

      await server.restart();
      expect(await eventually(() => t.app.services.bus.coherent(), 10_000)).toBe(true);
      const hitsBefore = await metricValue(t, "redis", "hit");
      t.app.services.agentCache.clearLocal();
      await t.request(`/v1/agents/${id}`); // fills Redis again
      t.app.services.agentCache.clearLocal();
      const again = await json<{ version: string }>(await t.request(`/v1/agents/${id}`));
      expect(again.version).toBe("2.0.0");
      expect(await metricValue(t, "redis", "hit")).toBeGreaterThan(hitsBefore);
    });
  });
}

describe("versioned cache", () => {
  let redis: { url: string; stop(): Promise<void> };
  let client: Redis;
  beforeAll(async () => {
    redis = await suiteRedis();
    client = new Redis(redis.url);
  });
  afterAll(async () => {
    client.disconnect();
    await redis.stop();
  });

  const build = (
    name: string,
    bus = createInvalidationBus({ logger: createLogger("silent") }),
    options: { redis?: Redis; l1MaxEntries?: number; l1TtlMs?: number } = { redis: client },
  ) =>
    createVersionedCache<{ seq: number; v: string }>({
      name,
      redis: options.redis,
      bus,
      metrics: createMetrics({ collectProcessMetrics: false }),
      logger: createLogger("silent"),
      l1MaxEntries: options.l1MaxEntries ?? 2,
      l1TtlMs: options.l1TtlMs ?? 60_000,
      redisTtlSeconds: 60,
      encode: (value) => JSON.stringify(value),
      decode: (text) => JSON.parse(text),
    });

  test("a slow reader's older row never replaces a newer write in Redis", async () => {
    const name = `t${Date.now()}`;
    // one bus stands for the invalidation channel between the two instances
    const bus = createInvalidationBus({ logger: createLogger("silent") });
    const writer = build(name, bus);
    const reader = build(name, bus);
    // The reader misses, loads seq 8 from "Postgres"; while it does, a writer commits seq 9 and writes
    // through. The reader's late fill must lose.
    const value = await reader.get("x", async () => {
      await writer.write("x", { seq: 9, v: "newest" });
      return { seq: 8, v: "older" };
    });
    expect(value?.v).toBe("older"); // what that reader loaded is what it answers with...
    await Bun.sleep(20); // ...but its fill runs in the background
    expect(await client.get(`a2a:${name}:x`)).toBe('9|{"seq":9,"v":"newest"}');
    // and it did not keep the stale copy in its own L1 either: the write invalidated it meanwhile
    expect(reader.peek("x")).toBeUndefined();
    expect((await reader.get("x", async () => ({ seq: 1, v: "never" })))?.v).toBe("newest");
  });

  test("a delete leaves a stamped tombstone that older fills cannot resurrect", async () => {
    const name = `d${Date.now()}`;
    const cache = build(name);
    await cache.write("x", { seq: 1, v: "live" });
    await cache.remove("x", 2);
    cache.clearLocal();
    expect(await cache.get("x", async () => ({ seq: 1, v: "resurrected" }))).toBeNull();
    expect(await client.get(`a2a:${name}:x`)).toBe("2|");
  });

  test("without Redis, forget() drops L1 entries so the next read loads the committed row", async () => {
    const local = build(`f${Date.now()}`, undefined, { l1MaxEntries: 10 });
    expect(local.shared).toBe(false);
    await local.write("a", { seq: 1, v: "old a" });
    await local.write("b", { seq: 2, v: "old b" });
    await local.write("c", { seq: 3, v: "kept" });
    // A fill that started before the change must not land after it.
    const slowFill = local.get("d", async () => {
      await local.forget(["a", "b", "d"]);
      return { seq: 3, v: "stale d" };
    });
    expect((await slowFill)?.v).toBe("stale d");
    expect(local.peek("d")).toBeUndefined();
    expect(local.peek("a")).toBeUndefined();
    expect(local.peek("b")).toBeUndefined();
    expect(local.peek("c")?.v).toBe("kept");
    expect((await local.get("a", async () => ({ seq: 4, v: "new a" })))?.v).toBe("new a");
    // With a shared layer a forgotten id could be refilled from an older Redis copy: refused.
    expect(build(`s${Date.now()}`).shared).toBe(true);
    await expect(build(`s${Date.now()}`).forget(["a"])).rejects.toThrow(/shared layer/);
  });

  test("writeNew: new records to Redis in one call and to L1, without invalidations; never over a newer seq", async () => {
    const name = `n${Date.now()}`;
    const bus = createInvalidationBus({ logger: createLogger("silent") });
    const heard: string[] = [];
    bus.onInvalidation((message) => heard.push(message.id));
    const cache = build(name, bus, { redis: client, l1MaxEntries: 10 });
    // Another instance already stored a newer copy of "b" (it cannot happen for a new id; the script
    // still refuses to go back).
    await client.set(`a2a:${name}:b`, '7|{"seq":7,"v":"newer b"}');
    const calls: string[] = [];
    const monitor = await client.duplicate().monitor();
    monitor.on("monitor", (_time: string, args: string[]) => {
      if (args[0]?.toLowerCase().startsWith("eval")) calls.push(args[0]);
    });
    await cache.writeNew(
      [
        { seq: 5, v: "a" },
        { seq: 6, v: "b" },
      ],
      (value) => value.v,
    );
    await Bun.sleep(50);
    monitor.disconnect();
    expect(calls.length).toBe(1);
    expect(heard).toEqual([]);
    expect(await client.get(`a2a:${name}:a`)).toBe('5|{"seq":5,"v":"a"}');
    expect(await client.get(`a2a:${name}:b`)).toBe('7|{"seq":7,"v":"newer b"}');
    expect(cache.peek("a")?.seq).toBe(5);
    // A reader on another instance finds it in Redis, without loading.
    const other = build(name, bus);
    expect(await other.get("a", async () => ({ seq: 1, v: "loaded" }))).toEqual({ seq: 5, v: "a" });
  });

  test("writeNew without Redis keeps the records in L1 only", async () => {
    const local = build(`m${Date.now()}`, undefined, { l1MaxEntries: 10 });
    await local.writeNew([{ seq: 1, v: "x" }], (value) => value.v);
    expect(local.peek("x")?.seq).toBe(1);
  });

  test("agent records written by the previous release (one JSON object) are still read", () => {
    const agent: SerializedAgent = {
      id: "01a24e1d-b335-7106-96e9-0c22c815886c",
      seq: 7,
      body: '{"id":"x","name":"N","card":{"name":"N",\n "url":"https://n.example"},"owner":null}',
      etag: '"e"',
      cardRaw: '{"name":"N",\n "url":"https://n.example"}',
      cardEtag: '"c-active"',
      visibility: "public",
      owner: null,
      entitled: ["a", "b"],
    };
    expect(cachedAgentCodec.decode(JSON.stringify(agent))).toEqual(agent);
    const encoded = cachedAgentCodec.encode(agent);
    expect(encoded.length).toBeLessThan(JSON.stringify(agent).length);
    expect(cachedAgentCodec.decode(encoded)).toEqual(agent);
  });

  test("L1 is bounded", async () => {
    const cache = build(`b${Date.now()}`);
    for (let i = 0; i < 5; i++) await cache.write(`k${i}`, { seq: i + 1, v: String(i) });
    expect(cache.sizeLocal()).toBeLessThanOrEqual(2);
  });

  describe("refresh ahead of the L1 TTL", () => {
    const TTL = 300;
    type Value = { seq: number; v: string };
    const countingLoader = (value: Value | null = null) => {
      const loader = async (_id: string) => {
        loader.calls++;
        return value;
      };
      loader.calls = 0;
      return loader;
    };

    test("a copy read past half its TTL is renewed from Redis and never expires under its readers", async () => {
      const cache = build(`r${Date.now()}`, undefined, { redis: client, l1TtlMs: TTL });
      await cache.write("x", { seq: 1, v: "one" });
      const load = countingLoader();
      const readUntil = performance.now() + TTL * 3;
      while (performance.now() < readUntil) {
        expect(cache.peek("x", load)?.v).toBe("one");
        await Bun.sleep(TTL / 10);
      }
      // Redis held the same seq each time: renewed without Postgres.
      expect(load.calls).toBe(0);
    });

    test("without reads a copy still expires at its TTL", async () => {
      const cache = build(`e${Date.now()}`, undefined, { redis: client, l1TtlMs: TTL });
      await cache.write("x", { seq: 1, v: "one" });
      await Bun.sleep(TTL + 50);
      expect(cache.peek("x", countingLoader())).toBeUndefined();
    });

    test("a missed invalidation is caught by the refresh: newer bytes, or the deletion", async () => {
      const name = `m${Date.now()}`;
      // Separate buses: B never hears A's invalidations, as if the messages were lost.
      const a = build(name, undefined, { redis: client, l1TtlMs: 60_000 });
      const b = build(name, undefined, { redis: client, l1TtlMs: TTL });
      await a.write("x", { seq: 1, v: "one" });
      await a.write("y", { seq: 2, v: "two" });
      const load = countingLoader();
      expect((await b.get("x", load))?.v).toBe("one");
      expect((await b.get("y", load))?.v).toBe("two");
      await a.write("x", { seq: 3, v: "three" });
      await a.remove("y", 4);
      expect(b.peek("x", load)?.v).toBe("one"); // not refreshed yet: still inside half the TTL
      await Bun.sleep(TTL / 2 + 20);
      expect(b.peek("x", load)?.v).toBe("one"); // served once more, refresh started
      expect(b.peek("y", load)?.v).toBe("two");
      expect(await eventually(() => b.peek("x", load)?.v === "three")).toBe(true);
      expect(await eventually(() => b.peek("y", load) === undefined)).toBe(true);
      expect(load.calls).toBe(0);
    });

    test("without Redis the refresh reloads from the database, and a write during it wins", async () => {
      const cache = build(`p${Date.now()}`, undefined, { l1TtlMs: TTL, l1MaxEntries: 10 });
      await cache.write("x", { seq: 1, v: "one" });
      await Bun.sleep(TTL / 2 + 20);
      let release!: () => void;
      const gate = new Promise<void>((resolve) => {
        release = resolve;
      });
      let loads = 0;
      const slowLoad = async () => {
        loads++;
        await gate;
        return { seq: 1, v: "one, reloaded before the write" };
      };
      expect(cache.peek("x", slowLoad)?.v).toBe("one");
      expect(cache.peek("x", slowLoad)?.v).toBe("one"); // one refresh per id at a time
      expect(loads).toBe(1);
      await cache.write("x", { seq: 2, v: "two" });
      release();
      await Bun.sleep(20);
      expect(cache.peek("x")?.v).toBe("two");
    });

    test("a record gone from the database is dropped by the refresh", async () => {
      const cache = build(`g${Date.now()}`, undefined, { l1TtlMs: TTL, l1MaxEntries: 10 });
      await cache.write("x", { seq: 1, v: "one" });
      await Bun.sleep(TTL / 2 + 20);
      const load = countingLoader(null);
      expect(cache.peek("x", load)?.v).toBe("one");
      expect(await eventually(() => cache.peek("x") === undefined)).toBe(true);
      expect(load.calls).toBe(1);
    });
  });
});
