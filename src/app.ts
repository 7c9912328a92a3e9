import { Elysia } from "elysia";
import type { Config } from "./config";
import { createAudit } from "./infra/audit";
import { type Database, openDatabase } from "./infra/db/client";
import type { SafeFetchOptions } from "./infra/http";
import { createLogger, type Logger } from "./infra/logger";
import { createMetrics, type Metrics } from "./infra/metrics";
import { apiDocs } from "./infra/openapi";
import { createRequestContext, webPipeline } from "./infra/web";
import { agentRoutes } from "./modules/agents/routes";
import { createAgentsService } from "./modules/agents/service";
import { authGuard } from "./modules/auth/guard";
import { authRoutes } from "./modules/auth/routes";
import { createAuthService } from "./modules/auth/service";
import { healthRoutes, opsRoutes } from "./modules/ops/routes";

/** Everything the app needs from outside, built once at boot (or per test) and passed in. */
export type Dependencies = {
  config: Config;
  logger: Logger;
  metrics: Metrics;
  database: Database;
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
  return { config, logger, metrics, database, fetchOptions: overrides.fetchOptions };
}

/** Builds the HTTP app and its services over the given dependencies. Migrations are the caller's job. */
export function createApp(deps: Dependencies) {
  const { config, logger, metrics, database } = deps;
  const requests = createRequestContext();
  const audit = createAudit({ database, metrics, logger });
  const auth = createAuthService({ config, database, audit, metrics, logger });
  const agents = createAgentsService({ config, database, audit, metrics, fetchOptions: deps.fetchOptions });
  const guard = authGuard({ auth, requests, metrics });
  const { tokenRoute, clientRoutes } = authRoutes({ auth, guard, audit, metrics, requests });

  // normalize: false makes `additionalProperties: false` reject unknown fields instead of silently
  // dropping them, so a typo in a request is an error the caller sees.
  const app = new Elysia({ name: "a2a-registry", normalize: false })
    .use(webPipeline({ config, logger, metrics, requests }))
    .use(apiDocs(config))
    .use(healthRoutes({ config, database, metrics, logger, agents }))
    // The token endpoint authenticates clients with Basic credentials, so it sits before the bearer guard.
    .use(tokenRoute)
    .use(guard)
    .use(clientRoutes)
    .use(agentRoutes({ config, agents, guard, requests }))
    .use(opsRoutes({ config, database, metrics, logger, agents, guard }));

  return Object.assign(app, { services: { auth, agents, audit } });
}

export type App = ReturnType<typeof createApp>;
