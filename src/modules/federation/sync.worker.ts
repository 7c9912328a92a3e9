/**
 * The federation sync worker thread, started by the main thread (service.ts) when ENABLE_FEDERATION
 * is true. It owns the schedule and the network side of every sync: tokens, feed pages, and parsing,
 * checking and analysing what peers send (the CPU-heavy part), so none of it runs on the thread that
 * serves HTTP.
 *
 * Database work: on Postgres (DATABASE_URL) this thread opens its own small pool plus one dedicated
 * connection for the per-peer advisory locks, and applies pages itself ("direct"). Embedded PGlite
 * can be opened by one thread only, so there every store call is sent to the main thread, which runs
 * the same store over its own PGlite ("relay"). Either way it tells the main thread which copies a
 * page changed, so caches and the search index catch up, and reports each run for the metrics.
 */
/// <reference lib="webworker" />
import { openDatabase, type Database } from "../../infra/db/client";
import { createLogger } from "../../infra/logger";
import { createSyncEngine, type SyncEngine } from "./engine";
import { createCaller, errorToWire, type FromWorker, HEARTBEAT_MS, type ToWorker } from "./messages";
import type { PreparedPage } from "./page";
import { createSyncStore, packPage, type SyncStore } from "./store";

declare const self: Worker;

const post = (message: FromWorker) => self.postMessage(message);
const caller = createCaller(post);

let engine: SyncEngine | undefined;
let store: SyncStore | undefined;
let database: Database | undefined;
let heartbeat: ReturnType<typeof setInterval> | undefined;
let stopping: Promise<void> | undefined;

/** The store in the main thread, reached through messages (embedded PGlite). */
function relayStore(): SyncStore {
  const call =
    <T>(method: keyof SyncStore) =>
    (...args: unknown[]) =>
      caller.call<T>("store", method, args);
  return {
    schedule: call("schedule"),
    tryLock: call("tryLock"),
    unlock: call("unlock"),
    beginRun: call("beginRun"),
    startResnapshot: call("startResnapshot"),
    // The main thread's PGlite runs one transaction at a time: pages are applied one after another.
    // Packed here, so that thread (which also serves HTTP) is left only the statement to run.
    applyPage: (peerId: string, syncId: number, page: PreparedPage) =>
      caller.call("store", "applyPage", [peerId, syncId, packPage(page)]),
    pagesInParallel: false,
    finishRun: call("finishRun"),
    close: async () => {},
  } as SyncStore;
}

async function init(message: Extract<ToWorker, { type: "init" }>) {
  const { config, mode, instance } = message;
  const logger = createLogger(config.logLevel, { name: "a2a-registry-federation" });
  if (mode === "direct") {
    if (!config.databaseUrl) throw new Error("direct mode needs DATABASE_URL");
    database = await openDatabase({
      url: config.databaseUrl,
      dataDir: config.dataDir,
      // Two connections per peer run (a page written while the previous one commits), plus spare.
      poolMax: config.federation.concurrency * 2 + 2,
    });
    store = createSyncStore({ config, database, lockUrl: config.databaseUrl });
  } else {
    store = relayStore();
  }
  engine = createSyncEngine({
    config,
    store,
    logger,
    instance,
    hooks: {
      changed: (ids) => caller.call<void>("hooks", "changed", [ids]),
      report: (report) => post({ type: "report", report }),
    },
  });
  engine.start();
  heartbeat = setInterval(() => post({ type: "heartbeat", running: engine?.running() ?? [] }), HEARTBEAT_MS);
  post({ type: "ready" });
}

async function stop() {
  clearInterval(heartbeat);
  await engine?.stop();
  await store?.close();
  await database?.close();
  post({ type: "stopped" });
}

self.onmessage = (event: MessageEvent<ToWorker>) => {
  const message = event.data;
  switch (message.type) {
    case "init":
      init(message).catch((error) => {
        post({ type: "fatal", error: errorToWire(error).message });
      });
      return;
    case "wake":
      engine?.wake();
      return;
    case "stop":
      if (stopping) return;
      stopping = stop().catch((error) => {
        post({ type: "fatal", error: errorToWire(error).message });
      });
      return;
    case "result":
      caller.settle(message);
      return;
  }
};
