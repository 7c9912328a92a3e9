import { sql } from "drizzle-orm";
import type { Database } from "../../infra/db/client";
import { agents } from "../../infra/db/schema";
import { visibleTo } from "../agents/repo";
import type { Caller } from "../auth/model";

export type StatusCounts = {
  total: number;
  active: number;
  deprecated: number;
  up: number;
  down: number;
  unknown: number;
  sigNone: number;
  sigValid: number;
  sigInvalid: number;
  local: number;
  federated: number;
  before: number;
};

/** Counting queries over live agents, always under the caller's visibility (the same rule as search). */
export function statsRepo(database: Database) {
  const visible = (caller: Caller) => {
    const rule = visibleTo(caller);
    return rule ? sql`${agents.deletedAt} is null and ${rule}` : sql`${agents.deletedAt} is null`;
  };
  return {
    /** The newest change sequence: any write (including visibility and entitlement changes) bumps it. */
    async maxSeq(): Promise<number> {
      const rows = await database.rows<{ maxSeq: number | null }>(
        sql`select max(${agents.seq})::float8 as "maxSeq" from ${agents}`,
      );
      return Number(rows[0]?.maxSeq ?? 0);
    },

    /** Every breakdown in one pass over the visible live agents. */
    async counts(caller: Caller, since: Date): Promise<StatusCounts> {
      const rows = await database.rows<Record<keyof StatusCounts, number>>(sql`
        select count(*)::int as "total",
          count(*) filter (where ${agents.status} = 'active')::int as "active",
          count(*) filter (where ${agents.status} = 'deprecated')::int as "deprecated",
          count(*) filter (where ${agents.health} = 'up')::int as "up",
          count(*) filter (where ${agents.health} = 'down')::int as "down",
          count(*) filter (where ${agents.health} = 'unknown')::int as "unknown",
          count(*) filter (where ${agents.signature} = 'none')::int as "sigNone",
          count(*) filter (where ${agents.signature} = 'valid')::int as "sigValid",
          count(*) filter (where ${agents.signature} = 'invalid')::int as "sigInvalid",
          count(*) filter (where ${agents.originRegistry} is null)::int as "local",
          count(*) filter (where ${agents.originRegistry} is not null)::int as "federated",
          count(*) filter (where ${agents.createdAt} < ${since.toISOString()}::timestamptz)::int as "before"
        from ${agents} where ${visible(caller)}`);
      const row = rows[0]!;
      return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)])) as StatusCounts;
    },

    /** Visible live agents registered per UTC day since `since`, as [YYYY-MM-DD, count]. */
    async registrationsPerDay(caller: Caller, since: Date): Promise<Map<string, number>> {
      const rows = await database.rows<{ day: string; n: number }>(sql`
        select to_char((${agents.createdAt} at time zone 'UTC')::date, 'YYYY-MM-DD') as "day", count(*)::int as "n"
        from ${agents}
        where ${visible(caller)} and ${agents.createdAt} >= ${since.toISOString()}::timestamptz
        group by 1`);
      return new Map(rows.map((row) => [String(row.day), Number(row.n)]));
    },
  };
}
