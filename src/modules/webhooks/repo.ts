import { and, desc, eq, lt, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { type Database, type Executor, runStatement } from "../../infra/db/client";
import { clients, webhookDeliveries, webhooks } from "../../infra/db/schema";
import type { WebhookEvent } from "./model";

/** $1 the event, $2 a JSON array of {ord, id, owner, payload}: see enqueue(). */
const ENQUEUE_DELIVERIES = new PgDialect().sqlToQuery(sql`with queued as (
    insert into ${webhookDeliveries} (webhook_id, event, agent_id, payload)
    select w.id, ${sql.raw("$1")}::text, a.id, a.payload
    from jsonb_to_recordset(${sql.raw("$2")}::text::jsonb) as a(ord int, id uuid, owner text, payload text)
    join ${webhooks} w on ${sql.raw("$1")}::text = any(w.events) and (
      w.owner = a.owner
      or exists (select 1 from ${clients} c where c.client_id = w.owner and not c.disabled
        and 'admin' = any(c.scopes)))
    order by a.ord, w.id
    returning 1
  )
  select count(*)::text as n from queued`).sql;

export type WebhookRow = typeof webhooks.$inferSelect;
export type DeliveryRow = typeof webhookDeliveries.$inferSelect;

export function webhooksRepo(database: Database) {
  const { db } = database;
  return {
    async insert(values: typeof webhooks.$inferInsert, executor: Executor = db) {
      const rows = await executor.insert(webhooks).values(values).returning();
      return rows[0]!;
    },
    list(owner: string | undefined) {
      const query = db.select().from(webhooks);
      return (owner === undefined ? query : query.where(eq(webhooks.owner, owner))).orderBy(
        webhooks.createdAt,
      );
    },
    async find(id: string) {
      const rows = await db.select().from(webhooks).where(eq(webhooks.id, id)).limit(1);
      return rows[0];
    },
    async remove(id: string, executor: Executor = db) {
      await executor.delete(webhooks).where(eq(webhooks.id, id));
    },

    /**
     * Queues one delivery per subscribed webhook and agent, in the caller's transaction: the agent
     * owner's own webhooks and every admin's (admins see all agents). One prepared statement for any
     * number of agents (a publish batch), deliveries numbered in the agents' order. Returns how many
     * were queued.
     */
    async enqueue(
      event: WebhookEvent,
      agents: Array<{ id: string; owner: string | null; payload: string }>,
      executor: Executor,
    ): Promise<number> {
      if (agents.length === 0) return 0;
      const input = agents.map(({ id, owner, payload }, ord) => ({ ord, id, owner, payload }));
      const rows = await runStatement<{ n: string }>(
        database,
        ENQUEUE_DELIVERIES,
        [event, JSON.stringify(input)],
        executor,
      );
      return Number(rows[0]?.n ?? 0);
    },

    /**
     * Takes up to `limit` due deliveries for this instance: their next attempt moves `leaseSeconds`
     * ahead first (skip locked), so another instance does not send them meanwhile; a crash mid-send
     * only delays them by the lease.
     */
    async claimDue(limit: number, leaseSeconds: number) {
      return database.rows<{
        id: number;
        webhook_id: string;
        event: string;
        payload: string;
        attempts: number;
        url: string;
        secret_enc: string;
      }>(sql`
        with due as (
          select d.id from ${webhookDeliveries} d
          where d.status = 'pending' and d.next_attempt_at <= now()
          order by d.next_attempt_at, d.id limit ${limit}
          for update skip locked
        )
        update ${webhookDeliveries} d set next_attempt_at = now() + make_interval(secs => ${leaseSeconds})
        from due, ${webhooks} w
        where d.id = due.id and w.id = d.webhook_id
        returning d.id::int as id, d.webhook_id, d.event, d.payload, d.attempts, w.url, w.secret_enc`);
    },

    async markDelivered(id: number, statusCode: number) {
      await db
        .update(webhookDeliveries)
        .set({
          status: "delivered",
          attempts: sql`${webhookDeliveries.attempts} + 1`,
          lastStatusCode: statusCode,
          lastError: null,
          deliveredAt: sql`now()`,
        })
        .where(eq(webhookDeliveries.id, id));
    },

    async markFailedAttempt(
      id: number,
      outcome: { statusCode: number | null; error: string; retryInSeconds: number | null },
    ) {
      await db
        .update(webhookDeliveries)
        .set({
          status: outcome.retryInSeconds === null ? "failed" : "pending",
          attempts: sql`${webhookDeliveries.attempts} + 1`,
          lastStatusCode: outcome.statusCode,
          lastError: outcome.error.slice(0, 1000),
          ...(outcome.retryInSeconds === null
            ? {}
            : { nextAttemptAt: sql`now() + make_interval(secs => ${outcome.retryInSeconds})` }),
        })
        .where(eq(webhookDeliveries.id, id));
    },

    deliveries(webhookId: string, beforeId: number | undefined, limit: number) {
      const conditions = [eq(webhookDeliveries.webhookId, webhookId)];
      if (beforeId !== undefined) conditions.push(lt(webhookDeliveries.id, beforeId));
      return db
        .select()
        .from(webhookDeliveries)
        .where(and(...conditions))
        .orderBy(desc(webhookDeliveries.id))
        .limit(limit);
    },
  };
}
