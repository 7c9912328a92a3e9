/**
 * The sync engine's reading order, with a peer and a store of its own (no database, no server): the
 * next page is asked for as soon as a page's envelope is read, before its records are checked and
 * prepared, so the peer renders the next page while this registry prepares the current one.
 */
import { describe, expect, test } from "bun:test";
import { testConfig } from "../src/config";
import { createLogger } from "../src/infra/logger";
import { createSyncEngine, type RunReport } from "../src/modules/federation/engine";
import type { StorePage, SyncStore } from "../src/modules/federation/store";
import { cardFor } from "./support/federation";

const PEER = "http://127.0.0.1:9";

function record(id: string, registry: string) {
  return {
    id,
    visibility: "public",
    status: "active",
    statusMessage: null,
    source: { registry, originId: id, federated: false },
    card: cardFor(`Engine ${id}`),
  };
}

/** A peer serving `pages` (by since) through the engine's fetch hook; it logs what was asked for. */
function peer(pages: Map<number, object>) {
  const asked: number[] = [];
  const fetchImpl = async (url: string) => {
    const u = new URL(url);
    if (u.pathname === "/oauth/token") return Response.json({ access_token: "t", expires_in: 300 });
    const since = Number(u.searchParams.get("since"));
    asked.push(since);
    const page = pages.get(since);
    return page ? Response.json(page) : new Response("no such page", { status: 500 });
  };
  return { asked, fetchImpl };
}

/** A store in memory: one peer, always due; it records the pages applied and how the run ended. */
function memoryStore() {
  const applied: StorePage[] = [];
  const finished: string[] = [];
  const store: SyncStore = {
    schedule: async () => [],
    tryLock: async () => true,
    unlock: async () => {},
    beginRun: async () => ({
      syncId: 1,
      peer: {
        id: "p",
        name: "p",
        baseUrl: PEER,
        clientId: "c",
        clientSecret: "s",
        registryId: "engine-a",
        lastSeq: 0,
        resnapshotFrom: null,
        intervalSeconds: 1,
        failures: 0,
        previousStatus: "never",
      },
    }),
    startResnapshot: async () => {},
    applyPage: async (_peerId, _syncId, page) => {
      applied.push(page);
      return { added: page.upserts.length, updated: 0, removed: 0, changedIds: [] };
    },
    pagesInParallel: false,
    finishRun: async (input) => {
      finished.push(input.status);
    },
    close: async () => {},
  };
  return { store, applied, finished };
}

async function runOnce(pages: Map<number, object>) {
  const { asked, fetchImpl } = peer(pages);
  const { store, applied, finished } = memoryStore();
  const reports: RunReport[] = [];
  const engine = createSyncEngine({
    config: testConfig({ registryId: "engine-b" }),
    store,
    logger: createLogger("silent"),
    instance: "test",
    hooks: { changed: async () => {}, report: (report) => reports.push(report) },
    http: { allowInsecure: true, fetchImpl },
  });
  await engine.runOnce("p");
  return { asked, applied, finished, report: reports[0]! };
}

/** Two feed pages of one upsert each; the first page's record names `firstOrigin` as its registry. */
function twoPages(firstOrigin: string) {
  return new Map<number, object>([
    [
      0,
      {
        changes: [{ seq: 1, op: "upsert", id: "a", agent: record("a", firstOrigin) }],
        nextSince: 1,
        hasMore: true,
      },
    ],
    [
      1,
      {
        changes: [{ seq: 2, op: "upsert", id: "b", agent: record("b", "engine-a") }],
        nextSince: 2,
        hasMore: false,
      },
    ],
  ]);
}

describe("sync engine reading order", () => {
  test("pages are read in cursor order and each applied once", async () => {
    const pages = twoPages("engine-a");
    const { asked, applied, report } = await runOnce(pages);
    expect(report.status).toBe("success");
    expect(asked).toEqual([0, 1]);
    expect(applied.map((p) => p.upserts.map((u) => u.originId))).toEqual([["a"], ["b"]]);
  });

  test("the next page is asked for before this page's records are checked; a bad record still fails the run", async () => {
    // Page 1's envelope is fine, its record is not (it claims to come from this very registry).
    const pages = twoPages("engine-b");
    const { asked, applied, finished, report } = await runOnce(pages);
    expect(report.status).toBe("failed");
    expect(report.error).toContain("malformed feed page");
    expect(report.error).toContain("this registry's own id");
    expect(finished).toEqual(["failed"]);
    // Page 2 was requested while page 1 was being prepared, and dropped with it: nothing applied.
    expect(asked).toEqual([0, 1]);
    expect(applied).toEqual([]);
  });

  test("a page whose envelope is malformed fails the run before anything else is asked for", async () => {
    const pages = new Map<number, object>([[0, { changes: [], nextSince: 0, hasMore: true }]]);
    const { asked, applied, report } = await runOnce(pages);
    expect(report.status).toBe("failed");
    expect(report.error).toContain("cursor did not move");
    expect(asked).toEqual([0]);
    expect(applied).toEqual([]);
  });
});
