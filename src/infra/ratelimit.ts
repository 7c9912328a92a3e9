import { readFileSync } from "node:fs";
import type Redis from "ioredis";
import type { EndpointClass, RateLimit } from "../config";
import type { Logger } from "./logger";
import type { Metrics } from "./metrics";

export type LimitDecision = {
  allowed: boolean;
  limit: number;
  remaining: number;
  resetSeconds: number;
  retryAfterSeconds: number;
};

export type RateLimiter = {
  /** Decides synchronously when it can (tokens already leased locally, or in-process mode); otherwise returns a Promise. Never throws or rejects. */
  take(key: string, cls: EndpointClass): LimitDecision | Promise<LimitDecision>;
  takeSync(key: string, cls: EndpointClass): LimitDecision | undefined;
  /** "redis" while Redis answers, "local" in in-process mode or during a Redis outage. */
  mode(): "redis" | "local";
  close(): Promise<void>;
};

/** A hung Redis must not stall requests: past this the decision is made locally. */
const REDIS_TIMEOUT_MS = 250;
/** A deadline timer this much late means the process itself was stalled, not waiting on Redis. */
const STALL_MS = 50;
/** Stalls forgiven per decision, so a process that keeps stalling still gives up on a hung Redis. */
const MAX_STALL_RESTARTS = 2;

/**
 * Calls `onTimeout` once Redis has had REDIS_TIMEOUT_MS of this process's attention to answer, and
 * returns the cancel function. A bare timer would blame Redis for our own stalls (a cold embedded
 * query, a GC pause, the host descheduling us): a command issued from a callback is not written until
 * the callback returns, so after a long one the timer is due before the reply can have come back. The
 * instance would then leave the shared bucket and admit from its own. So a timer that fires late
 * restarts the window from now, and the verdict waits one setImmediate, after the loop's next read of
 * its sockets.
 */
function redisDeadline(onTimeout: () => void): () => void {
  let due = performance.now() + REDIS_TIMEOUT_MS;
  let restarts = 0;
  const check = () => {
    const t = performance.now();
    if (t - due > STALL_MS && restarts < MAX_STALL_RESTARTS) {
      restarts++;
      due = t + REDIS_TIMEOUT_MS;
      timer = setTimeout(check, REDIS_TIMEOUT_MS);
      return;
    }
    immediate = setImmediate(onTimeout);
  };
  let timer: ReturnType<typeof setTimeout> | undefined = setTimeout(check, REDIS_TIMEOUT_MS);
  let immediate: ReturnType<typeof setImmediate> | undefined;
  return () => {
    clearTimeout(timer);
    if (immediate) clearImmediate(immediate);
  };
}

/** How often an outage checks whether Redis answers again. */
const PROBE_INTERVAL_MS = 500;
/** Smallest lease batch (limit / 20, capped at 100) for which the next lease is fetched ahead. */
const PREFETCH_MIN_BATCH = 100;
/** A hot key's leases grow up to this many tokens (never past limit / 20, nor a tenth of what is left). */
const MAX_LEASE = 1000;
/** A pool spent faster than this doubles the next lease; one that lasts past the lease TTL resets it. */
const FAST_LEASE_MS = 100;

/** Upper bound on buckets (and on lease records) per endpoint class, so a flood of IPs cannot exhaust memory. */
const MAX_KEYS = 100_000;
/** Float error in a continuous refill must not withhold a token that one period per token has earned. */
const EPS = 1e-9;
const COMMAND = "a2aRateLimitTake";

const SCRIPT = readFileSync(new URL("./ratelimit.lua", import.meta.url), "utf8");

type TakeCommand = (
  key: string,
  limit: number,
  periodMs: number,
  want: number,
  threshold: number,
) => Promise<[number, string, number]>;

/** Per-class constants, computed once so the hot path does no arithmetic on the config. */
type ClassPlan = {
  cls: EndpointClass;
  limit: number;
  periodMs: number;
  /** Tokens per ms. */
  rate: number;
  /** Tokens leased per Redis round trip: amortises the round trip, small enough that a stranded lease is noise. */
  batch: number;
  /** What a hot key's lease may grow to (see Lease.batch). */
  maxBatch: number;
  threshold: number;
  /** Leased tokens die after this: holding them longer could let a burst from the past join a refilled bucket. */
  leaseTtlMs: number;
};

/** The in-process bucket: used alone without Redis, and as the fallback during an outage. */
type Bucket = { tokens: number; ts: number };

/** What this instance knows about a shared bucket between Redis round trips. */
type Lease = {
  /** Tokens already debited in Redis and not yet spent here. */
  pool: number;
  poolExpiresAt: number;
  /** Tokens Redis reported left after the last call, and when (local clock). */
  redisTokens: number;
  redisAt: number;
  /** Redis said the bucket is empty until at least this time, so asking again before then is wasted. */
  deniedUntil: number;
  /** A lease for the pool is on its way (see refillAhead). */
  refilling: boolean;
  /**
   * Tokens to ask for next: the class's batch, doubled each time a pool was spent within FAST_LEASE_MS,
   * up to maxBatch. A key read thousands of times a second then needs a round trip every few dozen ms
   * instead of every few ms, so the lease fetched ahead arrives before the pool runs dry.
   */
  batch: number;
  /** When the last lease was granted (local clock). */
  leasedAt: number;
};

function plan(cls: EndpointClass, { limit, periodMs }: RateLimit): ClassPlan {
  const batch = Math.min(100, Math.max(1, Math.floor(limit / 20)));
  return {
    cls,
    limit,
    periodMs,
    rate: limit / periodMs,
    batch,
    maxBatch: Math.max(batch, Math.min(MAX_LEASE, Math.floor(limit / 20))),
    threshold: 10 * batch,
    leaseTtlMs: Math.min(1000, periodMs),
  };
}

function secondsUntilFull(p: ClassPlan, tokens: number, elapsedMs = 0) {
  return Math.max(0, Math.ceil(((p.limit - tokens) / p.rate - elapsedMs) / 1000));
}

/** Exact token buckets in this process, bounded in number. */
class LocalBuckets {
  private readonly maps = new Map<EndpointClass, Map<string, Bucket>>();

  take(p: ClassPlan, key: string, now: number): LimitDecision {
    let map = this.maps.get(p.cls);
    if (!map) {
      map = new Map();
      this.maps.set(p.cls, map);
    }
    let bucket = map.get(key);
    if (!bucket) {
      if (map.size >= MAX_KEYS) evictBuckets(map, p, now);
      bucket = { tokens: p.limit, ts: now };
      map.set(key, bucket);
    } else if (now > bucket.ts) {
      bucket.tokens = Math.min(p.limit, bucket.tokens + (now - bucket.ts) * p.rate);
      bucket.ts = now;
    }
    if (bucket.tokens + EPS >= 1) {
      bucket.tokens = Math.max(0, bucket.tokens - 1);
      return {
        allowed: true,
        limit: p.limit,
        remaining: Math.floor(bucket.tokens + EPS),
        resetSeconds: secondsUntilFull(p, bucket.tokens),
        retryAfterSeconds: 0,
      };
    }
    return {
      allowed: false,
      limit: p.limit,
      remaining: 0,
      resetSeconds: secondsUntilFull(p, bucket.tokens),
      retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / p.rate / 1000)),
    };
  }

  clear() {
    this.maps.clear();
  }
}

/**
 * Frees at least a tenth of the map. A full bucket is the same as no bucket, so those go first at no cost;
 * beyond that the fullest go next, because dropping a bucket refills it and a nearly full one gives away
 * least. Recency would be the wrong order: a flood of fresh IPs would push out the drained bucket of the
 * client that is actually being limited.
 */
function evictBuckets(map: Map<string, Bucket>, p: ClassPlan, now: number) {
  const fill = (b: Bucket) => Math.min(p.limit, b.tokens + Math.max(0, now - b.ts) * p.rate);
  for (const [key, b] of map) if (fill(b) + EPS >= p.limit) map.delete(key);
  const target = Math.floor(MAX_KEYS * 0.9);
  if (map.size <= target) return;
  const fills = Float64Array.from(map.values(), fill).sort();
  const cutoff = fills[target] ?? Number.POSITIVE_INFINITY;
  for (const [key, b] of map) {
    if (map.size <= target) break;
    if (fill(b) >= cutoff) map.delete(key);
  }
}

/** Dropping a lease record only forgets tokens (under-admits) or a cached denial (costs a round trip). */
function evictLeases(map: Map<string, Lease>, now: number) {
  for (const [key, l] of map)
    if ((l.pool === 0 || now >= l.poolExpiresAt) && now >= l.deniedUntil) map.delete(key);
  const target = Math.floor(MAX_KEYS * 0.9);
  for (const key of map.keys()) {
    if (map.size <= target) break;
    map.delete(key);
  }
}

export function createRateLimiter(options: {
  limits: Record<EndpointClass, RateLimit>;
  redis?: Redis;
  logger: Logger;
  metrics: Metrics;
  keyPrefix?: string;
  now?: () => number;
}): RateLimiter {
  const { redis, logger, metrics } = options;
  const keyPrefix = options.keyPrefix ?? "a2a:rl:";
  const now = options.now ?? (() => performance.now());
  const plans = new Map<EndpointClass, ClassPlan>();
  for (const [cls, limit] of Object.entries(options.limits) as [EndpointClass, RateLimit][])
    plans.set(cls, plan(cls, limit));

  const local = new LocalBuckets();
  const leases = new Map<EndpointClass, Map<string, Lease>>();
  for (const cls of plans.keys()) leases.set(cls, new Map());

  // defineCommand keeps the SHA and sends EVAL only the first time on each connection, so a Redis restart
  // (empty script cache) reloads the script without a NOSCRIPT round trip of our own.
  let command: TakeCommand | undefined;
  if (redis) {
    redis.defineCommand(COMMAND, { numberOfKeys: 1, lua: SCRIPT });
    command = (redis as unknown as Record<string, TakeCommand>)[COMMAND]!.bind(redis);
  }

  let healthy = command !== undefined;
  let closed = false;
  let probing = false;
  let probeTimer: ReturnType<typeof setInterval> | undefined;

  const denied = (p: ClassPlan, d: LimitDecision) => {
    metrics.rateLimited.inc({ class: p.cls });
    return d;
  };

  const decideLocally = (p: ClassPlan, key: string, fallback: boolean) => {
    if (fallback) metrics.rateLimiterFallbacks.inc();
    const d = local.take(p, key, now());
    return d.allowed ? d : denied(p, d);
  };

  const spendFromPool = (p: ClassPlan, lease: Lease, t: number): LimitDecision | undefined => {
    if (lease.pool <= 0) return undefined;
    if (t >= lease.poolExpiresAt) {
      lease.pool = 0;
      return undefined;
    }
    lease.pool--;
    return {
      allowed: true,
      limit: p.limit,
      remaining: Math.min(p.limit, Math.floor(lease.redisTokens + EPS) + lease.pool),
      resetSeconds: secondsUntilFull(p, lease.redisTokens, t - lease.redisAt),
      retryAfterSeconds: 0,
    };
  };

  const leaseFor = (p: ClassPlan, key: string, t: number) => {
    const map = leases.get(p.cls)!;
    let lease = map.get(key);
    if (!lease) {
      if (map.size >= MAX_KEYS) evictLeases(map, t);
      lease = {
        pool: 0,
        poolExpiresAt: 0,
        redisTokens: p.limit,
        redisAt: t,
        deniedUntil: 0,
        refilling: false,
        batch: p.batch,
        leasedAt: Number.NEGATIVE_INFINITY,
      };
      map.set(key, lease);
    }
    return lease;
  };

  // Extending the expiry of older pooled tokens is harmless: they were granted under the same lease TTL
  // and the pool never exceeds one batch per round trip in flight.
  const deposit = (p: ClassPlan, lease: Lease, tokens: number, t: number) => {
    if (tokens <= 0) return;
    lease.pool = (t < lease.poolExpiresAt ? lease.pool : 0) + tokens;
    lease.poolExpiresAt = t + p.leaseTtlMs;
    const sinceLast = t - lease.leasedAt;
    if (sinceLast < FAST_LEASE_MS) lease.batch = Math.min(p.maxBatch, lease.batch * 2);
    else if (sinceLast > p.leaseTtlMs) lease.batch = p.batch;
    lease.leasedAt = t;
  };

  /**
   * How many tokens to ask Redis for: the key's current batch, but never more than a tenth of what
   * Redis last reported left, so a big lease cannot strand much of a bucket that is being used up.
   * Near exhaustion (below the threshold) the script grants one token at a time whatever is asked.
   */
  const wantFor = (p: ClassPlan, lease: Lease | undefined) =>
    // Only one request per key asks for a grown lease at a time: concurrent ones asking for it too
    // would each strand their surplus in the pool.
    lease === undefined || lease.batch <= p.batch || lease.refilling
      ? p.batch
      : Math.max(p.batch, Math.min(lease.batch, Math.floor(lease.redisTokens / 10)));

  /**
   * Leases the next batch in the background while the pool still has tokens. Without it every request
   * that found the pool empty (about one in a hundred on a busy key) waited for its own round trip and
   * took the slow path, which made the p99 of cached reads. Only for large buckets far from empty: the
   * tokens leased ahead are at most one batch (100) of at least 2,000, and the script grants a single
   * token at a time near exhaustion anyway, so what a lease strands stays noise.
   */
  const refillAhead = (p: ClassPlan, key: string, lease: Lease) => {
    if (
      lease.refilling ||
      lease.pool * 2 >= lease.batch ||
      p.batch < PREFETCH_MIN_BATCH ||
      !healthy ||
      !command ||
      lease.redisTokens < p.threshold + p.batch
    )
      return;
    const want = wantFor(p, lease);
    lease.refilling = true;
    try {
      command(keyPrefix + p.cls + ":" + key, p.limit, p.periodMs, want, p.threshold).then(
        (reply) => {
          lease.refilling = false;
          const granted = Number(reply[0]);
          const tokens = Number(reply[1]);
          const t = now();
          if (Number.isFinite(tokens)) {
            lease.redisTokens = tokens;
            lease.redisAt = t;
          }
          if (granted > 0) deposit(p, lease, granted, t);
        },
        (err) => {
          lease.refilling = false;
          markDown(err);
        },
      );
    } catch (err) {
      lease.refilling = false;
      markDown(err);
    }
  };

  const markDown = (err: unknown) => {
    if (!healthy || closed) return;
    healthy = false;
    logger.warn(
      { err },
      "rate limiter: Redis unavailable, deciding with in-process buckets until it answers",
    );
    probeTimer = setInterval(probe, PROBE_INTERVAL_MS);
    probeTimer.unref?.();
  };

  const probe = () => {
    if (probing || closed || !command) return;
    probing = true;
    let done = false;
    const finish = (ok: boolean) => {
      if (done) return;
      done = true;
      cancelDeadline();
      probing = false;
      if (!ok || healthy || closed) return;
      healthy = true;
      clearInterval(probeTimer);
      probeTimer = undefined;
      // The outage budget was per instance; the shared bucket is authoritative again.
      local.clear();
      logger.info("rate limiter: Redis answers again, deciding with shared buckets");
    };
    const cancelDeadline = redisDeadline(() => finish(false));
    try {
      // The real script, not PING: a Redis that answers but cannot run the script is still an outage.
      command(`${keyPrefix}probe`, 1, 1000, 0, 0).then(
        () => finish(true),
        () => finish(false),
      );
    } catch {
      finish(false);
    }
  };

  const fromReply = (
    p: ClassPlan,
    key: string,
    reply: [number, string, number],
    sentAt: number,
  ): LimitDecision => {
    const granted = Number(reply[0]);
    const tokens = Number(reply[1]);
    const waitMs = Number(reply[2]);
    if (!Number.isFinite(granted) || !Number.isFinite(tokens) || !Number.isFinite(waitMs))
      throw new Error(`unexpected rate limit script reply ${JSON.stringify(reply)}`);
    const t = now();
    const lease = leaseFor(p, key, t);
    lease.redisTokens = tokens;
    lease.redisAt = t;
    if (granted >= 1) {
      deposit(p, lease, granted - 1, t);
      return {
        allowed: true,
        limit: p.limit,
        remaining: Math.min(p.limit, Math.floor(tokens + EPS) + lease.pool),
        resetSeconds: secondsUntilFull(p, tokens),
        retryAfterSeconds: 0,
      };
    }
    // Replies to concurrent calls may have filled the pool since this one was sent.
    const pooled = spendFromPool(p, lease, t);
    if (pooled) return pooled;
    // Redis saw the bucket empty no earlier than sentAt, and nothing ever returns tokens to it.
    lease.deniedUntil = Math.max(lease.deniedUntil, sentAt + waitMs);
    return denied(p, {
      allowed: false,
      limit: p.limit,
      remaining: 0,
      resetSeconds: secondsUntilFull(p, tokens),
      retryAfterSeconds: Math.max(1, Math.ceil(waitMs / 1000)),
    });
  };

  /** A request for a grown lease marks the key's lease refilling until Redis answers (see wantFor). */
  const viaRedis = (
    p: ClassPlan,
    key: string,
    run: TakeCommand,
    lease: Lease | undefined,
  ): Promise<LimitDecision> =>
    new Promise((resolve) => {
      const want = wantFor(p, lease);
      const grown = want > p.batch ? lease : undefined;
      if (grown) grown.refilling = true;
      const answered = () => {
        if (grown) grown.refilling = false;
      };
      const sentAt = now();
      let settled = false;
      const fail = (err: unknown) => {
        if (settled) return;
        settled = true;
        cancelDeadline();
        markDown(err);
        resolve(decideLocally(p, key, true));
      };
      const cancelDeadline = redisDeadline(() =>
        fail(new Error(`Redis did not answer within ${REDIS_TIMEOUT_MS} ms`)),
      );
      try {
        run(keyPrefix + p.cls + ":" + key, p.limit, p.periodMs, want, p.threshold).then(
          (reply) => {
            answered();
            if (settled) {
              // Decided locally already; the grant is debited in Redis, so keep it for the next requests.
              try {
                const t = now();
                deposit(p, leaseFor(p, key, t), Number(reply[0]) || 0, t);
              } catch {}
              return;
            }
            try {
              const decision = fromReply(p, key, reply, sentAt);
              settled = true;
              cancelDeadline();
              resolve(decision);
            } catch (err) {
              fail(err);
            }
          },
          (err) => {
            answered();
            fail(err);
          },
        );
      } catch (err) {
        answered();
        fail(err);
      }
    });

  const take = (key: string, cls: EndpointClass): LimitDecision | Promise<LimitDecision> => {
    const p = plans.get(cls);
    if (!p) {
      // A limiter bug must never fail the request it guards.
      logger.error({ cls }, "rate limiter: unknown endpoint class, request allowed");
      return { allowed: true, limit: 0, remaining: 0, resetSeconds: 0, retryAfterSeconds: 0 };
    }
    try {
      const t = now();
      const lease = command ? leases.get(cls)!.get(key) : undefined;
      if (lease) {
        const pooled = spendFromPool(p, lease, t);
        if (pooled) {
          refillAhead(p, key, lease);
          return pooled;
        }
      }
      if (!command) return decideLocally(p, key, false);
      if (!healthy) return decideLocally(p, key, true);
      if (lease && t < lease.deniedUntil)
        return denied(p, {
          allowed: false,
          limit: p.limit,
          remaining: 0,
          resetSeconds: secondsUntilFull(p, lease.redisTokens, t - lease.redisAt),
          retryAfterSeconds: Math.max(1, Math.ceil((lease.deniedUntil - t) / 1000)),
        });
      return viaRedis(p, key, command, lease);
    } catch (err) {
      logger.error({ err }, "rate limiter: unexpected failure, request allowed");
      return { allowed: true, limit: p.limit, remaining: 0, resetSeconds: 0, retryAfterSeconds: 0 };
    }
  };

  /**
   * What `take` would decide, but only when that needs no Redis round trip (leased tokens, a cached
   * denial, or in-process buckets); undefined otherwise, having consumed nothing.
   */
  const takeSync = (key: string, cls: EndpointClass): LimitDecision | undefined => {
    const p = plans.get(cls);
    if (!p) return undefined;
    const t = now();
    const lease = command ? leases.get(cls)!.get(key) : undefined;
    if (lease) {
      const pooled = spendFromPool(p, lease, t);
      if (pooled) {
        refillAhead(p, key, lease);
        return pooled;
      }
    }
    if (!command || !healthy) return take(key, cls) as LimitDecision;
    if (lease && t < lease.deniedUntil) return take(key, cls) as LimitDecision;
    return undefined;
  };

  return {
    take,
    takeSync,
    mode: () => (healthy ? "redis" : "local"),
    close: async () => {
      closed = true;
      if (probeTimer) clearInterval(probeTimer);
      probeTimer = undefined;
      local.clear();
      for (const map of leases.values()) map.clear();
    },
  };
}
