import type Redis from "ioredis";
import type { InvalidationBus } from "./bus";
import type { Logger } from "./logger";
import type { Metrics } from "./metrics";

/**
 * Read-through / write-through cache for records that carry a change sequence (`seq`), in two layers:
 * L1 in this process (bounded, short TTL, synchronous) and Redis (shared by every instance), in front
 * of Postgres, which stays the source of truth.
 *
 * Why write-through rather than invalidate-only: after a write the next read on any instance is served
 * from Redis with the new bytes instead of a stampede of instances each re-reading Postgres, and the
 * record is serialised (and its ETag computed) once per change instead of once per instance. Redis
 * entries are stamped with `seq` and only ever replaced by a higher one (one Lua script), so a slow
 * reader that loaded an older row from Postgres can never overwrite a newer write. Deletes leave a
 * stamped tombstone for the same reason.
 *
 * L1 copies are trusted only while the invalidation channel is connected (`bus.coherent()`); while it
 * is not, reads skip L1. Redis failures are counted and fall back to Postgres; they never fail a read.
 *
 * The L1 TTL only bounds how long a copy can outlive an invalidation that never arrived. A copy read
 * past half its TTL is still served, and refreshed from Redis in the background (one at a time per id),
 * so a hot record never expires under its readers: without this every hot record cost one read a slow
 * trip through Redis per TTL, which was the cached read's p99. The bound is unchanged: no copy is
 * served more than a TTL after it was read from Redis or Postgres.
 */
export type CacheOptions<T> = {
  name: string;
  redis?: Redis;
  bus: InvalidationBus;
  metrics: Metrics;
  logger: Logger;
  l1MaxEntries: number;
  l1TtlMs: number;
  redisTtlSeconds: number;
  encode(value: T): string;
  decode(text: string): T;
};

type L1Entry<T> = { value: T; refreshAt: number; expiresAt: number };

// Replace only with a strictly newer seq: stale fills and late writes lose. Values are "<seq>|<json>",
// a tombstone is "<seq>|". Any number of keys in one call: ARGV is the TTL, then a seq and a value per key.
const SET_IF_NEWER = `
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local seq = tonumber(ARGV[2 * i])
  local current = redis.call('GET', key)
  local currentSeq = current and tonumber(string.match(current, '^(%d+)|'))
  if not (currentSeq and currentSeq >= seq) then redis.call('SET', key, ARGV[2 * i + 1], 'EX', ttl) end
end
return #KEYS`;

type RedisWithScript = Redis & {
  cacheSetIfNewer(keyCount: number, ...keysThenArgs: Array<string | number>): Promise<number>;
};

/** A value as Redis holds it: its seq, and the encoded record (null for a tombstone). */
function parseStored(stored: string): { seq: number; text: string | null } {
  const bar = stored.indexOf("|");
  return {
    seq: Number(stored.slice(0, bar)),
    text: bar === stored.length - 1 ? null : stored.slice(bar + 1),
  };
}

export function createVersionedCache<T extends { seq: number }>(options: CacheOptions<T>) {
  const { bus, metrics, logger, l1MaxEntries, l1TtlMs, redisTtlSeconds } = options;
  const redis = options.redis as RedisWithScript | undefined;
  if (redis && typeof redis.cacheSetIfNewer !== "function")
    redis.defineCommand("cacheSetIfNewer", { lua: SET_IF_NEWER });
  /** Each record (its id, seq and Redis value) stored unless Redis holds a newer one; one call. */
  const setIfNewer = (entries: Array<[id: string, seq: number, value: string]>) =>
    redis!.cacheSetIfNewer(
      entries.length,
      ...entries.map(([id]) => prefix + id),
      redisTtlSeconds,
      ...entries.flatMap(([, seq, value]) => [String(seq), value]),
    );

  const l1 = new Map<string, L1Entry<T>>();
  const prefix = `a2a:${options.name}:`;
  /** Bumped by every invalidation: a fill that started before one must not land in L1. */
  let generation = 0;
  /** Ids whose write-through failed: Redis may hold an older copy until they are repaired. */
  const needsRepair = new Set<string>();

  const l1Usable = () => l1MaxEntries > 0 && bus.coherent();
  const count = (layer: "l1" | "redis", result: "hit" | "miss" | "error") =>
    metrics.countCache(layer, result);

  function remember(id: string, value: T) {
    if (!l1Usable()) return;
    if (l1.size >= l1MaxEntries && !l1.has(id)) {
      const oldest = l1.keys().next();
      if (!oldest.done) l1.delete(oldest.value);
    }
    const now = performance.now();
    l1.set(id, { value, refreshAt: now + l1TtlMs / 2, expiresAt: now + l1TtlMs });
  }

  /** Ids whose L1 copy is being refreshed in the background. */
  const refreshing = new Set<string>();

  /**
   * Re-reads a copy that is still being served: Redis first (the same seq only extends the copy's life,
   * without decoding), Postgres when Redis has nothing. The result lands only if the copy is still the
   * one that was read (an invalidation in between dropped or replaced it). A Redis error leaves the
   * copy to expire and the next reader to take the ordinary miss path.
   */
  function refresh(id: string, entry: L1Entry<T>, load: (id: string) => Promise<T | null>) {
    if (refreshing.has(id)) return;
    refreshing.add(id);
    const stillCurrent = () => l1.get(id) === entry;
    const renew = (value: T) => {
      // Re-inserted so that the records being read move to the back of the eviction order.
      l1.delete(id);
      remember(id, value);
    };
    const fromPostgres = async () => {
      const loaded = await load(id);
      if (!stillCurrent()) return;
      if (loaded === null) l1.delete(id);
      else {
        renew(loaded);
        void storeInRedis(id, loaded.seq, options.encode(loaded));
      }
    };
    const run = async () => {
      if (!redis) return fromPostgres();
      let text: string | null;
      try {
        text = await redis.get(prefix + id);
      } catch (error) {
        count("redis", "error");
        logger.debug({ err: (error as Error).message, id }, "cache refresh from redis failed");
        return;
      }
      count("redis", text === null ? "miss" : "hit");
      if (text === null) return fromPostgres();
      const stored = parseStored(text);
      // Redis only ever moves forward; a copy older than this one means Redis lost it: ask Postgres.
      if (!(stored.seq >= entry.value.seq)) return fromPostgres();
      if (!stillCurrent()) return;
      if (stored.text === null)
        l1.delete(id); // deleted, and the invalidation never reached us
      else renew(stored.seq === entry.value.seq ? entry.value : options.decode(stored.text));
    };
    run()
      .catch((error: Error) => logger.debug({ err: error.message, id }, "cache refresh failed"))
      .finally(() => refreshing.delete(id));
  }

  bus.onInvalidation((message) => {
    if (message.kind !== options.name) return;
    generation++;
    l1.delete(message.id);
  });
  bus.onCoherenceChange((coherent) => {
    generation++;
    l1.clear();
    if (coherent && needsRepair.size > 0) void repair();
  });

  async function storeInRedis(id: string, seq: number, text: string): Promise<boolean> {
    if (!redis) return true;
    try {
      await setIfNewer([[id, seq, `${seq}|${text}`]]);
      return true;
    } catch (error) {
      count("redis", "error");
      logger.debug({ err: (error as Error).message, id }, "cache write to redis failed");
      return false;
    }
  }

  async function repair() {
    if (!redis) return;
    for (const id of [...needsRepair]) {
      try {
        await redis.del(prefix + id);
        needsRepair.delete(id);
        await bus.publish({ kind: options.name, id });
      } catch {
        return;
      }
    }
  }

  return {
    /**
     * L1 only and synchronous: the hot path answers from here without awaiting anything. With `load`,
     * a copy past half its TTL is refreshed in the background (see above). `counted: false` leaves
     * the lookup out of the metrics, for a caller that may hand the request on to one that looks again.
     */
    peek(id: string, load?: (id: string) => Promise<T | null>, counted = true): T | undefined {
      if (!l1Usable()) return undefined;
      const entry = l1.get(id);
      if (entry === undefined) {
        if (counted) count("l1", "miss");
        return undefined;
      }
      const now = performance.now();
      if (entry.expiresAt < now) {
        l1.delete(id);
        if (counted) count("l1", "miss");
        return undefined;
      }
      if (entry.refreshAt < now && load !== undefined) refresh(id, entry, load);
      if (counted) count("l1", "hit");
      return entry.value;
    },

    /** L1, then Redis, then `load` (Postgres); null when the record does not exist or was deleted. */
    async get(id: string, load: (id: string) => Promise<T | null>): Promise<T | null> {
      const cached = this.peek(id, load);
      if (cached !== undefined) return cached;
      const startedAt = generation;
      if (redis) {
        try {
          const text = await redis.get(prefix + id);
          if (text !== null) {
            count("redis", "hit");
            const stored = parseStored(text).text;
            if (stored === null) return null; // tombstone
            const value = options.decode(stored);
            if (generation === startedAt) remember(id, value);
            return value;
          }
          count("redis", "miss");
        } catch (error) {
          count("redis", "error");
          logger.debug({ err: (error as Error).message, id }, "cache read from redis failed");
        }
      }
      const loaded = await load(id);
      if (loaded === null) return null;
      if (generation === startedAt) remember(id, loaded);
      void storeInRedis(id, loaded.seq, options.encode(loaded));
      return loaded;
    },

    /** After a committed change: new bytes to Redis, then every instance drops its L1 copy. */
    async write(id: string, value: T): Promise<void> {
      generation++;
      l1.delete(id);
      const stored = await storeInRedis(id, value.seq, options.encode(value));
      if (!stored) needsRepair.add(id);
      await bus.publish({ kind: options.name, id });
      remember(id, value);
    },

    /** After a committed delete: a tombstone stamped with the deleting change's seq. */
    async remove(id: string, seq: number): Promise<void> {
      generation++;
      l1.delete(id);
      if (redis) {
        try {
          await setIfNewer([[id, seq, `${seq}|`]]);
        } catch {
          count("redis", "error");
          needsRepair.add(id);
        }
      }
      await bus.publish({ kind: options.name, id });
    },

    /**
     * After committed inserts of records under new ids (a publish batch): their bytes to Redis in one
     * command, and into L1. No invalidation and no generation bump: no instance can hold a copy of an id
     * that did not exist before this commit (a miss is never remembered), and whatever another instance
     * loads from now on is this same committed row. A failed Redis write needs no repair for the same
     * reason: other instances miss there and read Postgres.
     */
    async writeNew(values: T[], idOf: (value: T) => string): Promise<void> {
      if (values.length === 0) return;
      if (redis) {
        try {
          await setIfNewer(
            values.map((value) => [idOf(value), value.seq, `${value.seq}|${options.encode(value)}`]),
          );
        } catch (error) {
          count("redis", "error");
          logger.debug(
            { err: (error as Error).message, count: values.length },
            "cache write to redis failed",
          );
        }
      }
      for (const value of values) remember(idOf(value), value);
    },

    /** Whether a shared layer (Redis) holds records, so writes should go through to it. */
    shared: redis !== undefined,

    /**
     * After committed changes, with no shared layer: drop this process's copies and let reads fill
     * from Postgres. For bulk changes (a federation page) where loading and serialising every record
     * up front would cost more than the few that are read soon after.
     */
    async forget(ids: string[]): Promise<void> {
      if (redis) throw new Error("forget() is for caches without a shared layer; use write() or remove()");
      generation++;
      for (const id of ids) l1.delete(id);
      await Promise.all(ids.map((id) => bus.publish({ kind: options.name, id })));
    },

    clearLocal() {
      generation++;
      l1.clear();
    },
    sizeLocal: () => l1.size,
  };
}

export type VersionedCache<T extends { seq: number }> = ReturnType<typeof createVersionedCache<T>>;
