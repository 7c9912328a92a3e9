import { createApp, createDependencies } from "./app";
import { ConfigError, parseConfig } from "./config";

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

  const deps = await createDependencies(config);
  const { logger, database } = deps;
  if (config.secretKeyIsDevDefault)
    logger.warn("SECRET_KEY is unset: using the public development key (DEBUG only); tokens are forgeable");
  process.on("unhandledRejection", (reason) => logger.error({ err: reason }, "unhandled promise rejection"));

  await database.migrate();
  if (deps.redis && !(await deps.redis.ready(3000)))
    logger.warn("redis not reachable at boot; serving from Postgres and in-process limits until it is");
  const app = createApp(deps);
  await app.services.auth.bootstrapAdmin();

  app.listen({
    port: config.port,
    hostname: config.host,
    // Backstop only: the pipeline answers 413 as problem+json before Bun's own limit is reached.
    maxRequestBodySize: config.maxBodyBytes * 2,
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

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: draining requests");
    try {
      await app.stop(false);
      // Elysia writes access-log lines just after each response; let the last ones run before closing.
      await new Promise((resolve) => setImmediate(resolve));
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
