import { and, eq, isNull } from "drizzle-orm";
import type { Database } from "../../infra/db/client";
import { agents } from "../../infra/db/schema";

/** What a re-publish or an import needs to know about the live local agent holding a url. */
export type LiveLocalAgent = {
  id: string;
  url: string;
  owner: string | null;
  cardHash: string;
  version: string;
  visibility: "public" | "private";
  status: "active" | "deprecated" | "deleted";
};

const columns = {
  id: agents.id,
  url: agents.url,
  owner: agents.owner,
  cardHash: agents.cardHash,
  version: agents.latestVersion,
  visibility: agents.visibility,
  status: agents.status,
};

const liveLocal = and(isNull(agents.deletedAt), isNull(agents.originRegistry));

/**
 * Read-only lookups by url over live local agents (the rows the url-uniqueness rule covers). They
 * decide whether a write is needed at all; every write still goes through the agents service.
 */
export function compatRepo(database: Database) {
  const { db } = database;
  return {
    async findLiveLocalByUrl(url: string): Promise<LiveLocalAgent | undefined> {
      const rows = await db
        .select(columns)
        .from(agents)
        .where(and(liveLocal, eq(agents.url, url)))
        .limit(1);
      return rows[0];
    },
    /** Every live local agent by url, for a bulk import to compare against in memory. */
    async liveLocalByUrl(): Promise<Map<string, LiveLocalAgent>> {
      const rows = await db.select(columns).from(agents).where(liveLocal);
      return new Map(rows.map((row) => [row.url, row]));
    },
  };
}
