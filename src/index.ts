import { cpus } from "node:os";
import { sql } from "drizzle-orm";
import { createApp, createDependencies } from "./app";
import { type Config, ConfigError, parseConfig } from "./config";
import { openDatabase } from "./infra/db/client";
import { createAudit } from "./infra/audit";
import { createLogger } from "./infra/logger";
import { createMetrics } from "./infra/metrics";
import { REQUEST_IDLE_TIMEOUT_SECONDS } from "./infra/web";
import { createAuthService } from "./modules/auth/service";

/** Set in the processes a supervisor starts: they serve, the supervisor does not. */
const WORKER_ENV = "A2A_REGISTRY_WORKER";

function processCount(config: Config) {
  // Production runs one process per core unless told otherwise; development keeps one for easy debugging.
  return config.webConcurrency ?? (config.debug ? 1 : Math.max(1, cpus().length));
}

/**
 * WEB_CONCURRENCY > 1: this process migrates once, then starts N copies of itself that share the port
 * (SO_REUSEPORT; the kernel spreads connections), restarts any that die, and passes SIGTERM on.
 * Each copy has its own L1 cache, kept coherent with the others by the Redis invalidation channel.
 */
async function supervise(config: Config, count: number) {
  const logger = createLogger(config.logLevel, { name: "a2a-registry-supervisor" });
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, poolMax: 1 });
  await database.migrate();
  const metrics = createMetrics({ collectProcessMetrics: false });
  const audit = createAudit({ database, metrics, logger });
  await createAuthService({ config, database, audit, metrics, logger }).bootstrapAdmin();
  await database.close();

  let stopping = false;
  const children = new Set<ReturnType<typeof Bun.spawn>>();
  const spawn = (slot: number, attempt = 0) => {
    const child = Bun.spawn([process.execPath, import.meta.path], {
      env: { ...process.env, [WORKER_ENV]: String(slot) },
      stdio: ["ignore", "inherit", "inherit"],
    });
    children.add(child);
    const startedAt = Date.now();
    void child.exited.then((code) => {
      children.delete(child);
      if (stopping) {
        if (children.size === 0) process.exit(0);
        return;
      }
      // A worker that keeps dying at once is backed off, so a bad deploy does not spin the CPU.
      const quick = Date.now() - startedAt < 5000;
      const delay = quick ? Math.min(30_000, 250 * 2 ** attempt) : 0;
      logger.error({ slot, code, restartInMs: delay }, "worker exited; restarting");
      setTimeout(() => spawn(slot, quick ? attempt + 1 : 0), delay);
    });
  };
  for (let slot = 1; slot <= count; slot++) spawn(slot);
  logger.info(
    { processes: count, port: config.port },
    `${config.appName}: ${count} processes sharing the port`,
  );

  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "stopping workers");
    for (const child of children) child.kill(signal);
    if (children.size === 0) process.exit(0);
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

async function main() {
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`Configuration error: ${error.message}`);
      process.exit(1);
    }
    throw error;
  }

  const count = processCount(config);
  if (count > 1 && !process.env[WORKER_ENV]) {
    if (config.databaseUrl) return supervise(config, count);
    // PGlite is one process's database: more processes would need DATABASE_URL.
    if (config.webConcurrency !== undefined)
      console.warn(`WEB_CONCURRENCY=${count} needs DATABASE_URL; the embedded database runs in one process`);
  }

  if (process.env[WORKER_ENV] && !config.redisUrl && config.cache.l1MaxEntries > 0) {
    // Sibling processes cannot tell each other about writes without Redis: an in-process copy could stay
    // stale, so each process reads through to Postgres instead.
    console.warn("WEB_CONCURRENCY > 1 without REDIS_URL: in-process caching is off in every process");
    config.cache.l1MaxEntries = 0;
  }
  const deps = await createDependencies(config);
  const { logger, database } = deps;
  if (config.secretKeyIsDevDefault)
    logger.warn("SECRET_KEY is unset: using the public development key (DEBUG only); tokens are forgeable");
  process.on("unhandledRejection", (reason) => logger.error({ err: reason }, "unhandled promise rejection"));

  // Under a supervisor the schema is already migrated; doing it again is harmless (advisory lock) and cheap.
  await database.migrate();
  // PGlite has no autovacuum: start with planner statistics for whatever the data dir already holds.
  if (database.kind === "pglite") await database.rows(sql`analyze`);
  if (deps.redis && !(await deps.redis.ready(3000)))
    logger.warn("redis not reachable at boot; serving from Postgres and in-process limits until it is");
  const app = createApp(deps);
  if (!process.env[WORKER_ENV]) await app.services.auth.bootstrapAdmin();
  if (app.services.searchIndexer.external) {
    // Elasticsearch down at boot is not fatal: searches use Postgres and writes queue in the outbox.
    await (app.services.searchBackend as { ensureIndex?: () => Promise<void> })
      .ensureIndex?.()
      .catch((error: Error) => logger.warn({ err: error.message }, "search index not ready; using Postgres"));
    app.services.searchIndexer.start();
  }
  app.services.webhooks.start();
  if (config.probe.enabled) app.services.prober.start();

  app.listen({
    port: config.port,
    hostname: config.host,
    // Not Bun's limit: for a declared Content-Length above it Bun answers a bare 413 before the app sees
    // the request. The pipeline refuses a declared length past MAX_BODY_BYTES with a problem+json 413
    // without reading, reads bodies only through its bounded stream reader, and Bun closes the
    // connection of a request whose body the app left unread; so nothing is buffered past the limit.
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    // A request not answered this long after it began is dropped, however its bytes trickle in: Bun's
    // idle timer is not reset by body bytes, so this also bounds slowloris-style slow bodies.
    idleTimeout: REQUEST_IDLE_TIMEOUT_SECONDS,
    reusePort: process.env[WORKER_ENV] !== undefined,
  });
  logger.info(
    {
      port: app.server?.port,
      database: database.kind,
      dataDir: database.kind === "pglite" ? config.dataDir : undefined,
      debug: config.debug,
    },
    `${config.appName} listening on http://${config.host}:${app.server?.port}`,
  );
  // Tombstone retention always (the change feed is always served); the sync worker thread when enabled.
  app.services.federation.start({ worker: config.enableFederation });

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: draining requests");
    try {
      await app.stop(false);
      // Elysia writes access-log lines just after each response; let the last ones run before closing.
      await new Promise((resolve) => setImmediate(resolve));
      await app.services.prober.stop();
      await app.services.webhooks.stop();
      await app.services.searchIndexer.stop();
      // The sync worker finishes the page it is writing and exits before the pools close.
      await app.services.federation.stop();
      await deps.elasticsearch?.close();
      await database.close();
      await app.services.limiter.close();
      await deps.redis?.close();
      logger.info("shutdown complete");
      logger.flush(() => process.exit(0));
    } catch (error) {
      logger.error({ err: error }, "shutdown failed");
      process.exit(1);
    }
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));
}

await main();
