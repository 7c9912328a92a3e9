/**
 * Pages written two at a time (Postgres): the sync engine starts writing page N+1 while page N's
 * transaction is still open. These tests hold that overlap open on purpose and check that the copies
 * and the cursor still land exactly once and in feed order, and that an earlier page's failure keeps
 * the later page from committing. On PGlite (one connection) pages must go strictly one by one.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { createLogger } from "../src/infra/logger";
import { createSyncEngine, type RunReport } from "../src/modules/federation/engine";
import type { PreparedPage } from "../src/modules/federation/page";
import { createSyncStore, type SyncStore } from "../src/modules/federation/store";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";
import { cardFor } from "./support/federation";

const AGENTS = 36;
const PAGE = 5;

type ApplyCall = { since: number; startedWhileOpen: number };

/**
 * The real store, instrumented: records how many applies were open when each one started, holds each
 * page's apply open until the next one has started (when the engine overlaps pages at all) so the
 * overlap is certain rather than a matter of timing, and can fail the apply of one page.
 */
function instrumented(inner: SyncStore, failAtCall?: number) {
  const calls: ApplyCall[] = [];
  let open = 0;
  let nextStarted: (() => void) | undefined;
  const store: SyncStore = {
    ...inner,
    pagesInParallel: inner.pagesInParallel,
    async applyPage(peerId, syncId, page: PreparedPage, after) {
      calls.push({ since: page.since, startedWhileOpen: open });
      const index = calls.length;
      nextStarted?.();
      nextStarted = undefined;
      open++;
      try {
        // Wait for the engine to start the next page (it does at once when it overlaps), at most 1 s.
        const followed =
          inner.pagesInParallel && page.hasMore
            ? new Promise<void>((resolve) => {
                nextStarted = resolve;
                setTimeout(resolve, 1000);
              })
            : Promise.resolve();
        if (index === failAtCall) {
          await followed;
          throw new Error(`injected failure writing the page after ${page.since}`);
        }
        const result = inner.applyPage(peerId, syncId, page, after);
        result.catch(() => {}); // awaited below, after the hold
        await followed;
        return await result;
      } finally {
        open--;
      }
    },
  };
  return { store, calls };
}

for (const backend of BACKENDS) {
  describe(`sync pages in flight [${backend}]`, () => {
    let a: TestApp;
    let b: TestApp;
    let bDb: TestDatabase;
    let peerId: string;
    let lastSeqOnA = 0;
    let inner: SyncStore;
    const originIds: string[] = [];

    const peerRow = async () =>
      (
        await b.db.database.rows<{ last_seq: number; agents_synced: number }>(
          sql`select last_seq, agents_synced from peers where id = ${peerId}`,
        )
      )[0]!;
    const copyCounts = async () =>
      b.db.database.rows<{ origin_id: string; n: number }>(
        sql`select origin_id, count(*)::int as n from agents
            where origin_registry = 'pipe-a' and deleted_at is null group by origin_id`,
      );
    const run = async (store: SyncStore) => {
      const reports: RunReport[] = [];
      const engine = createSyncEngine({
        config: b.config,
        store,
        logger: createLogger("silent"),
        instance: "test",
        hooks: {
          changed: (ids) => b.app.services.agents.changedElsewhere(ids),
          report: (report) => reports.push(report),
        },
      });
      await b.db.database.rows(sql`update peers set next_sync_at = now() where id = ${peerId}`);
      await engine.runOnce(peerId);
      return reports[0]!;
    };

    beforeAll(async () => {
      a = await createTestApp(backend, { config: { registryId: "pipe-a" } });
      a.app.listen({ port: 0, hostname: "127.0.0.1" });
      const writer = await a.client(["agents:write"], "a writer");
      for (let i = 0; i < AGENTS; i++) {
        const res = await a.request("/v1/agents", {
          method: "POST",
          json: { card: cardFor(`Pipelined ${i}`), visibility: "public" },
          token: writer.token,
        });
        expect(res.status).toBe(201);
        originIds.push((await json<{ id: string }>(res)).id);
      }
      const [last] = await a.db.database.rows<{ seq: number }>(sql`select max(seq)::int as seq from agents`);
      lastSeqOnA = Number(last!.seq);
      const puller = await a.app.services.auth.createClient({ name: "b puller", scopes: ["agents:read"] });

      bDb = await createTestDatabase(backend);
      b = await createTestApp(backend, { db: bDb, config: { registryId: "pipe-b", databaseUrl: bDb.url } });
      b.config.federation.pageSize = PAGE;
      const admin = await b.client(["admin"], "b admin");
      const added = await b.request("/v1/peers", {
        method: "POST",
        token: admin.token,
        json: {
          name: "registry A",
          baseUrl: `http://127.0.0.1:${a.app.server!.port}`,
          clientId: puller.client_id,
          clientSecret: puller.client_secret,
        },
      });
      expect(added.status).toBe(201);
      peerId = (await json<{ id: string }>(added)).id;
      inner = createSyncStore({ config: b.config, database: b.db.database, lockUrl: b.db.url });
    }, 120_000);

    afterAll(async () => {
      await inner?.close();
      await b?.close();
      await bDb?.drop();
      await a?.close();
    });

    test("a page fails while the next one is being written: the next one does not commit", async () => {
      const { store, calls } = instrumented(inner, 3);
      const report = await run(store);
      expect(report.status).toBe("failed");
      expect(report.error).toContain("injected failure");
      expect(calls[0]!.startedWhileOpen).toBe(0);
      if (backend === "postgres") {
        // Each page was written beside the previous one, the fourth while the third was failing ...
        expect(calls.length).toBe(4);
        expect(calls[1]!.startedWhileOpen).toBe(1);
        expect(calls[2]!.startedWhileOpen).toBe(1);
        expect(calls[3]!.startedWhileOpen).toBe(1);
      } else {
        // ... while PGlite never starts a page before the previous one has ended.
        expect(calls.length).toBe(3);
        for (const call of calls) expect(call.startedWhileOpen).toBe(0);
      }
      // ... and it did not commit: the cursor stands where the failed page starts, and exactly the
      // first two pages' copies exist, once each.
      const row = await peerRow();
      expect(Number(row.last_seq)).toBe(calls[2]!.since);
      const counts = await copyCounts();
      expect(counts.length).toBe(2 * PAGE);
      for (const { n } of counts) expect(n).toBe(1);
      expect(Number(row.agents_synced)).toBe(2 * PAGE);
      expect(report.pages).toBe(2);
      expect(report.added).toBe(2 * PAGE);
    }, 60_000);

    test("the next run resumes there and converges: every agent once, the cursor at A's last change", async () => {
      const { store, calls } = instrumented(inner);
      const report = await run(store);
      expect(report.status).toBe("success");
      expect(report.error).toBeNull();
      const overlapped = calls.filter((call) => call.startedWhileOpen > 0).length;
      if (backend === "postgres") expect(overlapped).toBeGreaterThan(0);
      else expect(overlapped).toBe(0);
      for (const call of calls) expect(call.startedWhileOpen).toBeLessThanOrEqual(1);
      // Pages were started in feed order, each after the cursor the previous one left.
      for (let i = 1; i < calls.length; i++) expect(calls[i]!.since).toBeGreaterThan(calls[i - 1]!.since);
      const counts = await copyCounts();
      expect(counts.map((c) => c.origin_id).sort()).toEqual([...originIds].sort());
      for (const { n } of counts) expect(n).toBe(1);
      const row = await peerRow();
      expect(Number(row.last_seq)).toBe(lastSeqOnA);
      expect(Number(row.agents_synced)).toBe(AGENTS);
      expect(report.added).toBe(AGENTS - 2 * PAGE);
      expect(report.lagChanges).toBe(0);
      // Every copy is readable through the API (caches refreshed page by page).
      const res = await b.request(`/v1/agents?limit=100`);
      const items = (await json<{ items: { source: { federated: boolean } }[] }>(res)).items;
      expect(items.filter((item) => item.source.federated).length).toBe(AGENTS);
    }, 60_000);
  });
}
