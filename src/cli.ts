import { parseArgs } from "node:util";
import type { Client as ElasticsearchClient } from "@elastic/elasticsearch";
import { createAudit } from "./infra/audit";
import { createInvalidationBus } from "./infra/bus";
import { openDatabase } from "./infra/db/client";
import { createLogger } from "./infra/logger";
import { createMetrics } from "./infra/metrics";
import { createRedisClients } from "./infra/redis";
import { createElasticsearchClient, createElasticsearchSearch } from "./infra/search/elasticsearch";
import { createPostgresSearch } from "./infra/search/pg";
import { searchRepo } from "./modules/search/repo";
import { ConfigError, parseConfig } from "./config";
import { SCOPES, type Scope } from "./modules/auth/model";
import { createAuthService } from "./modules/auth/service";

const USAGE = `Usage: bun run cli <command>

  migrate                                   apply database migrations
  clients create --name NAME --scopes a,b   create a client; prints its secret once
  clients list                              list clients (never secrets)
  clients revoke CLIENT_ID                  revoke a client; its tokens stop working at once
  reindex                                   rebuild the search index from the database (safe while
                                            serving: Elasticsearch gets a new index and an alias swap)
  import --from URL|DIR [--token T] [--kind registry|a2areg|dir] [--owner CLIENT_ID] [--dry-run]
                                            import every agent from another registry of this kind (its
                                            /v1/changes feed; without --token its public agents), the
                                            older A2AReg registry (/agents/public) or a directory of card
                                            files; re-runs import only what is new. Owner: --owner, else
                                            a client named "importer" (created on first use)
  export --to DIR                           write every agent's card as DIR/<id>.json (exact bytes) and
                                            an index.json manifest

Scopes: ${SCOPES.join(", ")}. Uses DATABASE_URL, or the embedded database in DATA_DIR when unset;
ELASTICSEARCH_URL selects Elasticsearch for reindex (else the Postgres search documents are rebuilt).`;

class UsageError extends Error {}

export type CliOptions = {
  /** Where progress goes: a redrawn bar on a terminal, a line every tenth otherwise. */
  progress?: (done: number, total: number) => void;
  /** Overrides the client ELASTICSEARCH_URL would give (tests pass a fake). */
  elasticsearch?: ElasticsearchClient;
  /** Sends import's HTTP requests (tests); the global fetch otherwise. */
  fetch?: (request: Request) => Promise<Response>;
};

/** A progress reporter for stderr: a bar redrawn in place on a terminal, sparse lines when piped. */
export function progressReporter(label: string, stream: NodeJS.WriteStream = process.stderr) {
  const started = performance.now();
  let lastTenth = -1;
  return (done: number, total: number) => {
    const fraction = total > 0 ? Math.min(1, done / total) : 1;
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    const counts = `${done.toLocaleString("en-US")}/${total.toLocaleString("en-US")} ${label} ${seconds}s`;
    if (stream.isTTY) {
      const width = 30;
      const filled = Math.round(fraction * width);
      stream.write(
        `\r[${"#".repeat(filled)}${".".repeat(width - filled)}] ${Math.floor(fraction * 100)}% ${counts}`,
      );
      if (done >= total) stream.write("\n");
      return;
    }
    const tenth = Math.floor(fraction * 10);
    if (tenth === lastTenth) return;
    lastTenth = tenth;
    stream.write(`${Math.floor(fraction * 100)}% ${counts}\n`);
  };
}

export async function runCli(
  argv: string[],
  out: (line: string) => void = console.log,
  options: CliOptions = {},
): Promise<number> {
  const [command, subcommand, ...rest] = argv;
  if (!command || command === "help" || command === "--help") {
    out(USAGE);
    return command ? 0 : 2;
  }
  const known =
    command === "migrate" ||
    command === "reindex" ||
    command === "import" ||
    command === "export" ||
    (command === "clients" && ["create", "list", "revoke"].includes(subcommand ?? ""));
  if (!known) {
    out(`Unknown command: ${[command, subcommand].filter(Boolean).join(" ")}\n\n${USAGE}`);
    return 2;
  }
  const config = parseConfig(process.env, { requireSecret: false });
  const logger = createLogger(process.env.LOG_LEVEL ?? "warn");
  const database = await openDatabase({ url: config.databaseUrl, dataDir: config.dataDir, poolMax: 2 });
  const cleanups: (() => Promise<void>)[] = [];
  try {
    await database.migrate();
    if (command === "migrate") {
      out(`migrations applied (${database.kind})`);
      return 0;
    }
    if (command === "import" || command === "export") {
      // Loaded on demand: these two build the app's services, the other commands need far less.
      const commands = await import("./import/cli");
      const run = command === "import" ? commands.importCommand : commands.exportCommand;
      try {
        return await run(argv.slice(1), {
          config,
          database,
          logger,
          out,
          progress: options.progress ?? progressReporter(command === "import" ? "cards" : "agents"),
          elasticsearch: options.elasticsearch,
          fetch: options.fetch,
        });
      } catch (error) {
        if (error instanceof commands.UsageProblem) throw new UsageError(error.message);
        throw error;
      }
    }
    if (command === "reindex") {
      const elasticsearch =
        options.elasticsearch ??
        (config.elasticsearchUrl
          ? // Bulk requests of a thousand documents take longer than the serving client's 2 s budget.
            createElasticsearchClient(config.elasticsearchUrl, { requestTimeout: 60_000, maxRetries: 3 })
          : undefined);
      if (elasticsearch && !options.elasticsearch) cleanups.push(() => elasticsearch.close());
      const backend = elasticsearch
        ? createElasticsearchSearch({ client: elasticsearch, logger, source: searchRepo(database) })
        : createPostgresSearch(database);
      const started = performance.now();
      const { indexed } = await backend.reindexAll(options.progress ?? progressReporter("agents"));
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      out(`reindexed ${indexed} agents into ${backend.name} in ${seconds}s`);
      return 0;
    }
    const metrics = createMetrics({ collectProcessMetrics: false });
    const audit = createAudit({ database, metrics, logger });
    // With Redis, a revocation from here reaches the running instances' caches at once.
    const redis = config.redisUrl ? createRedisClients(config.redisUrl, logger) : undefined;
    if (redis) await redis.ready(2000);
    const bus = redis ? createInvalidationBus({ publisher: redis.command, logger }) : undefined;
    cleanups.push(async () => redis?.close());
    const auth = createAuthService({ config, database, audit, metrics, logger, bus });

    if (subcommand === "create") {
      const { values } = parseArgs({
        args: rest,
        options: { name: { type: "string" }, scopes: { type: "string" } },
        strict: true,
      });
      if (!values.name) throw new UsageError("--name is required");
      const scopes = (values.scopes ?? "agents:read")
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
      const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
      if (unknown.length || scopes.length === 0) throw new UsageError(`Unknown scope: ${unknown.join(", ")}`);
      const created = await auth.createClient({ name: values.name, scopes: scopes as Scope[] });
      await audit.recordDetached({
        actor: "cli",
        action: "client.created",
        target: created.client_id,
        outcome: "success",
        details: { name: created.name, scopes: created.scopes },
      });
      out(`client_id:     ${created.client_id}`);
      out(`client_secret: ${created.client_secret}`);
      out(`scopes:        ${created.scopes.join(" ")}`);
      out("Store the secret now: it is not shown again and only its hash is kept.");
      return 0;
    }
    if (subcommand === "list") {
      for (const row of await auth.listClients())
        out(
          `${row.clientId}\t${row.disabled ? "revoked" : "active"}\t${row.scopes.join(",")}\t${row.name}\t${row.createdAt.toISOString()}`,
        );
      return 0;
    }
    if (subcommand === "revoke") {
      const clientId = rest[0];
      if (!clientId) throw new UsageError("clients revoke needs a CLIENT_ID");
      if (!(await auth.revokeClient(clientId))) {
        out(`No client ${clientId}`);
        return 1;
      }
      await audit.recordDetached({
        actor: "cli",
        action: "client.revoked",
        target: clientId,
        outcome: "success",
      });
      out(`revoked ${clientId}`);
      return 0;
    }
    throw new UsageError(`Unknown clients subcommand: ${subcommand}`);
  } catch (error) {
    if (error instanceof UsageError || error instanceof TypeError) {
      out(`${error.message}\n\n${USAGE}`);
      return 2;
    }
    throw error;
  } finally {
    for (const cleanup of cleanups) await cleanup();
    await database.close();
  }
}

if (import.meta.main) {
  try {
    process.exitCode = await runCli(process.argv.slice(2));
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`Configuration error: ${error.message}`);
      process.exitCode = 1;
    } else throw error;
  }
}
