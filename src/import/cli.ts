/** The `import` and `export` commands of src/cli.ts: argument handling, services, owner, output. */
import { parseArgs } from "node:util";
import type { Client as ElasticsearchClient } from "@elastic/elasticsearch";
import { createApp, createDependencies } from "../app";
import type { Config } from "../config";
import type { Database } from "../infra/db/client";
import type { Logger } from "../infra/logger";
import { createMetrics } from "../infra/metrics";
import { clientsRepo } from "../modules/auth/repo";
import { ExportError, exportAgents } from "./export";
import { formatImportSummary, importAgents, SOURCE_KINDS, SourceError, type SourceKind } from "./index";

/** A mistake in the command line: the CLI prints it with the usage text. */
export class UsageProblem extends Error {}

export const IMPORTER_CLIENT_NAME = "importer";

type CommandDeps = {
  config: Config;
  database: Database;
  logger: Logger;
  out: (line: string) => void;
  progress: (done: number, total: number) => void;
  elasticsearch?: ElasticsearchClient;
  /** Sends the import's HTTP requests (tests); the global fetch otherwise. */
  fetch?: (request: Request) => Promise<Response>;
};

/** The app's services over the CLI's database, started nothing (no listener, no workers). */
async function services(deps: CommandDeps) {
  const dependencies = await createDependencies(deps.config, {
    database: deps.database,
    logger: deps.logger,
    metrics: createMetrics({ collectProcessMetrics: false }),
    elasticsearch: deps.elasticsearch,
  });
  if (dependencies.redis) await dependencies.redis.ready(2000);
  const app = createApp(dependencies);
  return {
    ...app.services,
    close: async () => {
      await app.services.searchIndexer.stop();
      await app.services.limiter.close();
      await dependencies.redis?.close();
      if (dependencies.elasticsearch && !deps.elasticsearch) await dependencies.elasticsearch.close();
    },
  };
}

export async function importCommand(args: string[], deps: CommandDeps): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      from: { type: "string" },
      token: { type: "string" },
      kind: { type: "string" },
      owner: { type: "string" },
      "dry-run": { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (!values.from) throw new UsageProblem("import needs --from URL or --from DIR");
  if (values.kind !== undefined && !SOURCE_KINDS.includes(values.kind as SourceKind))
    throw new UsageProblem(`--kind must be one of ${SOURCE_KINDS.join(", ")}`);
  const dryRun = values["dry-run"] === true;
  const { out } = deps;
  const app = await services(deps);
  try {
    let owner: string;
    if (values.owner) {
      const client = await clientsRepo(deps.database.db).findByClientId(values.owner);
      if (!client) throw new UsageProblem(`--owner: no client ${values.owner}`);
      if (client.disabled) throw new UsageProblem(`--owner: client ${values.owner} is revoked`);
      owner = client.clientId;
    } else {
      const existing = (await app.auth.listClients()).find(
        (c) => c.name === IMPORTER_CLIENT_NAME && !c.disabled,
      );
      if (existing) owner = existing.clientId;
      else if (dryRun) owner = "";
      else {
        // An owner identity only: its secret is dropped, admins manage what it owns.
        const created = await app.auth.createClient({ name: IMPORTER_CLIENT_NAME, scopes: ["agents:write"] });
        await app.audit.recordDetached({
          actor: "cli",
          action: "client.created",
          target: created.client_id,
          outcome: "success",
          details: { name: created.name, scopes: created.scopes, for: "import" },
        });
        owner = created.client_id;
        out(`owner: created client ${owner} (${IMPORTER_CLIENT_NAME})`);
      }
    }
    if (owner) out(`owner: ${owner}`);
    else out(`owner: a new "${IMPORTER_CLIENT_NAME}" client (created by a run without --dry-run)`);
    let summary: Awaited<ReturnType<typeof importAgents>>;
    try {
      summary = await importAgents(
        { agents: app.agents, database: deps.database, owner },
        {
          from: values.from,
          kind: values.kind as SourceKind | undefined,
          token: values.token,
          dryRun,
          fetch: deps.fetch,
          progress: deps.progress,
        },
      );
    } catch (error) {
      if (error instanceof SourceError) {
        out(`import failed: ${error.message}`);
        return 1;
      }
      const status = (error as { status?: number }).status;
      if (status !== undefined) {
        // A RegistryError while listing the source: the source refused (token, scope) or failed.
        out(`import failed: ${(error as Error).message}`);
        return 1;
      }
      throw error;
    }
    for (const line of formatImportSummary(summary)) out(line);
    return summary.failed > 0 ? 1 : 0;
  } finally {
    await app.close();
  }
}

export async function exportCommand(args: string[], deps: CommandDeps): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { to: { type: "string" } },
    strict: true,
    allowPositionals: false,
  });
  if (!values.to) throw new UsageProblem("export needs --to DIR");
  try {
    const started = performance.now();
    const result = await exportAgents(
      { config: deps.config, database: deps.database },
      { to: values.to, progress: deps.progress },
    );
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    deps.out(
      `exported ${result.count} agents (${result.private} private) to ${result.dir} in ${seconds}s: <id>.json cards and index.json`,
    );
    return 0;
  } catch (error) {
    if (error instanceof ExportError) {
      deps.out(`export failed: ${error.message}`);
      return 1;
    }
    throw error;
  }
}
