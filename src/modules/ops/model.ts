import { t } from "elysia";

export const HealthResponse = t.Object({ status: t.Literal("ok") });

const DependencyStatus = t.Object({
  status: t.Union([t.Literal("ok"), t.Literal("down"), t.Literal("disabled"), t.Literal("degraded")]),
  latencyMs: t.Optional(t.Number()),
  detail: t.Optional(t.String()),
});

export const ReadinessResponse = t.Object({
  status: t.Union([t.Literal("ready"), t.Literal("unavailable")]),
  checks: t.Object({
    database: DependencyStatus,
    cache: DependencyStatus,
    search: DependencyStatus,
    federationWorker: DependencyStatus,
  }),
});
export type Readiness = typeof ReadinessResponse.static;
export type DependencyCheck = typeof DependencyStatus.static;

export const AuditQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: t.Optional(t.String({ maxLength: 100 })),
  action: t.Optional(t.String({ minLength: 1, maxLength: 100 })),
  actor: t.Optional(t.String({ minLength: 1, maxLength: 200 })),
});
export type AuditFilters = typeof AuditQuery.static;

export const AuditPage = t.Object({
  items: t.Array(
    t.Object({
      id: t.String(),
      at: t.String({ format: "date-time" }),
      actor: t.String(),
      action: t.String(),
      target: t.Union([t.String(), t.Null()]),
      outcome: t.Union([t.Literal("success"), t.Literal("failure")]),
      ip: t.Union([t.String(), t.Null()]),
      requestId: t.Union([t.String(), t.Null()]),
      details: t.Unknown(),
    }),
  ),
  nextCursor: t.Union([t.String(), t.Null()]),
});

export const IndexQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 500, default: 100 })),
  cursor: t.Optional(t.String({ maxLength: 200 })),
});

export const AgentsIndex = t.Object({
  registry_name: t.String(),
  agents: t.Array(t.Object({ id: t.String(), name: t.String(), description: t.String(), url: t.String() })),
  count: t.Integer({ description: "Public active agents in this registry" }),
  next: t.Union([t.String(), t.Null()], { description: "URL of the next page, or null" }),
});
