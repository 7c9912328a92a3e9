/**
 * The sync engine: decides which peers are due, and runs each one's sync. Runs in the worker thread.
 *
 * A run: take the peer's lock (a Postgres session advisory lock, so one instance in a cluster syncs a
 * peer at a time), re-read the peer under its row lock and go on only if it is still due (the instance
 * that ran it last moved next_sync_at one interval on, so a peer is synced once per interval however
 * many instances share the database), then pull pages from the peer's feed with a bearer token
 * (renewed on 401), each applied in one transaction that also advances the cursor. The next page is
 * fetched and prepared while the current one is written. 410 CURSOR_EXPIRED restarts from 0 as a
 * re-snapshot: copies the full re-read does not bring back are removed when it completes.
 *
 * Failures (network, timeouts, HTTP errors, malformed pages) end the run as failed with the error
 * recorded; the peer is retried after an exponential backoff with jitter, capped. Peers run
 * independently, a few at a time, so a slow or broken one never holds up the others. Stopping lets
 * each run finish the page it is writing and stops before the next one.
 */
import type { Config } from "../../config";
import type { Logger } from "../../infra/logger";
import { FeedFormatError, type PreparedPage, prepareRecords, type ReadPage, readPage } from "./page";
import {
  describePeerError,
  fetchFeedPage,
  obtainToken,
  PeerError,
  type PeerHttpOptions,
  type PeerToken,
} from "./peer-client";
import type { ApplyResult, RunPeer, SyncStore } from "./store";

export type RunReport = {
  peerId: string;
  peer: string;
  status: "success" | "failed" | "aborted";
  added: number;
  updated: number;
  removed: number;
  skipped: number;
  pages: number;
  lagChanges: number | null;
  error: string | null;
  durationMs: number;
};

export type EngineHooks = {
  /** Copies written by a committed page: the main thread brings caches and search up to date. */
  changed(ids: string[]): Promise<void>;
  report(report: RunReport): void;
};

/** Backoff after `failures` consecutive failures: interval x 2^(failures-1), capped, with equal jitter. */
export function backoffMs(
  intervalSeconds: number,
  failures: number,
  maxSeconds: number,
  random = Math.random,
) {
  const base = Math.min(maxSeconds, intervalSeconds * 2 ** Math.max(0, Math.min(failures - 1, 30))) * 1000;
  return base / 2 + random() * (base / 2);
}

/** Whether two pages write a copy of the same origin record. */
function sharesCopies(a: PreparedPage, b: PreparedPage) {
  const ids = new Set<string>();
  for (const upsert of a.upserts) ids.add(upsert.originId);
  for (const id of a.deletes) ids.add(id);
  return b.upserts.some((upsert) => ids.has(upsert.originId)) || b.deletes.some((id) => ids.has(id));
}

/** The smallest page asked for after timeouts. */
const MIN_PAGE = 10;

const errorCode = (error: unknown) => (error as { code?: unknown })?.code;

export function createSyncEngine(deps: {
  config: Config;
  store: SyncStore;
  hooks: EngineHooks;
  logger: Logger;
  instance: string;
  http?: Partial<PeerHttpOptions>;
}) {
  const { config, store, hooks, logger, instance } = deps;
  const http: PeerHttpOptions = {
    allowInsecure: config.debug,
    timeoutMs: config.federation.requestTimeoutMs,
    ...deps.http,
  };
  const tokens = new Map<string, PeerToken & { key: string }>();
  /**
   * Page size per peer: a page that timed out is asked for again, next run, at a quarter of the size
   * (down to MIN_PAGE), so a slow peer still makes progress; each page that arrives doubles it back.
   */
  const pageSizes = new Map<string, number>();
  const running = new Map<string, Promise<void>>();
  /** Peers another instance is syncing (or just synced): not tried again here before this time. */
  const holdOff = new Map<string, number>();
  let stopping = false;
  let wake: (() => void) | undefined;
  let loopDone: Promise<void> | undefined;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        if (wake === done) wake = undefined;
        resolve();
      }
      wake = done;
    });

  /** A wait that ends early when stopping. */
  async function pause(ms: number) {
    const until = Date.now() + ms;
    while (!stopping && Date.now() < until)
      await new Promise((r) => setTimeout(r, Math.min(100, until - Date.now())));
  }

  async function token(peer: RunPeer, fresh = false): Promise<string> {
    const key = `${peer.baseUrl}|${peer.clientId}|${peer.clientSecret}`;
    const cached = tokens.get(peer.id);
    if (!fresh && cached && cached.key === key && cached.expiresAt > Date.now()) return cached.accessToken;
    const obtained = await obtainToken(peer.baseUrl, peer.clientId, peer.clientSecret, http);
    tokens.set(peer.id, { ...obtained, key });
    return obtained.accessToken;
  }

  type Fetched = { kind: "page"; page: ReadPage } | { kind: "expired"; detail: string };

  /**
   * Reads the page after `since` and checks its envelope, handling 401 (new token), 429 (wait) and
   * oversize pages. Its records are prepared by the caller, once it has asked for the next page.
   */
  async function fetchPage(peer: RunPeer, since: number, limitIn: number): Promise<Fetched> {
    let limit = limitIn;
    let renewed = false;
    for (;;) {
      const answer = await fetchFeedPage(peer.baseUrl, await token(peer, false), since, limit, http);
      if (answer.kind === "page") {
        try {
          return { kind: "page", page: readPage(answer.text, since) };
        } catch (error) {
          if (error instanceof FeedFormatError)
            throw new PeerError(`malformed feed page: ${error.message}`, "format");
          throw error;
        }
      }
      if (answer.kind === "expired") return answer;
      if (answer.kind === "unauthorized") {
        if (renewed) throw new PeerError(`the peer rejects our token (${answer.detail})`, "auth");
        renewed = true;
        await token(peer, true);
        continue;
      }
      if (answer.kind === "rate_limited") {
        if (stopping) throw new PeerError("stopped while rate limited");
        await pause(answer.retryAfterMs);
        continue;
      }
      if (limit === 1)
        throw new PeerError("a single feed change is larger than the page size limit", "format");
      limit = Math.max(1, Math.floor(limit / 4));
    }
  }

  async function runPeer(peerId: string) {
    let locked = false;
    try {
      const holdOffMs = Math.min(1000, config.federationIntervalSeconds * 500);
      locked = await store.tryLock(peerId);
      if (!locked) {
        holdOff.set(peerId, Date.now() + holdOffMs);
        return;
      }
      const begun = await store.beginRun(peerId, instance);
      if (!begun) {
        holdOff.set(peerId, Date.now() + holdOffMs);
        return;
      }
      await syncRun(begun.syncId, begun.peer);
    } catch (error) {
      logger.error({ err: error, peerId }, "federation: sync run could not start or finish");
    } finally {
      if (locked)
        await store.unlock(peerId).catch((error) => logger.warn({ err: error, peerId }, "unlock failed"));
    }
  }

  async function syncRun(syncId: number, peer: RunPeer) {
    const started = performance.now();
    const totals = { added: 0, updated: 0, removed: 0, skipped: 0, pages: 0 };
    const fullPage = config.federation.pageSize;
    let pageSize = pageSizes.get(peer.id) ?? fullPage;
    let cursor = peer.lastSeq;
    /**
     * What is known to wait upstream when the run ends: 0 once drained; else the changes of a page
     * fetched and not applied, plus one when the feed said there is more (a lower bound); null when
     * nothing was learnt (the peer never answered) and the last figure stands.
     */
    let lagChanges: number | null = 0;
    /** Pages fetched and not (yet) known to be applied, oldest first: at most two. */
    const unapplied: PreparedPage[] = [];
    let heardFrom = false;
    let refreshing: Promise<void> = Promise.resolve();
    let outcome: { status: RunReport["status"]; error: string | null } = { status: "success", error: null };
    let keepSchedule = false;
    let peerGone = false;
    type Applying = { page: PreparedPage; result: Promise<ApplyResult> };
    /**
     * Pages are written two at a time: the next page's copies go in while the previous page's
     * transaction still runs; the store makes the later one wait for the earlier commit before it
     * moves the cursor (and fail if the earlier one did not commit), so order and exactly-once hold.
     */
    let inflight: Applying | undefined;
    /** The registry id the peer row names (pages may overlap only once it is set). */
    let claimedRegistry = peer.registryId;

    function startApply(page: PreparedPage, after?: Applying): Applying {
      const result = store.applyPage(peer.id, syncId, page, after?.result);
      result.catch(() => {}); // awaited in settle(); an earlier page's failure is reported first
      return { page, result };
    }

    async function settle(applying: Applying) {
      const applied = await applying.result;
      unapplied.shift();
      totals.pages++;
      totals.added += applied.added;
      totals.updated += applied.updated;
      totals.removed += applied.removed;
      totals.skipped += applying.page.skipped.length;
      for (const skipped of applying.page.skipped)
        logger.warn(
          { peer: peer.name, originId: skipped.originId, reason: skipped.reason },
          "federation: record skipped",
        );
      cursor = applying.page.nextSince;
      if (applying.page.registry !== null) claimedRegistry = applying.page.registry;
      // Caches and search catch up with this page while the next ones are written; at most one behind.
      await refreshing;
      if (applied.changedIds.length > 0)
        refreshing = hooks
          .changed(applied.changedIds)
          .catch((error) =>
            logger.warn({ err: error, peer: peer.name }, "federation: cache refresh after a page failed"),
          );
    }

    async function settleInflight() {
      const applying = inflight;
      inflight = undefined;
      if (applying) await settle(applying);
    }

    try {
      let next: Promise<Fetched> = fetchPage(peer, cursor, pageSize);
      let expiredOnce = false;
      try {
        for (;;) {
          const fetched = await next;
          if (fetched.kind === "expired") {
            await settleInflight();
            if (expiredOnce || cursor === 0)
              throw new PeerError(`the peer's feed keeps expiring our cursor (${fetched.detail})`, "status");
            expiredOnce = true;
            logger.info(
              { peer: peer.name, since: cursor },
              "federation: cursor past the peer's horizon; re-snapshot",
            );
            await store.startResnapshot(peer.id);
            cursor = 0;
            next = fetchPage(peer, 0, pageSize);
            continue;
          }
          heardFrom = true;
          pageSize = Math.min(fullPage, pageSize * 2);
          pageSizes.set(peer.id, pageSize);
          // Read ahead while this page is prepared and written (the peer renders the next one meanwhile);
          // dropped if this one fails or we stop.
          if (fetched.page.hasMore && !stopping) {
            next = fetchPage(peer, fetched.page.nextSince, pageSize);
            next.catch(() => {});
          }
          const page = prepareRecords(fetched.page, config.registryId);
          unapplied.push(page);
          // Side by side only when neither transaction can wait on a row the other holds (see
          // store.applyPage): no shared copy, and a registry id the peer row already names.
          if (
            inflight &&
            (!store.pagesInParallel ||
              !page.hasMore ||
              page.registry === null ||
              page.registry !== claimedRegistry ||
              sharesCopies(inflight.page, page))
          )
            await settleInflight();
          const earlier = inflight;
          inflight = startApply(page, earlier);
          if (earlier) await settle(earlier);
          if (!page.hasMore) break;
          if (stopping) {
            await settleInflight();
            lagChanges = 1;
            heardFrom = true;
            outcome = { status: "aborted", error: "stopped before the feed was drained (shutdown)" };
            break;
          }
        }
        await settleInflight();
      } catch (error) {
        // A page still being written when something else failed may commit: count it and refresh
        // what it changed. If an earlier page failed it cannot (the cursor check); it just ends.
        const applying = inflight;
        inflight = undefined;
        if (applying) await settle(applying).catch(() => {});
        throw error;
      }
    } catch (error) {
      const code = errorCode(error);
      if (error instanceof PeerError && error.kind === "timeout")
        pageSizes.set(peer.id, Math.max(MIN_PAGE, Math.floor(pageSize / 4)));
      if (code === "PEER_GONE") {
        outcome = { status: "aborted", error: "the peer was removed during the run" };
        peerGone = true;
      } else if (code === "CURSOR_MOVED") {
        // Another instance applied this page (it holds the peer now): nothing failed here.
        outcome = { status: "aborted", error: (error as Error).message };
        keepSchedule = true;
      } else {
        const message =
          code === "REGISTRY_CONFLICT" || error instanceof PeerError
            ? (error as Error).message
            : error instanceof FeedFormatError
              ? `malformed feed page: ${error.message}`
              : `sync failed: ${describePeerError(error)}`;
        outcome = { status: "failed", error: message.slice(0, 1000) };
        const last = unapplied.at(-1);
        lagChanges = last
          ? unapplied.reduce((sum, page) => sum + page.changes, 0) + (last.hasMore ? 1 : 0)
          : heardFrom
            ? 1
            : null;
        if (!(error instanceof PeerError || error instanceof FeedFormatError))
          logger.error({ err: error, peer: peer.name }, "federation: sync run failed");
      }
    }

    await refreshing;
    const failures = outcome.status === "failed" ? peer.failures + 1 : 0;
    const nextSyncInMs = keepSchedule
      ? null
      : outcome.status === "success"
        ? peer.intervalSeconds * 1000
        : outcome.status === "failed"
          ? backoffMs(peer.intervalSeconds, failures, config.federation.maxBackoffSeconds)
          : 0;
    if (!peerGone)
      await store
        .finishRun({
          peerId: peer.id,
          syncId,
          status: outcome.status,
          error: outcome.error,
          lagChanges,
          nextSyncInMs,
          previousStatus: peer.previousStatus,
        })
        .catch((error) =>
          logger.error({ err: error, peer: peer.name }, "federation: recording the run failed"),
        );
    const report: RunReport = {
      peerId: peer.id,
      peer: peer.name,
      status: outcome.status,
      ...totals,
      lagChanges,
      error: outcome.error,
      durationMs: Math.round(performance.now() - started),
    };
    const level =
      outcome.status === "failed"
        ? "warn"
        : totals.pages > 1 || totals.added + totals.removed > 0
          ? "info"
          : "debug";
    logger[level](
      { ...report, nextSyncInMs: nextSyncInMs === null ? null : Math.round(nextSyncInMs), cursor },
      outcome.status === "failed"
        ? `federation: sync of ${peer.name} failed`
        : `federation: synced ${peer.name}`,
    );
    hooks.report(report);
  }

  async function loop() {
    while (!stopping) {
      let delay = 1000;
      try {
        const peers = await store.schedule();
        const now = Date.now();
        for (const peer of peers) {
          if (running.has(peer.id)) continue;
          const heldOff = holdOff.get(peer.id) ?? 0;
          if (heldOff > now) {
            delay = Math.min(delay, heldOff - now);
            continue;
          }
          holdOff.delete(peer.id);
          if (peer.nextSyncAt > now) {
            delay = Math.min(delay, peer.nextSyncAt - now);
            continue;
          }
          if (running.size >= config.federation.concurrency) break;
          const run = runPeer(peer.id).finally(() => {
            running.delete(peer.id);
            wake?.();
          });
          running.set(peer.id, run);
        }
      } catch (error) {
        logger.warn({ err: error }, "federation: could not read the peers schedule");
      }
      if (stopping) break;
      // At least a short pause: a peer another instance holds stays "due" until that instance finishes.
      await sleep(Math.max(50, Math.min(1000, delay)));
    }
    await Promise.allSettled(running.values());
  }

  return {
    start() {
      loopDone ??= loop();
    },
    /** Re-reads the schedule now (a peer was added or asked to sync). */
    wake() {
      holdOff.clear();
      wake?.();
    },
    running: () => [...running.keys()],
    /** Runs in progress finish the page they are writing; no new page or run starts. */
    async stop() {
      stopping = true;
      wake?.();
      await loopDone;
    },
    /** One run of one peer now, for tests (same path as the scheduler). */
    runOnce: (peerId: string) => runPeer(peerId),
  };
}

export type SyncEngine = ReturnType<typeof createSyncEngine>;
