import type { Client as ElasticsearchClient } from "@elastic/elasticsearch";
import { Elysia } from "elysia";
import type { Config } from "./config";
import { createAudit } from "./infra/audit";
import { createInvalidationBus, type InvalidationBus } from "./infra/bus";
import { createVersionedCache } from "./infra/cache";
import { type Database, openDatabase } from "./infra/db/client";
import type { SafeFetchOptions } from "./infra/http";
import { createLogger, type Logger } from "./infra/logger";
import { createMetrics, type Metrics } from "./infra/metrics";
import { apiDocs } from "./infra/openapi";
import { createRateLimiter } from "./infra/ratelimit";
import { rateLimitPlugin } from "./infra/ratelimit-http";
import { createRedisClients, type RedisClients } from "./infra/redis";
import { createElasticsearchClient, createElasticsearchSearch } from "./infra/search/elasticsearch";
import { createPostgresSearch } from "./infra/search/pg";
import { createRequestContext, webPipeline } from "./infra/web";
import { agentRoutes } from "./modules/agents/routes";
import { createFastRead } from "./modules/agents/fast-read";
import { cachedAgentCodec, createAgentsService, type SerializedAgent } from "./modules/agents/service";
import { authGuard } from "./modules/auth/guard";
import { federationRoutes } from "./modules/federation/routes";
import { createFederationService } from "./modules/federation/service";
import { authRoutes } from "./modules/auth/routes";
import { createAuthService } from "./modules/auth/service";
import type { DependencyCheck } from "./modules/ops/model";
import { healthRoutes, opsRoutes } from "./modules/ops/routes";
import { createSearchIndexer } from "./modules/search/indexer";
import { searchRepo } from "./modules/search/repo";
import { searchRoutes } from "./modules/search/routes";
import { createSearchService } from "./modules/search/service";
import { createProber } from "./modules/liveness/prober";
import { livenessRoutes } from "./modules/liveness/routes";
import { webhookRoutes } from "./modules/webhooks/routes";
import { createWebhooksService } from "./modules/webhooks/service";
import { statsRoutes } from "./modules/stats/routes";
import { createStatsService } from "./modules/stats/service";
import { webRoutes } from "./modules/web/routes";
import { catalogRoutes } from "./modules/catalog/routes";
import { compatRoutes } from "./modules/compat/routes";

/** Everything the app needs from outside, built once at boot (or per test) and passed in. */
export type Dependencies = {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  database: Database;
  /** Absent when REDIS_URL is unset: caches and limiter stay in-process. */
  redis?: RedisClients;
  /** Absent when ELASTICSEARCH_URL is unset: Postgres full-text search serves queries. */
  elasticsearch?: ElasticsearchClient;
  fetchOptions?: Partial<SafeFetchOptions>;
};

export async function createDependencies(
  config: Config,
  overrides: Partial<Omit<Dependencies, "config">> = {},
): Promise<Dependencies> {
  const logger = overrides.logger ?? createLogger(config.logLevel);
  const metrics = overrides.metrics ?? createMetrics();
  const database =
    overrides.database ??
    (await openDatabase({
      url: config.databaseUrl,
      dataDir: config.dataDir,
      poolMax: config.databasePoolMax,
    }));
  const redis =
    overrides.redis ?? (config.redisUrl ? createRedisClients(config.redisUrl, logger) : undefined);
  const elasticsearch =
    overrides.elasticsearch ??
    (config.elasticsearchUrl ? createElasticsearchClient(config.elasticsearchUrl) : undefined);
  return { config, logger, metrics, database, redis, elasticsearch, fetchOptions: overrides.fetchOptions };
}

/** Redis is optional for serving (reads fall back to Postgres), so its failure is "degraded", not "down". */
async function redisProbe(redis: RedisClients, bus: InvalidationBus): Promise<DependencyCheck> {
  const started = performance.now();
  try {
    await redis.command.ping();
    const latencyMs = Math.round((performance.now() - started) * 100) / 100;
    return bus.coherent()
      ? { status: "ok", latencyMs }
      : { status: "degraded", latencyMs, detail: "invalidation channel reconnecting" };
  } catch (error) {
    return { status: "degraded", detail: `redis: ${(error as Error).message}; serving from Postgres` };
  }
}

/** Builds the HTTP app and its services over the given dependencies. Migrations are the caller's job. */
export function createApp(deps: Dependencies) {
  const { config, logger, metrics, database } = deps;
  const requests = createRequestContext();
  const audit = createAudit({ database, metrics, logger });
  const bus = createInvalidationBus({
    subscriber: deps.redis?.subscriber,
    publisher: deps.redis?.command,
    logger,
  });
  const auth = createAuthService({ config, database, audit, metrics, logger, bus });
  const limiter = createRateLimiter({
    limits: config.rateLimits,
    redis: deps.redis?.limiter,
    logger,
    metrics,
  });
  const cacheEnabled = config.cache.enabled;
  const agentCache = createVersionedCache<SerializedAgent>({
    name: "agent",
    redis: cacheEnabled ? deps.redis?.command : undefined,
    bus,
    metrics,
    logger,
    l1MaxEntries: cacheEnabled ? config.cache.l1MaxEntries : 0,
    // On PGlite this process is the only writer and sees every invalidation: no expiry needed. On a
    // shared Postgres without Redis, another process (the CLI, an import) may write unheard: TTL bounds it.
    l1TtlMs: deps.redis || database.kind !== "pglite" ? config.cache.l1TtlMs : Number.POSITIVE_INFINITY,
    redisTtlSeconds: config.cache.redisTtlSeconds,
    ...cachedAgentCodec,
  });
  const postgresSearch = createPostgresSearch(database);
  const searchBackend = deps.elasticsearch
    ? createElasticsearchSearch({ client: deps.elasticsearch, logger, source: searchRepo(database) })
    : postgresSearch;
  const searchIndexer = createSearchIndexer({ database, backend: searchBackend, metrics, logger });
  const search = createSearchService({
    config,
    database,
    metrics,
    logger,
    backend: searchBackend,
    fallback: postgresSearch,
    indexer: searchIndexer,
  });
  // Built here, delivering only once started (src/index.ts, or a test): tests drive deliveries themselves.
  const webhooks = createWebhooksService({
    config,
    database,
    audit,
    metrics,
    logger,
    fetchOptions: deps.fetchOptions,
  });
  const agents = createAgentsService({
    config,
    database,
    audit,
    metrics,
    logger,
    cache: agentCache,
    fetchOptions: deps.fetchOptions,
    searchIndex: searchIndexer,
    events: webhooks,
  });
  // Built, never started here: src/index.ts (or a test) calls services.federation.start()/stop().
  const federation = createFederationService({
    config,
    database,
    audit,
    metrics,
    logger,
    agents,
    fetchOptions: deps.fetchOptions,
  });
  // Not started here either: src/index.ts starts it when PROBE_ENABLED; tests run rounds themselves.
  const prober = createProber({ config, database, agents, metrics, logger, fetchOptions: deps.fetchOptions });
  const guard = authGuard({ auth, requests, metrics });
  const fastPath = config.cache.enabled
    ? createFastRead({ config, agents, auth, limiter, metrics, logger })
    : undefined;
  const { tokenRoute, clientRoutes } = authRoutes({ auth, guard, audit, metrics, requests });
  const web = webRoutes({ logger });

  // normalize: false makes `additionalProperties: false` reject unknown fields instead of silently
  // dropping them, so a typo in a request is an error the caller sees.
  // In production Bun routes requests natively; the cached reads are given Bun routes of their own so a
  // hit skips Elysia entirely, and anything the fast path cannot answer goes to the app as usual.
  const toApp = (request: Request): Response | Promise<Response> => app.fetch(request);
  const serveRoutes = fastPath
    ? {
        [fastPath.routes.record]: { GET: fastPath.routeHandler("record", toApp) },
        [fastPath.routes.card]: { GET: fastPath.routeHandler("card", toApp) },
      }
    : undefined;
  const app = new Elysia({
    name: "a2a-registry",
    normalize: false,
    ...(serveRoutes ? { serve: { routes: serveRoutes as never } } : {}),
  })
    .use(webPipeline({ config, logger, metrics, requests, fastPath }))
    .use(apiDocs(config))
    .use(rateLimitPlugin({ limiter, requests }))
    .use(
      healthRoutes({
        config,
        database,
        metrics,
        logger,
        agents,
        probes: {
          ...(deps.redis ? { cache: () => redisProbe(deps.redis!, bus) } : {}),
          search: () => search.health(),
          federationWorker: federation.probe,
        },
      }),
    )
    // The token endpoint authenticates clients with Basic credentials, so it sits before the bearer guard.
    .use(tokenRoute)
    .use(guard)
    .use(clientRoutes)
    .use(agentRoutes({ config, agents, guard, requests }))
    .use(searchRoutes({ search, guard }))
    .use(webhookRoutes({ webhooks, guard, requests }))
    .use(livenessRoutes({ agents, guard, requests }))
    .use(federationRoutes({ federation, guard, requests }))
    .use(opsRoutes({ config, database, metrics, logger, agents, guard }))
    .use(statsRoutes({ stats: createStatsService({ database }), guard }))
    .use(catalogRoutes({ config, database }))
    // The discovery web page (/, /about, /assets/*): rate limited as "read" like any GET.
    .use(web.routes)
    // The older registry's routes. GET /agents/:id is shared with the web page and registered only
    // here: it answers JSON to API clients and hands browsers the page.
    .use(compatRoutes({ config, database, agents, search, guard, requests, htmlPage: web.respond }));

  return Object.assign(app, {
    services: {
      auth,
      agents,
      audit,
      agentCache,
      bus,
      limiter,
      search,
      searchBackend,
      searchIndexer,
      webhooks,
      prober,
      federation,
    },
  });
}

export type App = ReturnType<typeof createApp>;
