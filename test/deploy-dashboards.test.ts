import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  dashboardPanels,
  describeWithTools,
  exportedMetricNames,
  grafanaToPromql,
  type Panel,
  parseYaml,
  promqlMetricNames,
  type Registry,
  read,
  run,
  startRegistry,
  tempDir,
} from "./support/deploy";

type Dashboard = {
  uid: string;
  title: string;
  panels: Panel[];
  templating?: { list: { name: string; query?: unknown; datasource?: { uid: string } }[] };
};

const DASHBOARD_FILES = readdirSync(join(import.meta.dir, "../grafana/dashboards")).filter((f) =>
  f.endsWith(".json"),
);
const dashboards = Object.fromEntries(
  DASHBOARD_FILES.map((file) => [file, JSON.parse(read(`grafana/dashboards/${file}`)) as Dashboard]),
);
const datasources = parseYaml<{
  datasources: { uid: string; type: string; url: string; isDefault?: boolean }[];
}>(read("grafana/provisioning/datasources/prometheus.yml"));
const providers = parseYaml<{ providers: { type: string; options: { path: string } }[] }>(
  read("grafana/provisioning/dashboards/registry.yml"),
);

/** Every query of a dashboard, template variable queries included, as plain PromQL. */
function queries(dashboard: Dashboard) {
  const panelQueries = dashboardPanels(dashboard).flatMap((panel) =>
    (panel.targets ?? []).map((target) => ({
      where: `${dashboard.title} / ${panel.title}`,
      expr: target.expr,
    })),
  );
  const variableQueries = (dashboard.templating?.list ?? []).flatMap((variable) => {
    const text =
      typeof variable.query === "string" ? variable.query : (variable.query as { query?: string })?.query;
    const inner = text && /^label_values\((.*),\s*\w+\)$/.exec(text)?.[1];
    return inner ? [{ where: `${dashboard.title} / $${variable.name}`, expr: inner }] : [];
  });
  return [...panelQueries, ...variableQueries].map((q) => ({ ...q, expr: grafanaToPromql(q.expr) }));
}

const allQueries = Object.values(dashboards).flatMap(queries);
const alertExprs = parseYaml<{ groups: { rules: { alert: string; expr: string }[] }[] }>(
  read("ops/prometheus/alerts.yml"),
).groups.flatMap((g) => g.rules.map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })));
const alertTestSeries = parseYaml<{ tests: { input_series: { series: string }[] }[] }>(
  read("ops/prometheus/alerts.test.yml"),
).tests.flatMap((t) => t.input_series.map((s) => ({ where: "alerts.test.yml", expr: s.series })));

describe("Grafana provisioning", () => {
  test("the datasource is the compose stack's Prometheus, with the uid the dashboards use", () => {
    expect(datasources.datasources).toEqual([
      expect.objectContaining({
        uid: "prometheus",
        type: "prometheus",
        url: "http://prometheus:9090",
        isDefault: true,
      }),
    ]);
    const compose = parseYaml<{ services: Record<string, { ports?: string[]; volumes?: string[] }> }>(
      read("docker-compose.prod.yml"),
    );
    expect(compose.services.prometheus?.ports).toEqual(["127.0.0.1:9090:9090"]);
    const grafanaVolumes = compose.services.grafana?.volumes ?? [];
    expect(grafanaVolumes).toContain("./grafana/provisioning:/etc/grafana/provisioning:ro");
    // The dashboards provider reads the directory the compose file mounts grafana/dashboards at.
    expect(providers.providers).toHaveLength(1);
    expect(grafanaVolumes).toContain(`./grafana/dashboards:${providers.providers[0]!.options.path}:ro`);
  });

  test("two dashboards, Registry Overview and Security, with distinct uids", () => {
    expect(DASHBOARD_FILES.sort()).toEqual(["registry-overview.json", "security.json"]);
    const uids = Object.values(dashboards).map((d) => d.uid);
    expect(new Set(uids).size).toBe(uids.length);
    expect(dashboards["registry-overview.json"]!.title).toContain("Overview");
    expect(dashboards["security.json"]!.title).toContain("Security");
  });

  test("panels: unique ids, inside the 24-column grid without overlapping, each querying the provisioned source", () => {
    for (const dashboard of Object.values(dashboards)) {
      const panels = dashboardPanels(dashboard);
      const ids = panels.map((p) => p.id);
      expect(new Set(ids).size).toBe(ids.length);
      const cells = new Set<string>();
      for (const panel of panels) {
        const { x, y, w, h } = panel.gridPos;
        expect(x + w).toBeLessThanOrEqual(24);
        for (let i = x; i < x + w; i++)
          for (let j = y; j < y + h; j++) {
            expect(cells.has(`${i},${j}`)).toBe(false);
            cells.add(`${i},${j}`);
          }
        if (panel.type === "row") continue;
        expect({ panel: panel.title, uid: panel.datasource?.uid }).toEqual({
          panel: panel.title,
          uid: "prometheus",
        });
        expect(panel.targets?.length).toBeGreaterThan(0);
        expect(panel.description?.length).toBeGreaterThan(10);
        const refIds = panel.targets!.map((t) => t.refId);
        expect(new Set(refIds).size).toBe(refIds.length);
        for (const target of panel.targets!)
          expect(target.datasource?.uid ?? "prometheus").toBe("prometheus");
      }
    }
  });

  test("Registry Overview shows what the issue lists", () => {
    const exprs = queries(dashboards["registry-overview.json"]!).map((q) => q.expr);
    const has = (pattern: RegExp) => expect(exprs.some((e) => pattern.test(e))).toBe(true);
    has(/sum by \(method, route\) \(rate\(a2a_registry_requests_total/); // request rate by route
    has(
      /histogram_quantile\(0\.95, sum by \(route, le\) \(rate\(a2a_registry_request_duration_seconds_bucket/,
    );
    has(/status_code=~"5\.\."/); // error rate
    has(/by \(status\) \(a2a_registry_agents_total/); // agents by status
    has(/a2a_registry_agent_writes_total/); // registrations over time
    has(/rate\(a2a_registry_search_queries_total/); // search rate
    has(/a2a_registry_search_duration_seconds_bucket/); // search latency
    has(/a2a_registry_peer_syncs_total/); // federation sync status
    has(/a2a_registry_peer_sync_lag_seconds/); // federation lag
    has(/a2a_registry_cache_requests_total\{[^}]*result="hit"/); // cache hit ratio
    has(/a2a_registry_process_resident_memory_bytes/);
    has(/a2a_registry_process_cpu_seconds_total/);
  });

  test("Security shows what the issue lists", () => {
    const exprs = queries(dashboards["security.json"]!).map((q) => q.expr);
    const has = (pattern: RegExp) => expect(exprs.some((e) => pattern.test(e))).toBe(true);
    has(/sum by \(reason\) \(rate\(a2a_registry_auth_failures_total/);
    has(/a2a_registry_tokens_issued_total/);
    has(/sum by \(class\) \(rate\(a2a_registry_rate_limited_total/);
    has(/status_code=~"4\.\.\|5\.\."/);
    has(/sum by \(action, outcome\) \(increase\(a2a_registry_audit_events_total/);
  });
});

describeWithTools("dashboard queries are valid PromQL (promtool)", ["promtool"], () => {
  test("every panel and variable query parses", async () => {
    // promtool parses recording rules' expressions: one rule per query is a syntax check of all of them.
    const dir = tempDir("a2a-dashboards-");
    try {
      const file = join(dir.path, "queries.yml");
      const rules = allQueries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: q.expr }));
      writeFileSync(file, JSON.stringify({ groups: [{ name: "dashboards", rules }] }));
      const result = await run(["promtool", "check", "rules", file]);
      expect(result.stdout + result.stderr).toContain(`SUCCESS: ${rules.length} rules found`);
      expect(result.code).toBe(0);
    } finally {
      dir.cleanup();
    }
  });
});

describe("metric names in dashboards and alerts", () => {
  let registry: Registry;
  let exported: Set<string>;

  beforeAll(async () => {
    registry = await startRegistry();
    exported = exportedMetricNames(await (await fetch(`${registry.base}/metrics`)).text());
  }, 120_000);
  afterAll(async () => {
    await registry?.stop();
  });

  test("the registry's /metrics declares the metrics of the contract", () => {
    for (const name of [
      "a2a_registry_requests_total",
      "a2a_registry_request_duration_seconds_bucket",
      "a2a_registry_agents_total",
      "a2a_registry_search_queries_total",
      "a2a_registry_peer_syncs_total",
      "a2a_registry_rate_limited_total",
      "a2a_registry_auth_failures_total",
      "a2a_registry_cache_requests_total",
    ])
      expect(exported.has(name)).toBe(true);
  });

  test("the name extraction sees through functions, matchers, grouping and ranges", () => {
    expect([
      ...promqlMetricNames(
        'histogram_quantile(0.95, sum by (le, route) (rate(a2a_x_bucket{job="a", route=~"b|c"}[5m]))) > 1e-9 and on (job) up offset 5m',
      ),
    ]).toEqual(["a2a_x_bucket", "up"]);
  });

  test("every metric name used in the dashboards, the alerts and their tests is exported by the running registry", () => {
    // `up` is the one series Prometheus itself writes for each target.
    const synthesized = new Set(["up"]);
    const used = new Map<string, string>();
    for (const { where, expr } of [...allQueries, ...alertExprs, ...alertTestSeries])
      for (const name of promqlMetricNames(expr)) used.set(name, where);
    expect(used.size).toBeGreaterThan(15);
    const unknown = [...used].filter(([name]) => !exported.has(name) && !synthesized.has(name));
    expect(unknown).toEqual([]);
  });
});
