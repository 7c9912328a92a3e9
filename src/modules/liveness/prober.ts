import { sql } from "drizzle-orm";
import type { Config } from "../../config";
import type { Database } from "../../infra/db/client";
import { OutboundFetchError, type SafeFetchOptions, safeFetch } from "../../infra/http";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { AgentsService } from "../agents/service";

/**
 * Liveness and drift for local agents. It runs in the main thread of every instance rather than in the
 * federation worker: probing is network waiting, not CPU, and its results are database writes, which on
 * embedded PGlite only the main thread can make. Instances share the work without coordination beyond
 * Postgres: each round claims the agents that are due (`for update skip locked`) and moves their next
 * probe one interval (with jitter) ahead, so every agent is probed by one instance per interval.
 */

const CLAIM_BATCH = 200;

type Claimed = {
  id: string;
  url: string;
  card_url: string | null;
  health: "unknown" | "up" | "down";
  failing_since: string | Date | null;
  heartbeat_expires_at: string | Date | null;
};

export type ProbeVerdict = { id: string; ok: true } | { id: string; ok: false; error: string };

export type ProberDeps = {
  config: Config;
  database: Database;
  agents: AgentsService;
  metrics: Metrics;
  logger: Logger;
  fetchOptions?: Partial<SafeFetchOptions>;
};

const asDate = (value: string | Date | null) => (value === null ? null : new Date(value));

/** Runs `task` over `items` with at most `limit` in flight. */
async function eachLimited<T>(items: T[], limit: number, task: (item: T) => Promise<void>) {
  let next = 0;
  const lanes = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await task(items[next++]!);
  });
  await Promise.all(lanes);
}

export function createProber(deps: ProberDeps) {
  const { config, database, agents, metrics, logger } = deps;
  const settings = config.probe;
  const fetchOptions: SafeFetchOptions = {
    allowInsecure: config.debug,
    maxBytes: config.cardFetchMaxBytes,
    timeoutMs: settings.timeoutMs,
    maxRedirects: 3,
    ...deps.fetchOptions,
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let running: Promise<RoundReport> | undefined;
  let stopped = true;
  let selfPreserving = false;

  /**
   * Up when the agent's card endpoint answers 2xx, or its primary interface answers anything below
   * 500 (an A2A endpoint may well refuse a GET with 405: it is there). Down otherwise, saying why.
   */
  async function probe(agent: Claimed): Promise<ProbeVerdict> {
    const problems: string[] = [];
    let origin: string;
    try {
      origin = new URL(agent.url).origin;
    } catch {
      return { id: agent.id, ok: false, error: `the agent url ${agent.url} is not a URL` };
    }
    try {
      const card = await safeFetch(`${origin}/.well-known/agent-card.json`, fetchOptions);
      if (card.status >= 200 && card.status < 300) return { id: agent.id, ok: true };
      problems.push(`agent card endpoint answered HTTP ${card.status}`);
    } catch (error) {
      problems.push(`agent card endpoint: ${error instanceof OutboundFetchError ? error.message : "failed"}`);
    }
    try {
      const endpoint = await safeFetch(agent.url, { ...fetchOptions, maxBytes: 64 * 1024 });
      if (endpoint.status < 500) return { id: agent.id, ok: true };
      problems.push(`interface answered HTTP ${endpoint.status}`);
    } catch (error) {
      problems.push(`interface: ${error instanceof OutboundFetchError ? error.message : "failed"}`);
    }
    return { id: agent.id, ok: false, error: problems.join("; ") };
  }

  async function claim(dueOnly: boolean): Promise<Claimed[]> {
    const interval = settings.intervalSeconds;
    return database.rows<Claimed>(sql`
      with due as (
        select id from agents
        where deleted_at is null and origin_registry is null
          ${dueOnly ? sql`and (next_probe_at is null or next_probe_at <= now())` : sql``}
        order by next_probe_at nulls first
        limit ${CLAIM_BATCH}
        for update skip locked
      )
      update agents a set next_probe_at = now() + make_interval(secs => ${interval} * (0.8 + random() * 0.4))
      from due where a.id = due.id
      returning a.id, a.url, a.card_url, a.health, a.failing_since, a.heartbeat_expires_at`);
  }

  type RoundReport = {
    probed: number;
    up: number;
    failed: number;
    markedDown: number;
    markedUp: number;
    selfPreservation: boolean;
    drift: number;
  };

  async function runRound(options: { dueOnly: boolean }): Promise<RoundReport> {
    const claimed = await claim(options.dueOnly);
    const report: RoundReport = {
      probed: 0,
      up: 0,
      failed: 0,
      markedDown: 0,
      markedUp: 0,
      selfPreservation: selfPreserving,
      drift: 0,
    };
    if (claimed.length === 0) return report;
    const now = Date.now();
    const verdicts = new Map<string, ProbeVerdict>();
    await eachLimited(claimed, settings.concurrency, async (agent) => {
      const heartbeatUntil = asDate(agent.heartbeat_expires_at);
      let verdict: ProbeVerdict;
      if (heartbeatUntil && heartbeatUntil.getTime() > now) verdict = { id: agent.id, ok: true };
      else if (heartbeatUntil)
        verdict = {
          id: agent.id,
          ok: false,
          error: `no heartbeat since it expired at ${heartbeatUntil.toISOString()}`,
        };
      else verdict = await probe(agent);
      verdicts.set(agent.id, verdict);
      metrics.probes.inc({ result: verdict.ok ? "up" : "failed" });
      if (agent.card_url) {
        try {
          const refreshed = await agents.refreshFromUrl(null, agent.id);
          if (refreshed.outcome !== "unchanged") report.drift++;
        } catch (error) {
          metrics.driftChecks.inc({ result: "error" });
          logger.debug({ err: (error as Error).message, agent: agent.id }, "drift check failed");
        }
      }
    });
    report.probed = claimed.length;
    report.failed = [...verdicts.values()].filter((v) => !v.ok).length;
    report.up = report.probed - report.failed;

    // Eureka-style self-preservation: when most probes fail at once, the likelier story is that this
    // instance lost its network, so nothing is marked down until probes mostly succeed again.
    const failedShare = (report.failed / report.probed) * 100;
    const preserve =
      report.probed >= settings.selfPreservationMinProbes && failedShare > settings.selfPreservationPercent;
    if (preserve !== selfPreserving) {
      selfPreserving = preserve;
      metrics.proberSelfPreservation.set(preserve ? 1 : 0);
      if (preserve)
        logger.warn(
          {
            failed: report.failed,
            probed: report.probed,
            thresholdPercent: settings.selfPreservationPercent,
          },
          "self-preservation: most probes failed at once; not marking agents down until they recover",
        );
      else logger.info("self-preservation ended: probes succeed again");
    }
    report.selfPreservation = preserve;

    for (const agent of claimed) {
      const verdict = verdicts.get(agent.id)!;
      try {
        if (verdict.ok) {
          if (agent.health !== "up") {
            await agents.setHealth(agent.id, "up", null);
            report.markedUp++;
          } else if (agent.failing_since)
            await database.rows(sql`update agents set failing_since = null where id = ${agent.id}`);
          continue;
        }
        const since = asDate(agent.failing_since) ?? new Date(now);
        if (!agent.failing_since)
          await database.rows(
            sql`update agents set failing_since = ${since.toISOString()}::timestamptz where id = ${agent.id}`,
          );
        const longEnough = now - since.getTime() >= settings.downAfterSeconds * 1000;
        if (agent.health !== "down" && longEnough && !preserve) {
          await agents.setHealth(agent.id, "down", verdict.error);
          report.markedDown++;
        }
      } catch (error) {
        logger.warn({ err: (error as Error).message, agent: agent.id }, "recording a probe result failed");
      }
    }
    return report;
  }

  const prober = {
    /** One round now (tests, and the loop). `dueOnly: false` probes every local agent regardless of schedule. */
    runOnce(options: { dueOnly?: boolean } = {}): Promise<RoundReport> {
      running ??= runRound({ dueOnly: options.dueOnly ?? true }).finally(() => {
        running = undefined;
      });
      return running;
    },

    selfPreserving: () => selfPreserving,

    start() {
      if (!stopped) return;
      stopped = false;
      // Rounds run back to back while agents are due, then poll about ten times per interval.
      const pollMs = Math.max(1000, Math.min(30_000, (settings.intervalSeconds * 1000) / 10));
      const loop = async () => {
        if (stopped) return;
        try {
          const report = await prober.runOnce();
          timer = setTimeout(loop, report.probed >= CLAIM_BATCH ? 0 : pollMs);
        } catch (error) {
          logger.warn({ err: (error as Error).message }, "probe round failed");
          timer = setTimeout(loop, pollMs);
        }
        timer?.unref?.();
      };
      timer = setTimeout(loop, 0);
      timer.unref?.();
    },

    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      timer = undefined;
      await running?.catch(() => undefined);
    },
  };
  return prober;
}

export type Prober = ReturnType<typeof createProber>;
