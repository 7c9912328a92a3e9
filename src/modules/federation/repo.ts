import { and, desc, eq, isNull, sql } from "drizzle-orm";
import type { Database, Executor } from "../../infra/db/client";
import { agents, type PeerRow, peerSyncs, peers } from "../../infra/db/schema";
import { RETIRED } from "./store";

/** Peers as the admin routes read and change them (the sync engine has its own store, store.ts). */
export function peersRepo(database: Database) {
  const { db } = database;
  return {
    list() {
      return db.select().from(peers).orderBy(peers.createdAt, peers.id);
    },
    async find(id: string, executor: Executor = db): Promise<PeerRow | undefined> {
      const rows = await executor.select().from(peers).where(eq(peers.id, id)).limit(1);
      return rows[0];
    },
    async findByBaseUrl(baseUrl: string) {
      const rows = await db.select({ id: peers.id }).from(peers).where(eq(peers.baseUrl, baseUrl)).limit(1);
      return rows[0];
    },
    async findByRegistryId(registryId: string) {
      const rows = await db
        .select({ id: peers.id, name: peers.name })
        .from(peers)
        .where(eq(peers.registryId, registryId))
        .limit(1);
      return rows[0];
    },
    async insert(values: typeof peers.$inferInsert, executor: Executor) {
      const rows = await executor.insert(peers).values(values).returning();
      return rows[0]!;
    },
    async update(id: string, values: Partial<typeof peers.$inferInsert>, executor: Executor) {
      const rows = await executor.update(peers).set(values).where(eq(peers.id, id)).returning();
      return rows[0];
    },
    /** Locks the peer row: a page being applied for it waits, or finds it gone. */
    async lock(id: string, executor: Executor) {
      const rows = await executor.select().from(peers).where(eq(peers.id, id)).for("update");
      return rows[0];
    },
    async remove(id: string, executor: Executor) {
      await executor.delete(peers).where(eq(peers.id, id));
    },
    /** Retires every live copy from `registryId` (tombstones, like any delete); returns their ids. */
    async retireCopies(registryId: string, executor: Executor) {
      const rows = await executor
        .update(agents)
        .set(RETIRED as never)
        .where(and(eq(agents.originRegistry, registryId), isNull(agents.deletedAt)))
        .returning({ id: agents.id });
      return rows.map((r) => r.id);
    },
    syncs(peerId: string, limit: number) {
      return db
        .select()
        .from(peerSyncs)
        .where(eq(peerSyncs.peerId, peerId))
        .orderBy(desc(peerSyncs.id))
        .limit(limit);
    },
    /** Due at once (POST /v1/peers/:id/sync); whichever instance's worker looks next runs it. */
    async makeDue(id: string) {
      const rows = await db
        .update(peers)
        .set({ nextSyncAt: sql`now()` })
        .where(eq(peers.id, id))
        .returning({ id: peers.id });
      return rows.length > 0;
    },
  };
}

export type PeersRepo = ReturnType<typeof peersRepo>;
