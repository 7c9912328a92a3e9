/**
 * Two instances of one registry on one Postgres database, both running the sync worker: each peer is
 * synced by one of them at a time, once per interval (advisory lock plus the shared schedule).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { createTestDatabase, type TestDatabase } from "./support/db";
import {
  addPeer,
  cardFor,
  cleanupAll,
  copiesFrom,
  jsonOf,
  publish,
  type Registry,
  startRegistry,
  until,
} from "./support/federation";

type Run = { startedAt: string; finishedAt: string | null; status: string; instance: string; added: number };

describe.skipIf(!process.env.TEST_DATABASE_URL)("federation: two instances on one database", () => {
  let db: TestDatabase;
  let A: Registry;
  let B1: Registry;
  let B2: Registry;

  beforeAll(async () => {
    db = await createTestDatabase("postgres");
    [A, B1] = await Promise.all([
      startRegistry({ registryId: "reg-a" }),
      startRegistry({ registryId: "reg-b", databaseUrl: db.url! }),
    ]);
    B2 = await startRegistry({ registryId: "reg-b", databaseUrl: db.url! });
  }, 90_000);

  afterAll(async () => {
    await cleanupAll();
    await db?.drop();
  });

  test("a peer is synced exactly once per interval, never by both at once, and copied once", async () => {
    for (let i = 0; i < 5; i++) await publish(A, cardFor("Clustered"));
    for (const b of [B1, B2]) {
      const ready = await jsonOf<{ checks: { federationWorker: { status: string } } }>(
        await fetch(`${b.base}/health/ready`),
      );
      expect(ready.checks.federationWorker.status).toBe("ok");
    }
    const { peer } = await addPeer(B1, A, { intervalSeconds: 2 });
    // Both instances also ask for a sync right away: still one run at a time.
    await Promise.all([B1, B2].map((b) => b.request(`/v1/peers/${peer.id}/sync`, { method: "POST" })));
    await until("the first sync", async () => (await copiesFrom(B2, "reg-a")).length === 5);
    // Let a run asked for by the second "sync now" happen before the measured window opens.
    await Bun.sleep(1500);
    const windowStart = Date.now();
    // More agents while the instances take turns.
    for (let i = 0; i < 3; i++) {
      await Bun.sleep(2000);
      await publish(A, cardFor("Clustered later"));
    }
    await Bun.sleep(Math.max(0, 12_000 - (Date.now() - windowStart)));

    const history = await jsonOf<{ items: Run[] }>(await B2.request(`/v1/peers/${peer.id}/syncs?limit=500`));
    const runs = history.items
      .filter((r) => r.finishedAt !== null)
      .map((r) => ({ ...r, start: Date.parse(r.startedAt), end: Date.parse(r.finishedAt!) }))
      .sort((x, y) => x.start - y.start);
    expect(runs.every((r) => r.status === "success")).toBe(true);
    for (let i = 1; i < runs.length; i++) {
      // Never overlapping; and once the explicit "sync now" requests are served, the next run comes
      // only an interval after the previous one ended.
      expect(runs[i]!.start).toBeGreaterThanOrEqual(runs[i - 1]!.end);
      if (runs[i]!.start >= windowStart)
        expect(runs[i]!.start - runs[i - 1]!.end).toBeGreaterThanOrEqual(1900);
    }
    const inWindow = runs.filter((r) => r.start >= windowStart);
    // 12 s at one sync per 2 s (plus the run's own time): about 5, never the ~10 two instances would make.
    expect(inWindow.length).toBeGreaterThanOrEqual(2);
    expect(inWindow.length).toBeLessThanOrEqual(6);
    console.log(
      `cluster: ${runs.length} runs by ${[...new Set(runs.map((r) => r.instance))].join(", ")}; ${inWindow.length} in 12 s`,
    );

    await until("every agent copied", async () => (await copiesFrom(B1, "reg-a")).length === 8);
    const perOrigin = await db.database.rows<{ n: number }>(
      sql`select count(*)::int as n from agents where origin_registry = 'reg-a' group by origin_id having count(*) > 1`,
    );
    expect(perOrigin).toEqual([]);
    // Each agent was added once, whichever instance's run (finished or still going) added it.
    const all = await jsonOf<{ items: Run[] }>(await B1.request(`/v1/peers/${peer.id}/syncs?limit=500`));
    expect(all.items.reduce((sum, r) => sum + r.added, 0)).toBe(8);
  }, 90_000);
});
