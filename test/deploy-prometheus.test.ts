import { describe, expect, test } from "bun:test";
import { describeWithTools, parseYaml, read, run } from "./support/deploy";

type Rule = {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
};
type RuleTest = {
  input_series: { series: string; values: string }[];
  alert_rule_test?: { eval_time: string; alertname: string; exp_alerts: unknown[] }[];
};

const rules = parseYaml<{ groups: { name: string; rules: Rule[] }[] }>(read("ops/prometheus/alerts.yml"));
const alerts = rules.groups.flatMap((group) => group.rules);
const unitTests = parseYaml<{ rule_files: string[]; tests: RuleTest[] }>(
  read("ops/prometheus/alerts.test.yml"),
);
const config = parseYaml<{
  rule_files: string[];
  scrape_configs: {
    job_name: string;
    metrics_path?: string;
    dns_sd_configs?: { names: string[]; port: number }[];
  }[];
}>(read("ops/prometheus/prometheus.yml"));

describeWithTools("Prometheus configuration and alerts (promtool)", ["promtool"], () => {
  test("promtool check config", async () => {
    const result = await run(["promtool", "check", "config", "ops/prometheus/prometheus.yml"]);
    expect(result.stdout).toContain("SUCCESS");
    expect(result.code).toBe(0);
  });

  test("promtool check rules", async () => {
    const result = await run(["promtool", "check", "rules", "ops/prometheus/alerts.yml"]);
    expect(result.stdout).toContain(`SUCCESS: ${alerts.length} rules found`);
    expect(result.code).toBe(0);
  });

  test("promtool test rules: every unit test passes", async () => {
    const result = await run(["promtool", "test", "rules", "ops/prometheus/alerts.test.yml"]);
    expect(result.stdout + result.stderr).toContain("SUCCESS");
    expect(result.stdout + result.stderr).not.toContain("FAILED");
    expect(result.code).toBe(0);
  });
});

describe("alert rules", () => {
  test("the guide's HighErrorRate and HighLatency plus the required alerts exist", () => {
    const names = alerts.map((rule) => rule.alert);
    for (const name of [
      "HighErrorRate",
      "HighLatency",
      "RateLimitSpike",
      "AuthFailureSpike",
      "PeerSyncFailing",
      "RegistryDown",
    ])
      expect(names).toContain(name);
    expect(new Set(names).size).toBe(names.length);
  });

  test("HighErrorRate and HighLatency keep the guide's thresholds and durations", () => {
    const errorRate = alerts.find((rule) => rule.alert === "HighErrorRate")!;
    expect(errorRate.expr).toContain('a2a_registry_requests_total{status_code=~"5.."}[5m]');
    expect(errorRate.expr).toMatch(/> 0\.1$/);
    expect(errorRate).toMatchObject({ for: "5m", labels: { severity: "critical" } });
    const latency = alerts.find((rule) => rule.alert === "HighLatency")!;
    expect(latency.expr).toContain("histogram_quantile(0.95,");
    expect(latency.expr).toContain("rate(a2a_registry_request_duration_seconds_bucket[5m])");
    expect(latency.expr.trim()).toMatch(/> 1$/);
    expect(latency).toMatchObject({ for: "5m", labels: { severity: "warning" } });
  });

  test("every alert has a severity, a summary and a description", () => {
    for (const rule of alerts) {
      expect({ alert: rule.alert, severity: rule.labels?.severity }).toEqual({
        alert: rule.alert,
        severity: expect.stringMatching(/^(critical|warning)$/),
      });
      expect(rule.annotations?.summary?.length).toBeGreaterThan(5);
      expect(rule.annotations?.description?.length).toBeGreaterThan(10);
    }
  });

  test("every alert is unit-tested both firing and quiet", () => {
    expect(unitTests.rule_files).toEqual(["alerts.yml"]);
    const cases = unitTests.tests.flatMap((t) => t.alert_rule_test ?? []);
    for (const rule of alerts) {
      const mine = cases.filter((c) => c.alertname === rule.alert);
      expect({ alert: rule.alert, fires: mine.some((c) => c.exp_alerts.length > 0) }).toEqual({
        alert: rule.alert,
        fires: true,
      });
      expect({ alert: rule.alert, quiet: mine.some((c) => c.exp_alerts.length === 0) }).toEqual({
        alert: rule.alert,
        quiet: true,
      });
    }
  });

  test("prometheus.yml loads the rules and scrapes /metrics of every replica of the compose service", () => {
    expect(config.rule_files).toEqual(["alerts.yml"]);
    const registry = config.scrape_configs.find((job) => job.job_name === "registry")!;
    expect(registry.metrics_path ?? "/metrics").toBe("/metrics");
    // DNS service discovery: the compose service name resolves to every replica.
    expect(registry.dns_sd_configs).toEqual([expect.objectContaining({ names: ["registry"], port: 8000 })]);
    const compose = parseYaml<{ services: Record<string, { environment?: Record<string, string> }> }>(
      read("docker-compose.prod.yml"),
    );
    expect(compose.services.registry?.environment?.PORT).toBe("8000");
    // The alert on a vanished or failing registry looks at this job's up series.
    expect(alerts.find((rule) => rule.alert === "RegistryDown")!.expr).toContain('up{job="registry"}');
  });
});
