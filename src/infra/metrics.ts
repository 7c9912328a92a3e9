import { Counter, collectDefaultMetrics, Gauge, Histogram, type Metric, Registry } from "prom-client";

const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

type Series = { labels: Record<string, string | number>; count: number; sum: number; buckets: number[] };

/**
 * a2a_registry_requests_total and a2a_registry_request_duration_seconds, recorded on every request.
 * prom-client hashes the label set on each inc()/observe(), which on the cached read path cost close to
 * a tenth of the request; here a series is found by one string key and the numbers are added up, and
 * prom-client only formats them at scrape time (it accepts any object with this get()).
 */
function createRequestMetrics(registry: Registry) {
  const series = new Map<string, Series>();
  const durationSeries = new Map<string, Series>();
  const seriesOf = (map: Map<string, Series>, key: string, labels: Record<string, string | number>) => {
    let entry = map.get(key);
    if (!entry) {
      entry = { labels, count: 0, sum: 0, buckets: new Array(DURATION_BUCKETS.length).fill(0) };
      map.set(key, entry);
    }
    return entry;
  };
  const total = {
    name: "a2a_registry_requests_total",
    help: "HTTP requests by method, route template and status code",
    type: "counter",
    aggregator: "sum",
    get: async () => ({
      name: total.name,
      help: total.help,
      type: "counter",
      aggregator: "sum",
      values: [...series.values()].map((s) => ({ labels: s.labels, value: s.count })),
    }),
  };
  const duration = {
    name: "a2a_registry_request_duration_seconds",
    help: "HTTP request duration in seconds by method and route template",
    type: "histogram",
    aggregator: "sum",
    get: async () => ({
      name: duration.name,
      help: duration.help,
      type: "histogram",
      aggregator: "sum",
      values: [...durationSeries.values()].flatMap((s) => {
        let cumulative = 0;
        const name = duration.name;
        return [
          ...DURATION_BUCKETS.map((le, i) => {
            cumulative += s.buckets[i]!;
            return { labels: { ...s.labels, le }, value: cumulative, metricName: `${name}_bucket` };
          }),
          { labels: { ...s.labels, le: "+Inf" }, value: s.count, metricName: `${name}_bucket` },
          { labels: s.labels, value: s.sum, metricName: `${name}_sum` },
          { labels: s.labels, value: s.count, metricName: `${name}_count` },
        ];
      }),
    }),
  };
  registry.registerMetric(total as unknown as Metric);
  registry.registerMetric(duration as unknown as Metric);
  const recorder = (method: string, route: string, status: number) => {
    const counted = seriesOf(series, `${method} ${status} ${route}`, { method, route, status_code: status });
    const timed = seriesOf(durationSeries, `${method} ${route}`, { method, route });
    return (seconds: number) => {
      counted.count++;
      timed.count++;
      timed.sum += seconds;
      for (let i = 0; i < DURATION_BUCKETS.length; i++)
        if (seconds <= DURATION_BUCKETS[i]!) {
          timed.buckets[i]!++;
          break;
        }
    };
  };
  // One lookup per request: the recorder bound to (method, status, route) is kept once made.
  const recorders = new Map<string, (seconds: number) => void>();
  const recorderFor = (method: string, route: string, status: number) => {
    const key = `${method} ${status} ${route}`;
    let record = recorders.get(key);
    if (!record) {
      record = recorder(method, route, status);
      recorders.set(key, record);
    }
    return record;
  };
  return {
    /** The series of (method, route, status); a caller may keep it for a path that knows all three. */
    recorderFor,
  };
}

/**
 * One registry per app instance (no prom-client globals), so tests can build many apps in one process.
 * Label values use route templates, never raw paths, to keep cardinality bounded.
 */
export function createMetrics(options: { collectProcessMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.collectProcessMetrics !== false)
    collectDefaultMetrics({ register: registry, prefix: "a2a_registry_" });

  const requests = createRequestMetrics(registry);
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
  const searchDuration = new Histogram({
    name: "a2a_registry_search_duration_seconds",
    help: "Search query duration in seconds by backend",
    labelNames: ["backend"] as const,
    buckets: DURATION_BUCKETS,
    registers: [registry],
  });
  const searchFallbacks = new Counter({
    name: "a2a_registry_search_fallbacks_total",
    help: "Searches answered by the Postgres backend because Elasticsearch failed",
    registers: [registry],
  });
  const searchOutboxPending = new Gauge({
    name: "a2a_registry_search_outbox_pending",
    help: "Agent changes waiting in the outbox to reach the search index",
    registers: [registry],
  });
  const peerSyncs = new Counter({
    name: "a2a_registry_peer_syncs_total",
    help: "Federation sync runs by peer and status",
    labelNames: ["peer", "status"] as const,
    registers: [registry],
  });
  const peerSyncLagSeconds = new Gauge({
    name: "a2a_registry_peer_sync_lag_seconds",
    help: "Seconds since the last successful sync from each peer",
    labelNames: ["peer"] as const,
    registers: [registry],
  });
  const peerSyncLagChanges = new Gauge({
    name: "a2a_registry_peer_sync_lag_changes",
    help: "Changes in each peer's feed not yet applied here, as of the last sync",
    labelNames: ["peer"] as const,
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
  const signatureVerifications = new Counter({
    name: "a2a_registry_signature_verifications_total",
    help: "Agent Card signature checks on publish, update and drift, by result (none, valid, invalid)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const probes = new Counter({
    name: "a2a_registry_probes_total",
    help: "Liveness probes of agents by result (up, failed)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const healthTransitions = new Counter({
    name: "a2a_registry_health_transitions_total",
    help: "Agent health changes by new state (up, down)",
    labelNames: ["to"] as const,
    registers: [registry],
  });
  const proberSelfPreservation = new Gauge({
    name: "a2a_registry_prober_self_preservation",
    help: "1 while the prober holds back marking agents down because too many probes fail at once",
    registers: [registry],
  });
  const driftChecks = new Counter({
    name: "a2a_registry_drift_checks_total",
    help: "Re-fetches of cards published by URL by result (unchanged, updated, drift, error)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  const webhookDeliveries = new Counter({
    name: "a2a_registry_webhook_deliveries_total",
    help: "Webhook delivery attempts by result (delivered, retry, failed)",
    labelNames: ["result"] as const,
    registers: [registry],
  });
  // Counted in plain numbers on the hot path, handed to prom-client when scraped (see createRequestMetrics).
  const cacheCounts = new Map<string, { labels: { layer: string; result: string }; n: number }>();
  const cacheRequests = new Counter({
    name: "a2a_registry_cache_requests_total",
    help: "Cache lookups by layer (l1, redis) and result (hit, miss, error)",
    labelNames: ["layer", "result"] as const,
    registers: [registry],
    collect() {
      this.reset();
      for (const { labels, n } of cacheCounts.values()) this.inc(labels, n);
    },
  });
  const countCache = (layer: "l1" | "redis", result: "hit" | "miss" | "error") => {
    const key = `${layer}|${result}`;
    const entry = cacheCounts.get(key);
    if (entry) entry.n++;
    else cacheCounts.set(key, { labels: { layer, result }, n: 1 });
  };

  return {
    registry,
    requests,
    agentsTotal,
    authFailures,
    tokensIssued,
    agentWrites,
    auditEvents,
    searchQueries,
    searchDuration,
    searchFallbacks,
    searchOutboxPending,
    peerSyncs,
    peerSyncLagSeconds,
    peerSyncLagChanges,
    rateLimited,
    rateLimiterFallbacks,
    cacheRequests,
    countCache,
    signatureVerifications,
    probes,
    healthTransitions,
    proberSelfPreservation,
    driftChecks,
    webhookDeliveries,
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
