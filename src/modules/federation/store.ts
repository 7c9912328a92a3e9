/**
 * Everything the sync engine reads and writes in the database, behind one interface whose arguments and
 * results cross a thread boundary unchanged (structured clone).
 *
 * Where it runs. On Postgres the sync worker thread opens its own small pool and runs this store
 * itself (plus one dedicated connection for the per-peer session advisory locks). Embedded PGlite is a
 * single in-process database that one thread owns, so there the worker does the network side and the
 * CPU-heavy preparation, and calls this store in the main thread through messages (see rpc.ts).
 *
 * Exactly once. A page is applied in one transaction that locks the peer row, checks that the peer's
 * cursor is still the `since` the page was read from, writes the copies and advances the cursor. A
 * crash before commit leaves nothing applied and the page is read again; a second instance that got
 * the same page (a lost advisory lock, say) finds the cursor moved and applies nothing.
 */
import { and, eq, inArray, isNull, lt, sql } from "drizzle-orm";
import postgres from "postgres";
import type { Config } from "../../config";
import { PgDialect } from "drizzle-orm/pg-core";
import { type Database, type Executor, runStatement } from "../../infra/db/client";
import { agents, peerSyncs, peers } from "../../infra/db/schema";
import { decryptSecret } from "./crypto";
import { copyId, FeedFormatError, type PreparedPage, type PreparedUpsert } from "./page";

/** The advisory lock space of per-peer sync locks: (PEER_LOCK_CLASS, hashtext(peer id)). */
export const PEER_LOCK_CLASS = 727_420_006;

/** How a copy is retired: a tombstone at a new seq, like any delete (caches and search follow it). */
export const RETIRED = {
  status: "deleted",
  deletedAt: sql`now()`,
  updatedAt: sql`now()`,
  seq: sql`nextval('agent_seq')`,
} as const;

export type PeerTask = { id: string; name: string; nextSyncAt: number };

export type RunPeer = {
  id: string;
  name: string;
  baseUrl: string;
  clientId: string;
  clientSecret: string;
  registryId: string | null;
  lastSeq: number;
  resnapshotFrom: number | null;
  intervalSeconds: number;
  failures: number;
  previousStatus: "never" | "running" | "success" | "failed";
};

export type ApplyResult = { added: number; updated: number; removed: number; changedIds: string[] };

export type FinishInput = {
  peerId: string;
  syncId: number;
  status: "success" | "failed" | "aborted";
  error: string | null;
  /** null: unknown this time, the last figure stands. */
  lagChanges: number | null;
  /** When to sync next, from now; null leaves the schedule as another instance set it. */
  nextSyncInMs: number | null;
  previousStatus: RunPeer["previousStatus"];
};

/** Errors the engine tells apart by `code` (kept when they cross the thread boundary). */
export class StoreError extends Error {
  constructor(
    readonly code: "PEER_GONE" | "CURSOR_MOVED" | "REGISTRY_CONFLICT" | "SECRET",
    message: string,
  ) {
    super(message);
    this.name = "StoreError";
  }
}

export interface SyncStore {
  /** Enabled peers and when each is due. */
  schedule(): Promise<PeerTask[]>;
  /** Whether this instance may sync the peer now (no other instance holds it). */
  tryLock(peerId: string): Promise<boolean>;
  unlock(peerId: string): Promise<void>;
  /** Re-reads the peer under its row lock: null when it is gone, disabled or no longer due. */
  beginRun(peerId: string, instance: string): Promise<{ syncId: number; peer: RunPeer } | null>;
  /** After 410 CURSOR_EXPIRED: cursor back to 0, remembering where this snapshot starts. */
  startResnapshot(peerId: string): Promise<void>;
  /**
   * Applies a page in one transaction. With `after` (the previous page's apply, still running), the
   * copies are written at once and the cursor is checked and moved only once `after` has ended, so
   * the two transactions overlap and still commit in feed order (a failed `after` fails this one).
   */
  applyPage(peerId: string, syncId: number, page: StorePage, after?: Promise<unknown>): Promise<ApplyResult>;
  /** Whether applyPage may be given `after` (one connection, as on PGlite, runs one transaction). */
  readonly pagesInParallel: boolean;
  finishRun(input: FinishInput): Promise<void>;
  close(): Promise<void>;
}

/** The incoming rows' columns inside the upsert (json_to_recordset), all but the card's text. */
const INCOMING_COLUMNS = [
  ["id", "uuid"],
  ["origin_id", "text"],
  ["name", "text"],
  ["description", "text"],
  ["url", "text"],
  ["visibility", "text"],
  ["status", "text"],
  ["status_message", "text"],
  ["generation", "text"],
  ["protocol_version", "text"],
  ["latest_version", "text"],
  ["card_hash", "text"],
  ["skills", "text[]"],
  ["tags", "text[]"],
  ["input_modes", "text[]"],
  ["output_modes", "text[]"],
  ["facet_keys", "text[]"],
  ["streaming", "boolean"],
  ["provider", "text"],
  ["signature", "text"],
  ["health", "text"],
  ["checked_at", "timestamptz"],
  ["created_at", "timestamptz"],
  ["updated_at", "timestamptz"],
] as const;

/** Columns an upsert takes from the incoming copy (all of them: the peer's record is the truth). */
const UPDATED_COLUMNS = [
  "name",
  "description",
  "url",
  "visibility",
  "status",
  "status_message",
  "generation",
  "protocol_version",
  "latest_version",
  "card_raw",
  "card_hash",
  "skills",
  "tags",
  "input_modes",
  "output_modes",
  "facet_keys",
  "streaming",
  "provider",
  "signature",
  "health",
  "checked_at",
  "created_at",
  "updated_at",
  "deleted_at",
  "seq",
];

/**
 * Separates the cards' texts in the upsert's second parameter. A JSON text never holds this control
 * character unescaped, so splitting on it gives the texts back exactly.
 */
const CARD_SEPARATOR = "\x1e";

/**
 * Writes a page's copies in one statement, prepared once per connection (its text never changes):
 * the rows travel as one JSON parameter ($1, building a 500-row, 30-column insert in the driver cost
 * more than running it) and their cards' texts beside it as one text parameter ($2, the texts joined
 * by CARD_SEPARATOR, zipped back row by row). Kept out of the JSON, the cards (most of a page's bytes)
 * need no escaping on this side and no unescaping by Postgres. The registry is $3. The version row is
 * added from what was written, and the pre-existing state counts which copies were new.
 */
const UPSERT_COPIES = new PgDialect().sqlToQuery(sql`with incoming as (
    select * from rows from (
      json_to_recordset(${sql.raw("$1")}::text::json) as (${sql.raw(INCOMING_COLUMNS.map(([c, type]) => `${c} ${type}`).join(", "))}),
      unnest(string_to_array(${sql.raw("$2")}::text, chr(30)))
    ) as r(${sql.raw(INCOMING_COLUMNS.map(([c]) => c).join(", "))}, card_raw)
  ),
  existing as (
    select a.origin_id from agents a
    where a.origin_registry = ${sql.raw("$3")}::text and a.deleted_at is null
      and a.origin_id in (select origin_id from incoming)
  ),
  upserted as (
    insert into agents (id, owner, name, description, url, card_url, visibility, status, status_message,
      generation, protocol_version, latest_version, card_raw, card_hash, skills, tags, input_modes,
      output_modes, facet_keys, streaming, provider, signature, health, checked_at, origin_registry,
      origin_id, seq, created_at, updated_at, deleted_at)
    -- seq 0: the agents_feed_stamp trigger gives every row it writes the next seq (0 is never a row's).
    select r.id, null, r.name, r.description, r.url, null, r.visibility, r.status, r.status_message,
      r.generation, r.protocol_version, r.latest_version, r.card_raw, r.card_hash,
      r.skills, r.tags, r.input_modes, r.output_modes, r.facet_keys, r.streaming, r.provider, r.signature,
      r.health, r.checked_at, ${sql.raw("$3")}::text, r.origin_id, 0, r.created_at, r.updated_at, null
    from incoming r
    on conflict (origin_registry, origin_id) where origin_registry is not null do update set
      ${sql.raw(UPDATED_COLUMNS.map((c) => `"${c}" = excluded."${c}"`).join(", "))}
    returning id, latest_version, card_raw, card_hash
  ),
  versions as (
    insert into agent_versions (agent_id, version, card_raw, card_hash)
    select id, latest_version, card_raw, card_hash from upserted
    on conflict (agent_id, version) do nothing
  )
  select (select count(*) from existing)::int as updated`).sql;

/** The upsert's parameters for a page's copies from `registry` (see UPSERT_COPIES). */
export type CopyParams = { registry: string; rows: string; cards: string };

export function copyParams(registry: string, upserts: Array<Pick<PreparedUpsert, "originId" | "columns">>) {
  const cards: string[] = [];
  const rows = upserts.map(({ originId, columns: c }) => {
    if (c.cardRaw.includes(CARD_SEPARATOR))
      throw new FeedFormatError(`the card of ${originId} is not JSON text`);
    cards.push(c.cardRaw);
    return {
      id: copyId(registry, originId),
      origin_id: originId,
      name: c.name,
      description: c.description,
      url: c.url,
      visibility: c.visibility,
      status: c.status,
      status_message: c.statusMessage,
      generation: c.generation,
      protocol_version: c.protocolVersion,
      latest_version: c.latestVersion,
      card_hash: c.cardHash,
      skills: c.skills,
      tags: c.tags,
      input_modes: c.inputModes,
      output_modes: c.outputModes,
      facet_keys: c.facetKeys,
      streaming: c.streaming,
      provider: c.provider,
      signature: c.signature,
      health: c.health,
      checked_at: c.checkedAt,
      created_at: c.createdAt,
      updated_at: c.updatedAt,
    } satisfies Record<(typeof INCOMING_COLUMNS)[number][0], unknown>;
  });
  return { registry, rows: JSON.stringify(rows), cards: cards.join(CARD_SEPARATOR) } satisfies CopyParams;
}

/**
 * A page as the store takes it: as prepared, or packed (packPage) with the upsert's parameters built
 * and the copies' columns left out.
 */
export type StorePage = Omit<PreparedPage, "upserts"> & {
  upserts: Array<Pick<PreparedUpsert, "seq" | "originId"> & Partial<Pick<PreparedUpsert, "columns">>>;
  params?: CopyParams;
};

/**
 * The page with its upsert's parameters built here, for a store in another thread (embedded PGlite):
 * the thread that writes, which also serves HTTP there, then only runs the statement, and receives two
 * strings instead of 500 rows of columns to copy between threads.
 */
export function packPage(page: PreparedPage): StorePage {
  if (page.registry === null || page.upserts.length === 0) return page;
  return {
    ...page,
    upserts: page.upserts.map(({ seq, originId }) => ({ seq, originId })),
    params: copyParams(page.registry, page.upserts),
  };
}

function paramsOf(page: StorePage, registry: string): CopyParams {
  if (page.params) {
    if (page.params.registry !== registry)
      throw new Error(`the page was packed for registry ${page.params.registry}, not ${registry}`);
    return page.params;
  }
  return copyParams(
    registry,
    page.upserts.map(({ originId, columns }) => {
      if (!columns) throw new Error(`the page carries neither parameters nor the columns of ${originId}`);
      return { originId, columns };
    }),
  );
}

async function upsertCopies(database: Database, executor: Executor, params: CopyParams) {
  const result = await runStatement<{ updated: number }>(
    database,
    UPSERT_COPIES,
    [params.rows, params.cards, params.registry],
    executor,
  );
  return { updated: Number(result[0]?.updated ?? 0) };
}

export function createSyncStore(deps: {
  config: Config;
  database: Database;
  /** Postgres: a URL for the dedicated lock connection. Absent (PGlite): locks are kept in memory. */
  lockUrl?: string;
}): SyncStore {
  const { config, database } = deps;
  const { db } = database;
  const defaultInterval = config.federationIntervalSeconds;

  const lockConnection = deps.lockUrl
    ? postgres(deps.lockUrl, {
        max: 1,
        // Never recycled while idle or by age: the session holds the locks.
        idle_timeout: 0,
        max_lifetime: 0,
        connect_timeout: 5,
        onnotice: () => {},
      })
    : undefined;
  const localLocks = new Set<string>();

  /**
   * Planner statistics keep up with the copies written: an agents table analysed while nearly empty
   * gets sequential scans for the per-page lookups, which made each page slower than the last (an
   * initial sync of 100k agents took minutes until autovacuum came by; embedded PGlite has none).
   * Analysed after 1,000 rows written, then each time the count doubles: a handful of passes, each
   * only of the columns those lookups filter on (the row count comes with any analyze). A full pass
   * reads every sampled card and builds search-document statistics: ~0.8 s of CPU at 64k rows, three
   * times the narrow one, and the sync needs none of it.
   */
  let written = 0;
  let analyzeAt = 1000;
  let writtenSinceFullAnalyze = 0;
  async function keepStatistics(rows: number) {
    written += rows;
    writtenSinceFullAnalyze += rows;
    if (written < analyzeAt) return;
    analyzeAt = written * 2;
    await database.rows(sql`analyze agents (origin_registry, origin_id, deleted_at, seq)`).catch(() => {});
  }

  /**
   * The other columns' statistics (search, listing), in the background once a run is recorded: nothing
   * the sync does depends on them, and what it wrote was readable and searchable from each page's
   * commit. After 1,000 copies written, then each time the copies written since reach half of all this
   * store has written (as the agents service paces its ANALYZE): once after an initial sync, rarely in
   * steady state, where a pass over a large table would cost more than the writes it follows.
   */
  let fullAnalyzeAfter = 1000;
  let refreshing: Promise<void> | undefined;
  function refreshStatistics() {
    if (writtenSinceFullAnalyze < fullAnalyzeAfter || refreshing) return;
    writtenSinceFullAnalyze = 0;
    fullAnalyzeAfter = Math.max(1000, Math.floor(written / 2));
    refreshing = database
      // The search rows grew with the copies (one per live agent): searches plan from their statistics.
      .rows(sql`analyze agents, agent_search`)
      .then(
        () => {},
        () => {},
      )
      .finally(() => {
        refreshing = undefined;
      });
  }

  async function tryLock(peerId: string) {
    if (!lockConnection) {
      if (localLocks.has(peerId)) return false;
      localLocks.add(peerId);
      return true;
    }
    const rows = await lockConnection<{ ok: boolean }[]>`
      select pg_try_advisory_lock(${PEER_LOCK_CLASS}, hashtext(${peerId})) as ok`;
    return rows[0]?.ok === true;
  }

  async function unlock(peerId: string) {
    if (!lockConnection) {
      localLocks.delete(peerId);
      return;
    }
    await lockConnection`select pg_advisory_unlock(${PEER_LOCK_CLASS}, hashtext(${peerId}))`;
  }

  async function schedule(): Promise<PeerTask[]> {
    const rows = await db
      .select({ id: peers.id, name: peers.name, nextSyncAt: peers.nextSyncAt })
      .from(peers)
      .where(eq(peers.enabled, true))
      .orderBy(peers.nextSyncAt);
    return rows.map((r) => ({ id: r.id, name: r.name, nextSyncAt: r.nextSyncAt.getTime() }));
  }

  async function beginRun(peerId: string, instance: string) {
    const begun = await db.transaction(async (tx) => {
      const [row] = await tx
        .select({
          peer: peers,
          due: sql<boolean>`${peers.nextSyncAt} <= now()`,
        })
        .from(peers)
        .where(eq(peers.id, peerId))
        .for("update");
      if (!row?.peer.enabled || !row.due) return null;
      // A run left "running" was cut short by a process that died; it is over now.
      await tx
        .update(peerSyncs)
        .set({
          status: "aborted",
          finishedAt: sql`now()`,
          error: "interrupted: the process running it stopped",
        })
        .where(and(eq(peerSyncs.peerId, peerId), eq(peerSyncs.status, "running")));
      const [sync] = await tx
        .insert(peerSyncs)
        .values({ peerId, status: "running", fromSeq: row.peer.lastSeq, instance })
        .returning({ id: peerSyncs.id });
      await tx.update(peers).set({ lastStatus: "running" }).where(eq(peers.id, peerId));
      return { syncId: sync!.id, peer: row.peer };
    });
    if (!begun) return null;
    const p = begun.peer;
    let clientSecret: string;
    try {
      clientSecret = await decryptSecret(config.secretKey, p.id, p.clientSecretEnc);
    } catch (error) {
      await finishRun({
        peerId,
        syncId: begun.syncId,
        status: "failed",
        error: (error as Error).message,
        lagChanges: p.lagChanges,
        nextSyncInMs: config.federation.maxBackoffSeconds * 1000,
        previousStatus: p.lastStatus,
      });
      throw new StoreError("SECRET", (error as Error).message);
    }
    return {
      syncId: begun.syncId,
      peer: {
        id: p.id,
        name: p.name,
        baseUrl: p.baseUrl,
        clientId: p.clientId,
        clientSecret,
        registryId: p.registryId,
        lastSeq: p.lastSeq,
        resnapshotFrom: p.resnapshotFrom,
        intervalSeconds: p.intervalS ?? defaultInterval,
        failures: p.failures,
        previousStatus: p.lastStatus,
      } satisfies RunPeer,
    };
  }

  async function startResnapshot(peerId: string) {
    await database.rows(
      sql`update peers set last_seq = 0, resnapshot_from = nextval('agent_seq') where id = ${peerId}`,
    );
  }

  async function applyPage(
    peerId: string,
    syncId: number,
    page: StorePage,
    after?: Promise<unknown>,
  ): Promise<ApplyResult> {
    const result = await writePage(peerId, syncId, page, after);
    await keepStatistics(page.upserts.length + page.deletes.length);
    return result;
  }

  function writePage(
    peerId: string,
    syncId: number,
    page: StorePage,
    after: Promise<unknown> | undefined,
  ): Promise<ApplyResult> {
    return db.transaction(async (tx) => {
      /**
       * A sync page is derived data: the peer still holds it. Without waiting for the WAL flush, a crash
       * can lose the last pages committed, but only as a suffix of whole transactions, cursor included,
       * so they are read again: exactly once still holds. Embedded PGlite too: its commit otherwise
       * waits for the flush on the thread that serves HTTP (~1.4 ms per commit measured).
       */
      await tx.execute(sql`set local synchronous_commit = off`);
      const lockPeer = async () => {
        const [locked] = await tx
          .select({
            lastSeq: peers.lastSeq,
            registryId: peers.registryId,
            resnapshotFrom: peers.resnapshotFrom,
          })
          .from(peers)
          .where(eq(peers.id, peerId))
          .for("update");
        if (!locked) throw new StoreError("PEER_GONE", "the peer was removed");
        if (locked.lastSeq !== page.since)
          throw new StoreError(
            "CURSOR_MOVED",
            `the peer's cursor moved to ${locked.lastSeq} (expected ${page.since}): another run applied it`,
          );
        return locked;
      };

      /**
       * The copies are written before the peer row is locked and the cursor checked, so a page can be
       * written while the previous one (`after`) finishes. The engine never overlaps two pages that
       * touch one copy, nor a page that may claim the registry id (that path locks the peer row first),
       * so neither transaction waits on a row the other holds.
       */
      const [current] = await tx
        .select({ registryId: peers.registryId })
        .from(peers)
        .where(eq(peers.id, peerId));
      if (!current) throw new StoreError("PEER_GONE", "the peer was removed");
      let registry = current.registryId;
      let peer: Awaited<ReturnType<typeof lockPeer>> | undefined;
      if (page.registry !== null && registry !== page.registry) {
        peer = await lockPeer();
        registry = peer.registryId;
      }
      if (page.registry !== null && registry !== page.registry) {
        if (registry !== null)
          throw new FeedFormatError(
            `the peer now serves agents as registry "${page.registry}"; it was "${registry}" (remove and add it again if that is intended)`,
          );
        const [claimed] = await tx
          .select({ name: peers.name })
          .from(peers)
          .where(and(eq(peers.registryId, page.registry), sql`${peers.id} <> ${peerId}`));
        if (claimed)
          throw new StoreError(
            "REGISTRY_CONFLICT",
            `registry "${page.registry}" is already synced through peer "${claimed.name}"`,
          );
        registry = page.registry;
        await tx.update(peers).set({ registryId: registry }).where(eq(peers.id, peerId));
      }

      let added = 0;
      let updated = 0;
      let removed = 0;
      const changedIds: string[] = [];
      if (registry !== null) {
        if (page.upserts.length > 0) {
          const reg = registry;
          const written = await upsertCopies(database, tx, paramsOf(page, reg));
          updated = written.updated;
          added = page.upserts.length - written.updated;
          for (const { originId } of page.upserts) changedIds.push(copyId(reg, originId));
        }
        if (page.deletes.length > 0) {
          const gone = await tx
            .update(agents)
            .set(RETIRED as never)
            .where(
              and(
                eq(agents.originRegistry, registry),
                inArray(agents.originId, page.deletes),
                isNull(agents.deletedAt),
              ),
            )
            .returning({ id: agents.id });
          removed += gone.length;
          for (const g of gone) changedIds.push(g.id);
        }
      }

      if (after) await after.catch(() => {});
      peer ??= await lockPeer();
      if (peer.registryId !== null && peer.registryId !== registry)
        throw new StoreError("CURSOR_MOVED", "the peer's registry id changed while the page was written");

      let agentsSynced = sql`${peers.agentsSynced} + ${added - removed}`;
      let resnapshotFrom: number | null = peer.resnapshotFrom;
      if (!page.hasMore && peer.resnapshotFrom !== null) {
        // The re-read feed is complete: copies it did not touch were deleted upstream while we missed it.
        if (registry !== null) {
          const swept = await tx
            .update(agents)
            .set(RETIRED as never)
            .where(
              and(
                eq(agents.originRegistry, registry),
                isNull(agents.deletedAt),
                lt(agents.seq, peer.resnapshotFrom),
              ),
            )
            .returning({ id: agents.id });
          removed += swept.length;
          for (const s of swept) changedIds.push(s.id);
          agentsSynced = sql`(select count(*)::int from ${agents}
            where ${agents.originRegistry} = ${registry} and ${agents.deletedAt} is null)`;
        }
        resnapshotFrom = null;
      }
      await tx
        .update(peers)
        .set({ lastSeq: page.nextSince, agentsSynced: agentsSynced as never, resnapshotFrom })
        .where(eq(peers.id, peerId));
      await tx
        .update(peerSyncs)
        .set({
          pages: sql`${peerSyncs.pages} + 1`,
          added: sql`${peerSyncs.added} + ${added}`,
          updated: sql`${peerSyncs.updated} + ${updated}`,
          removed: sql`${peerSyncs.removed} + ${removed}`,
          skipped: sql`${peerSyncs.skipped} + ${page.skipped.length}`,
          toSeq: page.nextSince,
        } as never)
        .where(eq(peerSyncs.id, syncId));
      return { added, updated, removed, changedIds };
    });
  }

  async function finishRun(input: FinishInput) {
    const success = input.status === "success";
    const failed = input.status === "failed";
    const status =
      input.status === "aborted"
        ? input.previousStatus === "running"
          ? "never"
          : input.previousStatus
        : input.status;
    await db.transaction(async (tx) => {
      await tx
        .update(peerSyncs)
        .set({ status: input.status, finishedAt: sql`now()`, error: input.error })
        .where(eq(peerSyncs.id, input.syncId));
      await tx
        .update(peers)
        .set({
          lastStatus: status,
          lastSyncAt: input.status === "aborted" ? undefined : sql`now()`,
          lastSuccessAt: success ? sql`now()` : undefined,
          lastError: success ? null : failed ? input.error : undefined,
          failures: success ? 0 : failed ? sql`${peers.failures} + 1` : undefined,
          lagChanges: input.lagChanges ?? undefined,
          nextSyncAt:
            input.nextSyncInMs === null
              ? undefined
              : sql`now() + ${Math.max(0, Math.round(input.nextSyncInMs))} * interval '1 millisecond'`,
        } as never)
        .where(eq(peers.id, input.peerId));
    });
    refreshStatistics();
  }

  return {
    schedule,
    tryLock,
    unlock,
    beginRun,
    startResnapshot,
    applyPage,
    pagesInParallel: database.kind === "postgres",
    finishRun,
    close: async () => {
      localLocks.clear();
      await refreshing;
      await lockConnection?.end({ timeout: 5 });
    },
  };
}
