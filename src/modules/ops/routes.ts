import { Elysia } from "elysia";
import type { Config } from "../../config";
import { ApiError, ProblemSchema } from "../../errors";
import type { Database } from "../../infra/db/client";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { AgentsService } from "../agents/service";
import type { AuthGuard } from "../auth/guard";
import {
  AgentsIndex,
  AuditPage,
  AuditQuery,
  type DependencyCheck,
  HealthResponse,
  IndexQuery,
  type Readiness,
  ReadinessResponse,
} from "./model";
import { auditRepo } from "./repo";

export type ReadinessProbe = () => Promise<DependencyCheck>;

type Deps = {
  config: Config;
  database: Database;
  metrics: Metrics;
  logger: Logger;
  agents: AgentsService;
  guard: AuthGuard;
  /** Probes owned by other subsystems (cache, search, federation worker); absent means disabled. */
  probes?: Partial<Record<"cache" | "search" | "federationWorker", ReadinessProbe>>;
};

/** This registry described as an A2A agent (0.3.0 card), so A2A clients can discover it like any agent. */
export function registryCard(config: Config) {
  return {
    protocolVersion: "0.3.0",
    name: config.appName,
    description:
      "An A2A agent registry: publish Agent Cards, discover agents by skill, tag and mode, and federate with peer registries.",
    url: `${config.registryBaseUrl}/v1`,
    preferredTransport: "HTTP+JSON",
    version: config.appVersion,
    provider: { organization: config.appName, url: config.registryBaseUrl },
    documentationUrl: `${config.registryBaseUrl}/docs`,
    capabilities: {
      streaming: false,
      pushNotifications: false,
      stateTransitionHistory: false,
      // Where this registry's public agents are listed as an AI Catalog (the discovery document the
      // A2A working group defers registry standards to).
      extensions: [
        {
          uri: "https://github.com/Agent-Card/ai-catalog",
          description: "This registry's public agents as an AI Catalog (application/ai-catalog+json)",
          required: false,
          params: { catalogUrl: `${config.registryBaseUrl}/.well-known/ai-catalog.json`, specVersion: "1.0" },
        },
      ],
    },
    securitySchemes: {
      oauth2: {
        type: "oauth2",
        description: "OAuth 2.0 client credentials; anonymous callers may read public agents",
        flows: {
          clientCredentials: {
            tokenUrl: `${config.registryBaseUrl}/oauth/token`,
            scopes: {
              "agents:read": "Read agents and the change feed",
              "agents:write": "Publish and manage own agents",
              admin: "Administer clients, peers and every agent",
            },
          },
        },
      },
    },
    defaultInputModes: ["application/json"],
    defaultOutputModes: ["application/json"],
    skills: [
      {
        id: "agent-discovery",
        name: "Agent discovery",
        description: "List and search registered A2A agents by skill, tag, input/output mode and provider.",
        tags: ["registry", "discovery", "search"],
        examples: [
          "GET /v1/agents?skill=translate",
          "GET /v1/search?q=weather",
          "GET /.well-known/ai-catalog.json",
        ],
      },
      {
        id: "agent-publication",
        name: "Agent publication",
        description: "Publish, version and retire Agent Cards (inline or by card URL).",
        tags: ["registry", "publish"],
        examples: ["POST /v1/agents {cardUrl}"],
      },
      {
        id: "federation",
        name: "Federation",
        description: "A change feed of public agents for peer registries, with tombstones for deletions.",
        tags: ["registry", "federation"],
        examples: ["GET /v1/changes?since=0"],
      },
    ],
  };
}

async function timed(check: () => Promise<unknown>): Promise<DependencyCheck> {
  const started = performance.now();
  try {
    await check();
    return { status: "ok", latencyMs: Math.round((performance.now() - started) * 100) / 100 };
  } catch (error) {
    return {
      status: "down",
      latencyMs: Math.round((performance.now() - started) * 100) / 100,
      detail: error instanceof Error ? error.message : String(error),
    };
  }
}

/** Liveness, readiness and metrics: registered before auth and rate limiting, which must not gate them. */
export function healthRoutes(deps: Omit<Deps, "guard" | "agents"> & { agents: AgentsService }) {
  const { config, database, metrics, logger } = deps;
  const disabled = async (): Promise<DependencyCheck> => ({ status: "disabled" });
  const probes = {
    cache: deps.probes?.cache ?? disabled,
    search: deps.probes?.search ?? (async () => timed(() => database.ping())),
    federationWorker: deps.probes?.federationWorker ?? disabled,
  };

  return new Elysia({ name: "health-routes" })
    .get("/health", () => ({ status: "ok" as const }), {
      response: { 200: HealthResponse },
      detail: { tags: ["ops"], summary: "Liveness: the process answers (no I/O)" },
    })
    .get(
      "/health/ready",
      async ({ set }) => {
        const [db, cache, search, federationWorker] = await Promise.all([
          timed(() => database.ping()),
          probes.cache(),
          probes.search(),
          probes.federationWorker(),
        ]);
        const ready = db.status === "ok";
        set.status = ready ? 200 : 503;
        set.headers["cache-control"] = "no-store";
        const body: Readiness = {
          status: ready ? "ready" : "unavailable",
          checks: { database: db, cache, search, federationWorker },
        };
        return body;
      },
      {
        response: { 200: ReadinessResponse, 503: ReadinessResponse },
        detail: { tags: ["ops"], summary: "Readiness: 503 when the database is unreachable" },
      },
    )
    .get(
      "/metrics",
      async () => {
        try {
          const counts = await deps.agents.countByStatus();
          metrics.agentsTotal.reset();
          for (const status of ["active", "deprecated", "deleted"]) metrics.agentsTotal.set({ status }, 0);
          for (const row of counts) metrics.agentsTotal.set({ status: row.status }, Number(row.n));
        } catch (error) {
          logger.warn({ err: error }, "agents_total could not be refreshed for this scrape");
        }
        return new Response(await metrics.registry.metrics(), {
          headers: { "content-type": metrics.registry.contentType, "cache-control": "no-store" },
        });
      },
      { detail: { tags: ["ops"], summary: "Prometheus metrics (text exposition format)" } },
    )
    .get(
      "/.well-known/agent-card.json",
      ({ set }) => {
        set.headers["cache-control"] = "public, max-age=300";
        return registryCard(config);
      },
      { detail: { tags: ["well-known"], summary: "This registry's own A2A Agent Card" } },
    )
    .get(
      "/.well-known/agent.json",
      ({ set }) => {
        set.headers["cache-control"] = "public, max-age=300";
        return registryCard(config);
      },
      { detail: { tags: ["well-known"], summary: "Legacy location of this registry's Agent Card" } },
    );
}

/** Routes that know the caller: the public index (anonymous view) and the admin audit log. */
export function opsRoutes(deps: Deps) {
  const { config, database } = deps;
  const audit = auditRepo(database.db);

  return new Elysia({ name: "ops-routes" })
    .use(deps.guard)
    .get(
      "/.well-known/agents/index.json",
      async ({ query, set }) => {
        const limit = query.limit ?? 100;
        const page = await deps.agents.publicIndex(query.cursor, limit);
        set.headers["cache-control"] = "public, max-age=30";
        return {
          registry_name: config.appName,
          agents: page.agents,
          count: page.count,
          next: page.nextCursor
            ? `${config.registryBaseUrl}/.well-known/agents/index.json?limit=${limit}&cursor=${page.nextCursor}`
            : null,
        };
      },
      {
        query: IndexQuery,
        response: { 200: AgentsIndex, 400: ProblemSchema },
        detail: { tags: ["well-known"], summary: "Public index of active public agents" },
      },
    )
    .get(
      "/v1/audit",
      async ({ query }) => {
        const limit = query.limit ?? 50;
        let beforeId: number | undefined;
        if (query.cursor) {
          const decoded = Buffer.from(query.cursor, "base64url").toString("utf8");
          if (!/^a:[0-9]{1,18}$/.test(decoded))
            throw new ApiError("VALIDATION_FAILED", "Malformed cursor", {
              errors: [{ path: "/query/cursor", message: "Not a cursor this registry issued" }],
            });
          beforeId = Number(decoded.slice(2));
        }
        const rows = await audit.list(query, beforeId, limit + 1);
        const page = rows.slice(0, limit);
        return {
          items: page.map((row) => ({
            id: String(row.id),
            at: row.at.toISOString(),
            actor: row.actor,
            action: row.action,
            target: row.target,
            outcome: row.outcome,
            ip: row.ip,
            requestId: row.requestId,
            details: row.details,
          })),
          nextCursor:
            rows.length > limit && page.length > 0
              ? Buffer.from(`a:${page.at(-1)!.id}`).toString("base64url")
              : null,
        };
      },
      {
        scopes: ["admin"],
        query: AuditQuery,
        response: { 200: AuditPage, 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema },
        detail: { tags: ["ops"], summary: "Audit log, newest first (admin)" },
      },
    );
}
