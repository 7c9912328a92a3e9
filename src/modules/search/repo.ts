import { and, inArray, isNull, lte, sql } from "drizzle-orm";
import type { Database, Executor } from "../../infra/db/client";
import { agents, entitlements, searchOutbox } from "../../infra/db/schema";
import type { IndexChange, SearchRow } from "../../infra/search/types";
import { LISTED_COLUMNS, visibleTo } from "../agents/repo";
import type { Caller } from "../auth/model";

export function searchRepo(database: Database) {
  const { db } = database;

  async function entitledByAgent(ids: string[]) {
    const byAgent = new Map<string, string[]>();
    if (ids.length === 0) return byAgent;
    const rows = await db
      .select({ agentId: entitlements.agentId, clientId: entitlements.clientId })
      .from(entitlements)
      .where(inArray(entitlements.agentId, ids))
      .orderBy(entitlements.clientId);
    for (const row of rows) byAgent.set(row.agentId, [...(byAgent.get(row.agentId) ?? []), row.clientId]);
    return byAgent;
  }

  return {
    /** The rows behind a page of external hits, re-checked for liveness and visibility. */
    async visibleRows(ids: string[], caller: Caller): Promise<Map<string, SearchRow>> {
      if (ids.length === 0) return new Map();
      const rows = await db
        .select(LISTED_COLUMNS)
        .from(agents)
        .where(and(inArray(agents.id, ids), isNull(agents.deletedAt), visibleTo(caller)));
      return new Map(rows.map((row) => [row.id, row as SearchRow]));
    },

    /** Current state of each agent for an external index; a missing row means it is gone for good. */
    async changesFor(ids: string[]): Promise<IndexChange[]> {
      if (ids.length === 0) return [];
      const rows = await db.select().from(agents).where(inArray(agents.id, ids));
      const entitled = await entitledByAgent(ids);
      const byId = new Map(rows.map((row) => [row.id, row]));
      return ids.map((id) => ({ id, row: byId.get(id), entitled: entitled.get(id) ?? [] }));
    },

    /** Live agents in seq order after `afterSeq`, with their entitlements: the reindex source. */
    async liveBatch(afterSeq: number, limit: number): Promise<IndexChange[]> {
      const rows = await db
        .select()
        .from(agents)
        .where(and(isNull(agents.deletedAt), sql`${agents.seq} > ${afterSeq}`))
        .orderBy(agents.seq)
        .limit(limit);
      const entitled = await entitledByAgent(rows.map((row) => row.id));
      return rows.map((row) => ({ id: row.id, row, entitled: entitled.get(row.id) ?? [] }));
    },

    /** Every agent (deleted included) changed after `afterSeq`: what a reindex must catch up on. */
    async changedSince(afterSeq: number, limit: number): Promise<IndexChange[]> {
      const rows = await db
        .select({ id: agents.id })
        .from(agents)
        .where(sql`${agents.seq} > ${afterSeq}`)
        .orderBy(agents.seq)
        .limit(limit);
      return this.changesFor(rows.map((row) => row.id));
    },

    async maxSeq(): Promise<number> {
      const rows = await database.rows<{ n: number | null }>(
        sql`select max(${agents.seq})::float8 as n from ${agents}`,
      );
      return Number(rows[0]?.n ?? 0);
    },

    async countLive(): Promise<number> {
      const rows = await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents} where ${agents.deletedAt} is null`,
      );
      return Number(rows[0]?.n ?? 0);
    },

    /**
     * Records, inside the writing transaction, that these agents must reach the search index: read
     * after the write on the same connection, so the seq is the one just taken. A missing row (hard
     * delete) is queued with seq 0, meaning "remove whatever the index has".
     */
    async enqueue(ids: string[], executor: Executor) {
      if (ids.length === 0) return;
      await database.rows(
        sql`insert into ${searchOutbox} (agent_id, seq)
          select i.id, coalesce((select a.seq from ${agents} a where a.id = i.id), 0)
          from unnest(array[${sql.join(
            ids.map((id) => sql`${id}`),
            sql`, `,
          )}]::uuid[]) as i(id)
          on conflict (agent_id) do update set seq = greatest(${searchOutbox.seq}, excluded.seq),
            enqueued_at = now(), next_attempt_at = now(), attempts = 0, last_error = null`,
        executor,
      );
    },

    /** Outbox entries due for another attempt, oldest first. */
    due(limit: number) {
      return db
        .select({ agentId: searchOutbox.agentId, seq: searchOutbox.seq, attempts: searchOutbox.attempts })
        .from(searchOutbox)
        .where(lte(searchOutbox.nextAttemptAt, sql`now()`))
        .orderBy(searchOutbox.nextAttemptAt)
        .limit(limit);
    },

    /** Drops entries whose change (or a newer one) is now indexed; newer changes queued meanwhile stay. */
    async settle(indexed: { id: string; seq: number }[]) {
      if (indexed.length === 0) return;
      const ids = sql.join(
        indexed.map((entry) => sql`${entry.id}`),
        sql`, `,
      );
      const seqs = sql.join(
        indexed.map((entry) => sql`${entry.seq}`),
        sql`, `,
      );
      await database.rows(sql`delete from ${searchOutbox} o
        using unnest(array[${ids}]::uuid[], array[${seqs}]::bigint[]) as t(id, seq)
        where o.agent_id = t.id and o.seq <= t.seq`);
    },

    async postpone(ids: string[], error: string, delaySeconds: number) {
      if (ids.length === 0) return;
      await db
        .update(searchOutbox)
        .set({
          attempts: sql`${searchOutbox.attempts} + 1`,
          lastError: error.slice(0, 500),
          nextAttemptAt: sql`now() + make_interval(secs => ${delaySeconds})`,
        })
        .where(inArray(searchOutbox.agentId, ids));
    },

    async pending(): Promise<number> {
      const rows = await database.rows<{ n: number }>(sql`select count(*)::int as n from ${searchOutbox}`);
      return Number(rows[0]?.n ?? 0);
    },
  };
}

export type SearchRepo = ReturnType<typeof searchRepo>;
