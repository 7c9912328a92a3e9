import { asc, eq } from "drizzle-orm";
import type { Db, Executor } from "../../infra/db/client";
import { clients } from "../../infra/db/schema";

export function clientsRepo(db: Db) {
  return {
    findByClientId(clientId: string, executor: Executor = db) {
      return executor
        .select()
        .from(clients)
        .where(eq(clients.clientId, clientId))
        .limit(1)
        .then((rows) => rows[0]);
    },
    /** The minimum a bearer check needs, on the hot path of every authenticated request. */
    stateOf(clientId: string) {
      return db
        .select({ disabled: clients.disabled })
        .from(clients)
        .where(eq(clients.clientId, clientId))
        .limit(1)
        .then((rows) => rows[0]);
    },
    insert(row: typeof clients.$inferInsert, executor: Executor = db) {
      return executor.insert(clients).values(row).returning();
    },
    list() {
      return db.select().from(clients).orderBy(asc(clients.createdAt), asc(clients.clientId));
    },
    disable(clientId: string, executor: Executor = db) {
      return executor
        .update(clients)
        .set({ disabled: true, disabledAt: new Date() })
        .where(eq(clients.clientId, clientId))
        .returning({ clientId: clients.clientId });
    },
    upsertBootstrap(row: typeof clients.$inferInsert) {
      return db
        .insert(clients)
        .values(row)
        .onConflictDoUpdate({
          target: clients.clientId,
          set: { secretHash: row.secretHash, scopes: row.scopes, disabled: false, disabledAt: null },
        });
    },
  };
}

export type ClientsRepo = ReturnType<typeof clientsRepo>;
