/**
 * Federation in the main thread: the change feed, the peers admin, the maintenance pass (tombstone
 * retention), and the supervisor of the sync worker thread (sync.worker.ts) with the metrics it reports.
 *
 * createApp builds this and never starts anything: the boot code (src/index.ts) and the tests that want
 * it call `start()`, and `stop()` on shutdown (the worker finishes the page it is writing, then exits).
 */
import { hostname } from "node:os";
import type { Config } from "../../config";
import { ApiError, type FieldError } from "../../errors";
import type { Audit } from "../../infra/audit";
import type { Database } from "../../infra/db/client";
import type { PeerRow } from "../../infra/db/schema";
import { assertAllowedUrl, OutboundFetchError, type SafeFetchOptions } from "../../infra/http";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { AgentsService, WriteContext } from "../agents/service";
import type { Caller } from "../auth/model";
import type { DependencyCheck } from "../ops/model";
import { encryptSecret } from "./crypto";
import type { RunReport } from "./engine";
import { createChangeFeed } from "./feed";
import { type CallResult, errorToWire, type FromWorker, HEARTBEAT_MS, type ToWorker } from "./messages";
import type { PeerCreateInput, PeerPatchInput, PeerRecordValue } from "./model";
import { FeedFormatError, preparePage } from "./page";
import {
  fetchFeedPage,
  fetchRegistryCard,
  normalizeBaseUrl,
  obtainToken,
  type PeerError,
  type PeerHttpOptions,
} from "./peer-client";
import { peersRepo } from "./repo";
import { createSyncStore, type SyncStore } from "./store";

export type FederationDeps = {
  config: Config;
  database: Database;
  audit: Audit;
  metrics: Metrics;
  logger: Logger;
  agents: AgentsService;
  /** DNS and fetch stubs for tests, as for card fetching. */
  fetchOptions?: Partial<SafeFetchOptions>;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const WORKER_STOP_TIMEOUT_MS = 15_000;
const GAUGE_REFRESH_MS = 5000;

const actorOf = (caller: Caller) => (caller.kind === "client" ? caller.clientId : "anonymous");
const iso = (date: Date | null) => date?.toISOString() ?? null;

function invalid(path: string, message: string): ApiError {
  const errors: FieldError[] = [{ path, message }];
  return new ApiError("VALIDATION_FAILED", message, { errors });
}

function isUniqueViolation(error: unknown) {
  for (let e: unknown = error, depth = 0; e && depth < 5; depth++) {
    if ((e as { code?: unknown }).code === "23505") return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

export function createFederationService(deps: FederationDeps) {
  const { config, database, audit, metrics, logger, agents } = deps;
  const feed = createChangeFeed({ config, database, logger });
  const repo = peersRepo(database);
  const instance = `${hostname()}:${process.pid}`;
  const http: PeerHttpOptions = {
    allowInsecure: config.debug,
    timeoutMs: config.federation.requestTimeoutMs,
    lookup: deps.fetchOptions?.lookup,
    fetchImpl: deps.fetchOptions?.fetchImpl,
  };

  // -------------------------------------------------------------------------------------------------
  // Copies changed by the worker: caches and search catch up, one batch after another, in order.
  // -------------------------------------------------------------------------------------------------
  let refreshChain: Promise<void> = Promise.resolve();
  function copiesChanged(ids: string[]): Promise<void> {
    const run = refreshChain.then(() => agents.changedElsewhere(ids));
    refreshChain = run.catch((error) => logger.warn({ err: error }, "federation: cache refresh failed"));
    return run;
  }

  // -------------------------------------------------------------------------------------------------
  // Peers admin
  // -------------------------------------------------------------------------------------------------
  function peerRecord(row: PeerRow, now = Date.now()): PeerRecordValue {
    return {
      id: row.id,
      name: row.name,
      baseUrl: row.baseUrl,
      registryId: row.registryId,
      clientId: row.clientId,
      enabled: row.enabled,
      intervalSeconds: row.intervalS ?? config.federationIntervalSeconds,
      lastSeq: row.lastSeq,
      lastSyncAt: iso(row.lastSyncAt),
      lastSuccessAt: iso(row.lastSuccessAt),
      lastStatus: row.lastStatus,
      lastError: row.lastError,
      lagChanges: row.lagChanges,
      lagSeconds: row.lastSuccessAt
        ? Math.max(0, Math.round((now - row.lastSuccessAt.getTime()) / 100) / 10)
        : null,
      agentsSynced: row.agentsSynced,
      consecutiveFailures: row.failures,
      nextSyncAt: row.nextSyncAt.toISOString(),
      createdAt: row.createdAt.toISOString(),
    };
  }

  async function findOr404(id: string) {
    const row = UUID.test(id) ? await repo.find(id) : undefined;
    if (!row) throw new ApiError("NOT_FOUND", `No peer ${id}`);
    return row;
  }

  /** A token from the peer for these credentials, as a validation error when it fails. */
  async function checkCredentials(baseUrl: string, clientId: string, clientSecret: string) {
    try {
      return await obtainToken(baseUrl, clientId, clientSecret, http);
    } catch (error) {
      const message = `Peer validation failed: ${(error as Error).message}`;
      throw invalid((error as PeerError).kind === "auth" ? "/clientSecret" : "/baseUrl", message);
    }
  }

  /**
   * Validates a new peer the way the sync will use it: a token from its /oauth/token, its own A2A card
   * at /.well-known/agent-card.json, and one page of its change feed read with that token (which also
   * tells the peer's registry id when it has agents to show).
   */
  async function validatePeer(input: PeerCreateInput) {
    let baseUrl: string;
    try {
      baseUrl = normalizeBaseUrl(input.baseUrl);
      await assertAllowedUrl(baseUrl, http);
    } catch (error) {
      const message = error instanceof OutboundFetchError ? error.message : "not a valid URL";
      throw invalid("/baseUrl", `baseUrl refused: ${message}`);
    }
    if (baseUrl === config.registryBaseUrl) throw invalid("/baseUrl", "baseUrl is this registry itself");
    if (await repo.findByBaseUrl(baseUrl)) throw invalid("/baseUrl", `${baseUrl} is already a peer`);
    const token = await checkCredentials(baseUrl, input.clientId, input.clientSecret);
    let card: Awaited<ReturnType<typeof fetchRegistryCard>>;
    try {
      card = await fetchRegistryCard(baseUrl, http);
    } catch (error) {
      throw invalid("/baseUrl", `Peer validation failed: ${(error as Error).message}`);
    }
    let registryId: string | null = null;
    try {
      const answer = await fetchFeedPage(baseUrl, token.accessToken, 0, 1, http);
      if (answer.kind === "unauthorized")
        throw invalid("/clientId", `Peer validation failed: the peer's feed rejects this client's token`);
      if (answer.kind !== "page")
        throw invalid("/baseUrl", `Peer validation failed: the change feed answered ${answer.kind}`);
      registryId = preparePage(answer.text, 0, config.registryId).registry;
    } catch (error) {
      if (error instanceof ApiError) throw error;
      const reason =
        error instanceof FeedFormatError
          ? `malformed change feed: ${error.message}`
          : (error as Error).message;
      throw invalid(
        (error as PeerError).kind === "auth" ? "/clientId" : "/baseUrl",
        `Peer validation failed: ${reason}`,
      );
    }
    if (registryId !== null) {
      const claimed = await repo.findByRegistryId(registryId);
      if (claimed)
        throw invalid(
          "/baseUrl",
          `registry "${registryId}" is already synced through peer "${claimed.name}"`,
        );
    }
    return { baseUrl, registryId, cardName: card.name };
  }

  async function addPeer(ctx: WriteContext, input: PeerCreateInput) {
    const checked = await validatePeer(input);
    const id = Bun.randomUUIDv7();
    const clientSecretEnc = await encryptSecret(config.secretKey, id, input.clientSecret);
    let row: PeerRow;
    try {
      row = await database.db.transaction(async (tx) => {
        const inserted = await repo.insert(
          {
            id,
            name: input.name,
            baseUrl: checked.baseUrl,
            clientId: input.clientId,
            clientSecretEnc,
            registryId: checked.registryId,
            intervalS: input.intervalSeconds ?? null,
          },
          tx,
        );
        await audit.record(
          {
            actor: actorOf(ctx.caller),
            action: "peer.added",
            target: id,
            outcome: "success",
            ip: ctx.ip,
            requestId: ctx.requestId,
            details: {
              name: input.name,
              baseUrl: checked.baseUrl,
              clientId: input.clientId,
              registryId: checked.registryId,
              peerCardName: checked.cardName,
            },
          },
          tx,
        );
        return inserted;
      });
    } catch (error) {
      if (isUniqueViolation(error))
        throw invalid("/baseUrl", `${checked.baseUrl} (or its registry) is already a peer`);
      throw error;
    }
    wakeWorker();
    return peerRecord(row);
  }

  async function updatePeer(ctx: WriteContext, id: string, input: PeerPatchInput) {
    const current = await findOr404(id);
    const changes: Partial<PeerRow> = {};
    if (input.name !== undefined) changes.name = input.name;
    if (input.intervalSeconds !== undefined) changes.intervalS = input.intervalSeconds;
    if (input.enabled !== undefined && input.enabled !== current.enabled) {
      changes.enabled = input.enabled;
      if (input.enabled) {
        changes.nextSyncAt = new Date();
        changes.failures = 0;
      }
    }
    if (input.clientId !== undefined || input.clientSecret !== undefined) {
      if (input.clientSecret === undefined)
        throw invalid("/clientSecret", "A new clientId needs its clientSecret");
      const clientId = input.clientId ?? current.clientId;
      await checkCredentials(current.baseUrl, clientId, input.clientSecret);
      changes.clientId = clientId;
      changes.clientSecretEnc = await encryptSecret(config.secretKey, id, input.clientSecret);
      changes.nextSyncAt = new Date();
      changes.failures = 0;
    }
    const row = await database.db.transaction(async (tx) => {
      const updated = await repo.update(id, changes, tx);
      if (!updated) throw new ApiError("NOT_FOUND", `No peer ${id}`);
      await audit.record(
        {
          actor: actorOf(ctx.caller),
          action: "peer.updated",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: { fields: Object.keys(input).sort() },
        },
        tx,
      );
      return updated;
    });
    wakeWorker();
    return peerRecord(row);
  }

  /** Removes the peer and retires every copy of its agents (they vanish from lists, search and reads). */
  async function removePeer(ctx: WriteContext, id: string) {
    if (!UUID.test(id)) throw new ApiError("NOT_FOUND", `No peer ${id}`);
    const removed = await database.db.transaction(async (tx) => {
      const row = await repo.lock(id, tx);
      if (!row) throw new ApiError("NOT_FOUND", `No peer ${id}`);
      const copies = row.registryId ? await repo.retireCopies(row.registryId, tx) : [];
      await repo.remove(id, tx);
      await audit.record(
        {
          actor: actorOf(ctx.caller),
          action: "peer.removed",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: {
            name: row.name,
            baseUrl: row.baseUrl,
            registryId: row.registryId,
            copiesRemoved: copies.length,
          },
        },
        tx,
      );
      return { row, copies };
    });
    if (removed.copies.length > 0) await copiesChanged(removed.copies);
    metrics.peerSyncLagSeconds.remove({ peer: removed.row.name });
    metrics.peerSyncLagChanges.remove({ peer: removed.row.name });
    wakeWorker();
  }

  async function requestSync(id: string) {
    const row = await findOr404(id);
    if (!config.enableFederation)
      throw new ApiError("DEPENDENCY_UNAVAILABLE", "The sync worker is off (ENABLE_FEDERATION=false)");
    if (!row.enabled)
      throw invalid("/id", `Peer ${row.name} is disabled; enable it first (PATCH enabled: true)`);
    await repo.makeDue(id);
    wakeWorker();
    return { status: "accepted" as const, peer: id };
  }

  async function syncHistory(id: string, limit: number) {
    await findOr404(id);
    const rows = await repo.syncs(id, limit);
    return {
      items: rows.map((r) => ({
        id: String(r.id),
        startedAt: r.startedAt.toISOString(),
        finishedAt: iso(r.finishedAt),
        status: r.status,
        fromSeq: r.fromSeq,
        toSeq: r.toSeq,
        pages: r.pages,
        added: r.added,
        updated: r.updated,
        removed: r.removed,
        skipped: r.skipped,
        error: r.error,
        instance: r.instance,
      })),
    };
  }

  // -------------------------------------------------------------------------------------------------
  // Metrics
  // -------------------------------------------------------------------------------------------------
  function onReport(report: RunReport) {
    metrics.peerSyncs.inc({ peer: report.peer, status: report.status });
    if (report.lagChanges !== null) metrics.peerSyncLagChanges.set({ peer: report.peer }, report.lagChanges);
    if (report.status === "success") metrics.peerSyncLagSeconds.set({ peer: report.peer }, 0);
  }

  /** Lag gauges from the database, so every instance reports them, whichever one ran the sync. */
  async function refreshGauges() {
    const rows = await repo.list();
    const now = Date.now();
    metrics.peerSyncLagSeconds.reset();
    metrics.peerSyncLagChanges.reset();
    for (const row of rows) {
      if (row.lastSuccessAt)
        metrics.peerSyncLagSeconds.set({ peer: row.name }, (now - row.lastSuccessAt.getTime()) / 1000);
      metrics.peerSyncLagChanges.set({ peer: row.name }, row.lagChanges);
    }
  }

  // -------------------------------------------------------------------------------------------------
  // The worker thread
  // -------------------------------------------------------------------------------------------------
  type WorkerState = "off" | "starting" | "running" | "restarting" | "stopping";
  let state: WorkerState = "off";
  let worker: Worker | undefined;
  let lastBeat = 0;
  let lastFailure: string | null = null;
  let restarts = 0;
  let startedAt = 0;
  let stopped: (() => void) | undefined;
  let relayStore: SyncStore | undefined;
  let restartTimer: ReturnType<typeof setTimeout> | undefined;

  const send = (message: ToWorker) => worker?.postMessage(message);

  function wakeWorker() {
    if (state === "running") send({ type: "wake" });
  }

  async function answerCall(message: Extract<FromWorker, { type: "call" }>) {
    let result: CallResult;
    try {
      let value: unknown;
      if (message.target === "hooks" && message.method === "changed")
        value = await copiesChanged(message.args[0] as string[]);
      else if (message.target === "store" && relayStore) {
        const method = relayStore[message.method as keyof SyncStore] as (
          ...args: unknown[]
        ) => Promise<unknown>;
        if (typeof method !== "function") throw new Error(`unknown store method ${message.method}`);
        value = await method(...message.args);
      } else throw new Error(`unknown call ${message.target}.${message.method}`);
      result = { type: "result", id: message.id, ok: true, value };
    } catch (error) {
      result = { type: "result", id: message.id, ok: false, error: errorToWire(error) };
    }
    send(result);
  }

  function spawn() {
    state = "starting";
    startedAt = Date.now();
    const spawned = new Worker(new URL("./sync.worker.ts", import.meta.url));
    worker = spawned;
    spawned.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      switch (message.type) {
        case "ready":
          state = "running";
          lastBeat = Date.now();
          logger.info({ mode: relayStore ? "relay" : "direct" }, "federation: sync worker started");
          return;
        case "heartbeat":
          lastBeat = Date.now();
          return;
        case "call":
          void answerCall(message);
          return;
        case "report":
          onReport(message.report);
          return;
        case "stopped":
          stopped?.();
          return;
        case "fatal":
          lastFailure = message.error;
          logger.error({ err: message.error }, "federation: sync worker failed");
          spawned.terminate();
          return;
      }
    };
    spawned.addEventListener("error", (event) => {
      lastFailure = (event as ErrorEvent).message ?? "worker error";
      logger.error({ err: lastFailure }, "federation: sync worker crashed");
    });
    spawned.addEventListener("close", () => {
      if (worker !== spawned) return;
      worker = undefined;
      if (state === "stopping" || state === "off") {
        stopped?.();
        return;
      }
      // Died on its own: started again after a backoff that grows while it keeps dying at once.
      state = "restarting";
      if (Date.now() - startedAt > 60_000) restarts = 0;
      const delay = Math.min(30_000, 1000 * 2 ** restarts++);
      logger.error({ restartInMs: delay, lastFailure }, "federation: sync worker exited; restarting");
      restartTimer = setTimeout(spawn, delay);
    });
    send({
      type: "init",
      config,
      mode: relayStore ? "relay" : "direct",
      instance,
    });
  }

  // -------------------------------------------------------------------------------------------------
  // Start / stop
  // -------------------------------------------------------------------------------------------------
  let maintenanceTimer: ReturnType<typeof setInterval> | undefined;
  let gaugeTimer: ReturnType<typeof setInterval> | undefined;
  let maintaining: Promise<unknown> | undefined;

  function runMaintenance() {
    maintaining ??= feed
      .maintain()
      .catch((error) => logger.warn({ err: error }, "federation: maintenance pass failed"))
      .finally(() => {
        maintaining = undefined;
      });
    return maintaining;
  }

  /**
   * Starts the maintenance pass (always: the feed is served whatever ENABLE_FEDERATION says) and, when
   * `worker` is true, the sync worker thread.
   */
  function start(options: { worker: boolean } = { worker: config.enableFederation }) {
    if (!maintenanceTimer) {
      const every = Math.min(300, Math.max(1, config.federationIntervalSeconds)) * 1000;
      maintenanceTimer = setInterval(runMaintenance, every);
      void runMaintenance();
    }
    if (options.worker && state === "off") {
      // Direct when the worker can open the database itself (Postgres by URL); otherwise (embedded
      // PGlite, or a pool handed in without a URL) the main thread runs the store for it.
      const direct = database.kind === "postgres" && config.databaseUrl !== undefined;
      relayStore = direct ? undefined : createSyncStore({ config, database });
      spawn();
      gaugeTimer = setInterval(() => {
        refreshGauges().catch((error) => logger.debug({ err: error }, "federation: gauge refresh failed"));
      }, GAUGE_REFRESH_MS);
    }
  }

  /** Stops the worker between pages (waiting up to 15 s), then the timers. Safe to call twice. */
  async function stop() {
    clearInterval(maintenanceTimer);
    clearInterval(gaugeTimer);
    clearTimeout(restartTimer);
    maintenanceTimer = undefined;
    gaugeTimer = undefined;
    if (worker) {
      const current = worker;
      state = "stopping";
      const done = new Promise<void>((resolve) => {
        stopped = resolve;
      });
      send({ type: "stop" });
      const timedOut = await Promise.race([
        done.then(() => false),
        Bun.sleep(WORKER_STOP_TIMEOUT_MS).then(() => true),
      ]);
      if (timedOut) logger.warn("federation: sync worker did not stop in time; terminating it");
      current.terminate();
      worker = undefined;
    }
    state = "off";
    await maintaining;
    await refreshChain;
    await relayStore?.close();
    relayStore = undefined;
  }

  async function probe(): Promise<DependencyCheck> {
    if (!config.enableFederation) return { status: "disabled", detail: "ENABLE_FEDERATION=false" };
    if (state === "off") return { status: "disabled", detail: "the sync worker is not started" };
    if (state === "starting" || state === "restarting")
      return { status: "degraded", detail: lastFailure ? `restarting after: ${lastFailure}` : "starting" };
    if (state === "stopping") return { status: "degraded", detail: "stopping" };
    const silentMs = Date.now() - lastBeat;
    if (silentMs > HEARTBEAT_MS * 5)
      return {
        status: "down",
        detail: `no heartbeat from the sync worker for ${Math.round(silentMs / 1000)} s`,
      };
    return { status: "ok", latencyMs: 0 };
  }

  return {
    feed,
    changes: (caller: Caller, since: number, limit: number) => feed.page(caller, since, limit),
    list: async () => ({ items: (await repo.list()).map((row) => peerRecord(row)) }),
    get: async (id: string) => peerRecord(await findOr404(id)),
    add: addPeer,
    update: updatePeer,
    remove: removePeer,
    requestSync,
    syncHistory,
    start,
    stop,
    probe,
    runMaintenance,
    workerState: () => state,
  };
}

export type FederationService = ReturnType<typeof createFederationService>;
