import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/**
 * One registry per app instance (no prom-client globals), so tests can build many apps in one process.
 * Label values use route templates, never raw paths, to keep cardinality bounded.
 */
export function createMetrics(options: { collectProcessMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.collectProcessMetrics !== false)
    collectDefaultMetrics({ register: registry, prefix: "a2a_registry_" });

  const requestsTotal = new Counter({
    name: "a2a_registry_requests_total",
    help: "HTTP requests by method, route template and status code",
    labelNames: ["method", "route", "status_code"] as const,
    registers: [registry],
  });
  const requestDuration = new Histogram({
    name: "a2a_registry_request_duration_seconds",
    help: "HTTP request duration in seconds by method and route template",
    labelNames: ["method", "route"] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  const agentsTotal = new Gauge({
    name: "a2a_registry_agents_total",
    help: "Agents by status (local and federated), read from the database at scrape time",
    labelNames: ["status"] as const,
    registers: [registry],
  });
  const authFailures = new Counter({
    name: "a2a_registry_auth_failures_total",
    help: "Failed authentications and authorisations by reason",
    labelNames: ["reason"] as const,
    registers: [registry],
  });
  const tokensIssued = new Counter({
    name: "a2a_registry_tokens_issued_total",
    help: "Access tokens issued by the OAuth token endpoint",
    registers: [registry],
  });
  const agentWrites = new Counter({
    name: "a2a_registry_agent_writes_total",
    help: "Agent writes by operation (created, updated, status_changed, deleted)",
    labelNames: ["operation"] as const,
    registers: [registry],
  });
  const auditEvents = new Counter({
    name: "a2a_registry_audit_events_total",
    help: "Audit log events by action and outcome",
    labelNames: ["action", "outcome"] as const,
    registers: [registry],
  });
  const searchQueries = new Counter({
    name: "a2a_registry_search_queries_total",
    help: "Search queries by backend",
    labelNames: ["backend"] as const,
    registers: [registry],
  });
  const peerSyncs = new Counter({
    name: "a2a_registry_peer_syncs_total",
    help: "Federation sync runs by peer and status",
    labelNames: ["peer", "status"] as const,
    registers: [registry],
  });
  const rateLimited = new Counter({
    name: "a2a_registry_rate_limited_total",
    help: "Requests rejected by the rate limiter, by endpoint class",
    labelNames: ["class"] as const,
    registers: [registry],
  });
  const rateLimiterFallbacks = new Counter({
    name: "a2a_registry_rate_limiter_fallbacks_total",
    help: "Limiter decisions made by in-process buckets because Redis failed",
    registers: [registry],
  });
  const cacheRequests = new Counter({
    name: "a2a_registry_cache_requests_total",
    help: "Cache lookups by layer (l1, redis) and result (hit, miss, error)",
    labelNames: ["layer", "result"] as const,
    registers: [registry],
  });

  return {
    registry,
    requestsTotal,
    requestDuration,
    agentsTotal,
    authFailures,
    tokensIssued,
    agentWrites,
    auditEvents,
    searchQueries,
    peerSyncs,
    rateLimited,
    rateLimiterFallbacks,
    cacheRequests,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
