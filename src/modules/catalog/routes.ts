import { and, desc, eq, isNull, lt, type SQL } from "drizzle-orm";
import { Elysia } from "elysia";
import type { Config } from "../../config";
import { ProblemSchema } from "../../errors";
import type { Database } from "../../infra/db/client";
import { agents } from "../../infra/db/schema";
import { documentedResponses } from "../../infra/openapi";
import { matchesIfNoneMatch } from "../agents/routes";
import { decodeCursor, encodeCursor } from "../agents/service";
import {
  A2A_CARD_MEDIA_TYPE,
  AI_CATALOG_MEDIA_TYPE,
  AI_CATALOG_SPEC_VERSION,
  AiCatalog,
  type AiCatalogValue,
  CatalogQuery,
  type CatalogEntryValue,
  MAX_CATALOG_PAGE,
} from "./model";

export const AI_CATALOG_PATH = "/.well-known/ai-catalog.json";

/**
 * The catalog shows exactly what an anonymous caller may list, and only this registry's own agents:
 * public, active (deprecated ones are not advertised), not deleted, not federated copies (those belong
 * in their origin registry's catalog).
 */
async function catalogRows(database: Database, afterSeq: number | undefined, limit: number) {
  const conditions: (SQL | undefined)[] = [
    isNull(agents.deletedAt),
    isNull(agents.originRegistry),
    eq(agents.visibility, "public"),
    eq(agents.status, "active"),
  ];
  if (afterSeq !== undefined) conditions.push(lt(agents.seq, afterSeq));
  return database.db
    .select({
      id: agents.id,
      name: agents.name,
      description: agents.description,
      version: agents.latestVersion,
      tags: agents.tags,
      updatedAt: agents.updatedAt,
      seq: agents.seq,
    })
    .from(agents)
    .where(and(...conditions))
    .orderBy(desc(agents.seq))
    .limit(limit);
}

/** GET /.well-known/ai-catalog.json: this registry's public agents as an AI Catalog, one ETag per page. */
export function catalogRoutes(deps: { config: Config; database: Database }) {
  const { config, database } = deps;
  const base = config.registryBaseUrl;

  async function render(cursor: string | undefined, limit: number) {
    const rows = await catalogRows(database, decodeCursor(cursor), limit + 1);
    const page = rows.slice(0, limit);
    // displayName, description and version restate the card's own values. The spec lets a catalog
    // omit them to avoid drift; here both come from the same stored card on every request, so they
    // cannot drift, and a consumer can list agents without fetching every card.
    const entries: CatalogEntryValue[] = page.map((row) => ({
      identifier: `${base}/v1/agents/${row.id}`,
      type: A2A_CARD_MEDIA_TYPE,
      url: `${base}/v1/agents/${row.id}/card`,
      displayName: row.name,
      ...(row.description ? { description: row.description } : {}),
      ...(row.tags.length > 0 ? { tags: row.tags } : {}),
      version: row.version,
      updatedAt: row.updatedAt.toISOString(),
    }));
    const last = page.at(-1);
    const next =
      rows.length > limit && last
        ? `${base}${AI_CATALOG_PATH}?limit=${limit}&cursor=${encodeCursor(last.seq)}`
        : null;
    if (next)
      entries.push({
        identifier: next,
        type: AI_CATALOG_MEDIA_TYPE,
        url: next,
        displayName: `${config.appName}: more agents`,
      });
    const catalog: AiCatalogValue = {
      specVersion: AI_CATALOG_SPEC_VERSION,
      host: { displayName: config.appName, identifier: config.registryId, documentationUrl: `${base}/docs` },
      entries,
    };
    return { body: JSON.stringify(catalog), next };
  }

  return new Elysia({ name: "catalog-routes" }).get(
    AI_CATALOG_PATH,
    async ({ query, request, set }) => {
      const { body, next } = await render(query.cursor, query.limit ?? MAX_CATALOG_PAGE);
      const etag = `"${new Bun.CryptoHasher("sha256").update(body).digest("hex").slice(0, 40)}"`;
      set.headers.etag = etag;
      set.headers["cache-control"] = "public, max-age=60";
      if (next) set.headers.link = `<${next}>; rel="next"`;
      if (matchesIfNoneMatch(request.headers.get("if-none-match"), etag)) {
        set.status = 304;
        return null;
      }
      set.headers["content-type"] = AI_CATALOG_MEDIA_TYPE;
      return body;
    },
    {
      query: CatalogQuery,
      detail: {
        tags: ["well-known"],
        summary:
          "This registry's public agents as an AI Catalog (application/ai-catalog+json), ETag per page",
        description:
          "Entries point at each agent's card (type application/a2a-agent-card+json). Only public, active, " +
          "local agents are listed. A page that is not the last ends with a nested catalog entry (type " +
          'application/ai-catalog+json) for the next page, also given as `Link: <...>; rel="next"`.',
        responses: documentedResponses({
          200: { description: "The AI Catalog", schema: AiCatalog },
          304: { description: "Not modified: the If-None-Match tag is current" },
          400: { description: "Invalid limit or cursor", schema: ProblemSchema },
          429: { description: "Rate limited", schema: ProblemSchema },
        }),
      },
    },
  );
}
