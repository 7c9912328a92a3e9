import { and, desc, eq, lt, type SQL } from "drizzle-orm";
import type { Db } from "../../infra/db/client";
import { auditLog } from "../../infra/db/schema";
import type { AuditFilters } from "./model";

export function auditRepo(db: Db) {
  return {
    list(filters: AuditFilters, beforeId: number | undefined, limit: number) {
      const conditions: (SQL | undefined)[] = [];
      if (beforeId !== undefined) conditions.push(lt(auditLog.id, beforeId));
      if (filters.action) conditions.push(eq(auditLog.action, filters.action));
      if (filters.actor) conditions.push(eq(auditLog.actor, filters.actor));
      return db
        .select()
        .from(auditLog)
        .where(and(...conditions))
        .orderBy(desc(auditLog.id))
        .limit(limit);
    },
  };
}
