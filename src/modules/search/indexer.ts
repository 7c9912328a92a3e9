import type { Database, Executor } from "../../infra/db/client";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { SearchBackend } from "../../infra/search/types";
import { searchRepo } from "./repo";

const DRAIN_BATCH = 500;
const MAX_BACKOFF_SECONDS = 300;

export type IndexerDeps = {
  database: Database;
  backend: SearchBackend;
  metrics: Metrics;
  logger: Logger;
  /** How often the outbox is drained in the background (and its size published). */
  drainIntervalMs?: number;
};

/**
 * Keeps an external search index (Elasticsearch) in step with Postgres. Each write queues its agent in
 * the `search_outbox` table inside the writing transaction, then, after commit, indexes it in the same
 * request and clears the entry. If the index is unreachable the write has still succeeded and the entry
 * stays; a background loop retries with backoff until it lands. Nothing is lost to a crash between
 * commit and indexing either, because the entry committed with the change. The Postgres backend needs
 * none of this (its index is the row), so every method is a no-op there.
 */
export function createSearchIndexer(deps: IndexerDeps) {
  const { database, backend, metrics, logger } = deps;
  const repo = searchRepo(database);
  const external = backend.name !== "postgres";
  let timer: ReturnType<typeof setInterval> | undefined;
  let draining: Promise<number> | undefined;
  /** Set by stop(): a drain in progress finishes its batch and leaves the rest for the next start. */
  let stopping = false;
  let lastError: string | null = null;
  // After a failure, writes stop waiting on the index for a while: each would pay the timeout, and the
  // outbox loop is already retrying.
  let inlinePausedUntil = 0;
  const INLINE_PAUSE_MS = 5000;

  async function indexNow(ids: string[]): Promise<void> {
    const changes = await repo.changesFor(ids);
    await backend.index(changes);
    await repo.settle(changes.map((change) => ({ id: change.id, seq: change.row?.seq ?? 0 })));
  }

  async function drainOnce(): Promise<number> {
    let indexed = 0;
    while (!stopping) {
      const due = await repo.due(DRAIN_BATCH);
      if (due.length === 0) break;
      const ids = due.map((entry) => entry.agentId);
      try {
        await indexNow(ids);
        indexed += ids.length;
        lastError = null;
        inlinePausedUntil = 0;
      } catch (error) {
        lastError = (error as Error).message;
        const attempts = Math.max(...due.map((entry) => entry.attempts)) + 1;
        const delay = Math.min(MAX_BACKOFF_SECONDS, 2 ** attempts) * (0.75 + Math.random() * 0.5);
        await repo.postpone(ids, lastError, delay);
        logger.warn(
          { err: lastError, entries: ids.length, retryInSeconds: Math.round(delay) },
          "search outbox drain failed",
        );
        break;
      }
      if (due.length < DRAIN_BATCH) break;
    }
    metrics.searchOutboxPending.set(await repo.pending());
    return indexed;
  }

  return {
    external,

    /** Inside the writing transaction: queue the agents for the external index. */
    async enqueue(ids: string[], executor: Executor): Promise<void> {
      if (external) await repo.enqueue(ids, executor);
    },

    /** After commit, in the request path: index now; on failure the queued entries wait for the loop. */
    async changed(ids: string[]): Promise<void> {
      if (!external || ids.length === 0 || performance.now() < inlinePausedUntil) return;
      try {
        await indexNow(ids);
      } catch (error) {
        lastError = (error as Error).message;
        inlinePausedUntil = performance.now() + INLINE_PAUSE_MS;
        metrics.searchOutboxPending.set(await repo.pending().catch(() => 0));
        logger.warn({ err: lastError, ids }, "search index update deferred to the outbox");
      }
    },

    /** Drains whatever is due now; concurrent callers share one pass. */
    drain(): Promise<number> {
      if (!external) return Promise.resolve(0);
      draining ??= drainOnce().finally(() => {
        draining = undefined;
      });
      return draining;
    },

    pending: () => (external ? repo.pending() : Promise.resolve(0)),
    lastError: () => lastError,

    start() {
      stopping = false;
      if (!external || timer) return;
      timer = setInterval(() => {
        this.drain().catch((error) => logger.warn({ err: error }, "search outbox drain crashed"));
      }, deps.drainIntervalMs ?? 1000);
      timer.unref?.();
    },

    async stop() {
      stopping = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      await draining?.catch(() => undefined);
    },
  };
}

export type SearchIndexer = ReturnType<typeof createSearchIndexer>;
