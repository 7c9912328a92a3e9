/**
 * The change feed (`GET /v1/changes`) and its retention.
 *
 * Order. Every change to an agent takes a new `seq` inside its transaction (the agents_feed_stamp
 * trigger, drizzle/0004_federation.sql), so a row's seq is the position of its latest change and the
 * feed shows each agent once, at that position, deletions included (deleted rows stay as tombstones).
 *
 * No change commits behind a cursor. A sequence hands out numbers before commit, so seq 10 may commit
 * after seq 11 has been served. The trigger takes each seq while holding a shared advisory lock that
 * lasts until its transaction ends; the feed reads the sequence first, then waits until every
 * transaction it saw holding that lock has finished. Every seq at or below what it read is then
 * committed or rolled back, and the page never reaches beyond it (the watermark). Writers never wait
 * for the feed. On embedded PGlite, queries and transactions run one at a time, so there is nothing
 * in flight to wait for.
 *
 * What a caller is shown. Only local agents (federated copies are never re-exported: no loops).
 * An agent the caller may see now is an upsert carrying the same record as GET /v1/agents/:id. An
 * agent the caller may not see (deleted, made private, entitlement withdrawn) is a delete, but only to
 * callers who could have seen it at some point: when the agent was ever public (agents.ever_public),
 * when the caller owns it, is entitled to it, or had its entitlement withdrawn (entitlement_revocations,
 * kept by a trigger). Everyone else gets nothing at all for that agent: a private agent's id, name and
 * existence never reach a caller who never could see it, not even as a delete. Admins see everything.
 * What remains observable is the seq numbering itself: it is one clock shared by every change
 * (rolled-back writes, other agents' updates and entitlement changes consume it too), so a gap says
 * that something changed somewhere, never what, whose, or how many agents there are.
 *
 * Retention. Tombstones older than FEDERATION_TOMBSTONE_RETENTION_HOURS are purged, and the highest
 * purged seq becomes the horizon: a `since` below it (other than 0, a full read) could have missed a
 * deletion, so it gets 410 CURSOR_EXPIRED and the puller re-reads the feed from 0.
 */
import { and, asc, gt, isNull, lte, type SQL, sql } from "drizzle-orm";
import type { Config } from "../../config";
import { ApiError } from "../../errors";
import type { Database } from "../../infra/db/client";
import { agents, entitlementRevocations, entitlements } from "../../infra/db/schema";
import type { Logger } from "../../infra/logger";
import type { Caller } from "../auth/model";
import { LISTED_COLUMNS } from "../agents/repo";
import { recordBody } from "../agents/service";

/** The advisory lock the agents_feed_stamp trigger holds (shared) while a seq is uncommitted. */
export const SEQ_LOCK = { classId: 727_420_005, objId: 1 } as const;
/** Serialises maintenance passes across instances (try-lock: a busy one is skipped). */
const MAINTENANCE_LOCK = 727_420_007;
/** How long a feed request waits for in-flight writers before serving nothing new this time. */
const WATERMARK_WAIT_MS = 5000;
/** History rows kept per peer, and their age limit. */
const PEER_SYNCS_KEEP = 1000;
const PEER_SYNCS_MAX_AGE_DAYS = 7;

export type FeedPage = { body: string; changes: number; nextSince: number; hasMore: boolean };

/** Which rows the caller is told about at all (see the module comment); undefined: every row (admin). */
function announcedTo(caller: Caller): SQL | undefined {
  if (caller.kind === "client" && caller.admin) return undefined;
  if (caller.kind !== "client") return sql`${agents.everPublic}`;
  const c = caller.clientId;
  return sql`(${agents.everPublic} or ${agents.owner} = ${c}
    or exists (select 1 from ${entitlements} e where e.agent_id = ${agents.id} and e.client_id = ${c})
    or exists (select 1 from ${entitlementRevocations} r where r.agent_id = ${agents.id} and r.client_id = ${c}))`;
}

/** Whether the caller may see the row now (it is then an upsert, else a delete). */
function visibleNow(caller: Caller): SQL {
  const live = sql`${agents.deletedAt} is null`;
  if (caller.kind === "client" && caller.admin) return live;
  if (caller.kind !== "client") return sql`(${live} and ${agents.visibility} = 'public')`;
  return sql`(${live} and (${agents.visibility} = 'public' or ${agents.owner} = ${caller.clientId}
    or exists (select 1 from ${entitlements} e where e.agent_id = ${agents.id} and e.client_id = ${caller.clientId})))`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function createChangeFeed(deps: { config: Config; database: Database; logger: Logger }) {
  const { config, database, logger } = deps;

  /** The sequence's last handed-out value (0 before the first). Not transactional: always current. */
  async function sequenceHead(): Promise<number> {
    const rows = await database.rows<{ last_value: string | number; is_called: boolean }>(
      sql`select last_value, is_called from agent_seq`,
    );
    const row = rows[0];
    if (!row) return 0;
    return row.is_called ? Number(row.last_value) : Number(row.last_value) - 1;
  }

  /**
   * The highest seq below which nothing can still commit, or null when writers it saw did not finish
   * in time (the page then serves nothing newer; the caller simply asks again). Sequence first, then
   * lock holders: a writer that took a seq at or below the value read already held the lock.
   */
  async function watermark(): Promise<{ head: number; safe: number | null }> {
    const head = await sequenceHead();
    if (database.kind === "pglite") return { head, safe: head };
    // pg_locks shows the whole cluster: only this database's writers hold this database's sequence.
    const holders = sql`select virtualtransaction as vx from pg_locks
      where locktype = 'advisory' and classid = ${SEQ_LOCK.classId} and objid = ${SEQ_LOCK.objId}
        and objsubid = 2 and granted and pid <> pg_backend_pid()
        and database = (select oid from pg_database where datname = current_database())`;
    const seen = (await database.rows<{ vx: string }>(holders)).map((r) => r.vx);
    if (seen.length === 0) return { head, safe: head };
    const deadline = Date.now() + WATERMARK_WAIT_MS;
    for (let delay = 1; Date.now() < deadline; delay = Math.min(delay * 2, 25)) {
      await sleep(delay);
      const still = await database.rows<{ vx: string }>(
        sql`select virtualtransaction as vx from pg_locks
          where locktype = 'advisory' and classid = ${SEQ_LOCK.classId} and objid = ${SEQ_LOCK.objId}
            and objsubid = 2 and granted
            and virtualtransaction in (${sql.join(
              seen.map((vx) => sql`${vx}`),
              sql`, `,
            )})`,
      );
      if (still.length === 0) return { head, safe: head };
    }
    logger.warn(
      { writers: seen.length },
      "change feed: writers still in flight; serving nothing new this time",
    );
    return { head, safe: null };
  }

  async function page(caller: Caller, since: number, limit: number): Promise<FeedPage> {
    const { head, safe } = await watermark();
    if (since > head)
      throw new ApiError(
        "CURSOR_EXPIRED",
        `since=${since} is ahead of this registry's feed (at ${head}): it was restored or replaced; read it again from since=0`,
      );
    // Horizon and rows from one snapshot, so a purge between the two cannot hide a deletion.
    return database.db.transaction(
      async (tx) => {
        const horizon = await database.rows<{ purged_seq: string | number }>(
          sql`select purged_seq from feed_horizon where id = 1`,
          tx,
        );
        const purged = Number(horizon[0]?.purged_seq ?? 0);
        if (since > 0 && since < purged)
          throw new ApiError(
            "CURSOR_EXPIRED",
            `Deletions after since=${since} were purged (the feed keeps them back to ${purged}); read it again from since=0`,
          );
        const upTo = safe ?? since;
        if (upTo <= since) return render([], since, false);
        const rows = await tx
          .select({
            ...LISTED_COLUMNS,
            visible: sql<boolean>`${visibleNow(caller)}`.as("visible"),
          })
          .from(agents)
          .where(
            and(
              isNull(agents.originRegistry),
              gt(agents.seq, since),
              lte(agents.seq, upTo),
              announcedTo(caller),
            ),
          )
          .orderBy(asc(agents.seq))
          .limit(limit + 1);
        const hasMore = rows.length > limit;
        const shown = rows.slice(0, limit);
        const parts = shown.map(({ visible, ...row }) =>
          visible
            ? `{"seq":${row.seq},"op":"upsert","id":"${row.id}","agent":${recordBody(row, config.registryId)}}`
            : `{"seq":${row.seq},"op":"delete","id":"${row.id}"}`,
        );
        // Past the last row shown when there is more; otherwise up to the watermark, so rows this caller
        // is not told about are not scanned again on every poll.
        const nextSince = hasMore ? shown.at(-1)!.seq : upTo;
        return render(parts, nextSince, hasMore);
      },
      { isolationLevel: "repeatable read", accessMode: "read only" },
    );
  }

  function render(parts: string[], nextSince: number, hasMore: boolean): FeedPage {
    return {
      body: `{"changes":[${parts.join(",")}],"nextSince":${nextSince},"hasMore":${hasMore}}`,
      changes: parts.length,
      nextSince,
      hasMore,
    };
  }

  let lastHistoryPrune = 0;

  /**
   * Purges tombstones past retention (raising the horizon by the highest purged local seq), and prunes
   * sync history. One instance at a time; returns what it purged.
   */
  async function maintain(now = Date.now()): Promise<{ purged: number; horizon: number } | null> {
    const cutoff = new Date(now - config.federation.tombstoneRetentionHours * 3_600_000);
    const result = await database.db.transaction(async (tx) => {
      const locked = await database.rows<{ ok: boolean }>(
        sql`select pg_try_advisory_xact_lock(${MAINTENANCE_LOCK}) as ok`,
        tx,
      );
      if (!locked[0]?.ok) return null;
      const purged = await database.rows<{ n: number; top: string | number | null }>(
        sql`with gone as (
              delete from ${agents} where ${agents.deletedAt} is not null and ${agents.deletedAt} <= ${cutoff.toISOString()}::timestamptz
              returning ${agents.seq} as seq, ${agents.originRegistry} as origin)
            select count(*)::int as n, max(seq) filter (where origin is null) as top from gone`,
        tx,
      );
      const n = Number(purged[0]?.n ?? 0);
      const top = purged[0]?.top == null ? 0 : Number(purged[0].top);
      const horizon = await database.rows<{ purged_seq: string | number }>(
        top > 0
          ? sql`update feed_horizon set purged_seq = greatest(purged_seq, ${top}), purged_at = now()
                where id = 1 returning purged_seq`
          : sql`select purged_seq from feed_horizon where id = 1`,
        tx,
      );
      return { purged: n, horizon: Number(horizon[0]?.purged_seq ?? 0) };
    });
    if (result && result.purged > 0)
      logger.info(result, "change feed: purged tombstones past retention; horizon raised");
    if (now - lastHistoryPrune > 600_000) {
      lastHistoryPrune = now;
      await database.rows(
        sql`delete from peer_syncs
            where started_at < ${new Date(now - PEER_SYNCS_MAX_AGE_DAYS * 86_400_000).toISOString()}::timestamptz`,
      );
      await database.rows(
        sql`delete from peer_syncs s using (
              select id from (select id, row_number() over (partition by peer_id order by id desc) as n
                              from peer_syncs) ranked where n > ${PEER_SYNCS_KEEP}) old
            where s.id = old.id`,
      );
    }
    return result;
  }

  return { page, maintain, sequenceHead };
}

export type ChangeFeed = ReturnType<typeof createChangeFeed>;
