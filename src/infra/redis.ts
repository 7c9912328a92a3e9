import Redis, { type RedisOptions } from "ioredis";
import type { Logger } from "./logger";

/**
 * Redis connections for one process: `command` for cache reads/writes, `limiter` for the rate limiter,
 * `subscriber` for the invalidation channel (a subscribed connection cannot run other commands).
 *
 * All fail fast instead of queueing while disconnected: a request must fall back to Postgres at once
 * rather than wait for Redis to come back. ioredis reconnects on its own in the background.
 */
export type RedisClients = {
  command: Redis;
  subscriber: Redis;
  /**
   * The rate limiter's own connection, without ioredis's commandTimeout: that timeout is a bare timer,
   * which after a stall of this process rejects a command whose reply is on its way, and the limiter
   * would leave the shared bucket for its own. The limiter keeps a tighter deadline that forgives our
   * stalls.
   */
  limiter: Redis;
  /** Resolves when every connection is up, or false after `timeoutMs`: boot waits, but never blocks on Redis. */
  ready(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
};

export function redisOptions(): RedisOptions {
  return {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 1000,
    commandTimeout: 500,
    enableAutoPipelining: true,
    retryStrategy: (attempt) => Math.min(50 * attempt, 1000),
    // The first connection attempt happens in the background like every later one.
    lazyConnect: false,
  };
}

export function createRedisClients(url: string, logger: Logger): RedisClients {
  const command = new Redis(url, { ...redisOptions(), connectionName: "a2a-registry" });
  // Subscribed connections must not time out while idle, so no commandTimeout there.
  const subscriber = new Redis(url, {
    ...redisOptions(),
    commandTimeout: undefined,
    enableAutoPipelining: false,
    connectionName: "a2a-registry-sub",
  });
  let downLogged = false;
  const onError = (error: Error) => {
    if (!downLogged)
      logger.warn({ err: error.message }, "redis unavailable; serving from Postgres until it returns");
    downLogged = true;
  };
  const limiter = new Redis(url, {
    ...redisOptions(),
    commandTimeout: undefined,
    connectionName: "a2a-registry-limiter",
  });
  command.on("error", onError);
  subscriber.on("error", onError);
  // Its outages are reported by the limiter itself (a metric and one warning per outage).
  limiter.on("error", () => {});
  command.on("ready", () => {
    if (downLogged) logger.info("redis available again");
    downLogged = false;
  });
  const connected = (client: Redis) =>
    client.status === "ready"
      ? Promise.resolve()
      : new Promise<void>((resolve) => client.once("ready", () => resolve()));
  return {
    command,
    subscriber,
    limiter,
    ready: async (timeoutMs) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), timeoutMs);
      });
      const all = Promise.all([connected(command), connected(subscriber), connected(limiter)]).then(
        () => true,
      );
      const result = await Promise.race([all, timeout]);
      clearTimeout(timer);
      return result;
    },
    close: async () => {
      await Promise.allSettled([command.quit(), subscriber.quit(), limiter.quit()]);
      command.disconnect();
      subscriber.disconnect();
      limiter.disconnect();
    },
  };
}
