import type { Database, Executor } from "./db/client";
import { auditLog } from "./db/schema";
import type { Logger } from "./logger";
import type { Metrics } from "./metrics";

export type AuditEvent = {
  actor: string;
  action: string;
  target?: string | null;
  outcome: "success" | "failure";
  ip?: string | null;
  requestId?: string | null;
  details?: Record<string, unknown>;
};

/**
 * Append-only audit trail. Writes that change data pass their transaction so the audit row commits or
 * rolls back with the change it describes; events without a transaction (token denials) never fail
 * the request that caused them, they are logged instead.
 */
export function createAudit(deps: { database: Database; metrics: Metrics; logger: Logger }) {
  const { database, metrics, logger } = deps;
  const row = (event: AuditEvent) => ({
    actor: event.actor,
    action: event.action,
    target: event.target ?? null,
    outcome: event.outcome,
    ip: event.ip ?? null,
    requestId: event.requestId ?? null,
    details: event.details ?? {},
  });
  return {
    async record(event: AuditEvent, executor: Executor): Promise<void> {
      await executor.insert(auditLog).values(row(event));
      metrics.auditEvents.inc({ action: event.action, outcome: event.outcome });
    },
    /** Counts events whose rows a write inserted itself, in its own statement (a publish). */
    counted(events: AuditEvent[]): void {
      for (const event of events) metrics.auditEvents.inc({ action: event.action, outcome: event.outcome });
    },
    async recordDetached(event: AuditEvent): Promise<void> {
      try {
        await database.db.insert(auditLog).values(row(event));
        metrics.auditEvents.inc({ action: event.action, outcome: event.outcome });
      } catch (err) {
        logger.warn({ err, action: event.action, requestId: event.requestId }, "audit write failed");
      }
    },
  };
}

export type Audit = ReturnType<typeof createAudit>;
