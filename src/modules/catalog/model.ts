/**
 * The AI Catalog document (`application/ai-catalog+json`), after the draft specification of the AI
 * Catalog effort that the A2A and MCP working groups defer registry discovery to
 * (https://github.com/Agent-Card/ai-catalog, specification/ai-catalog.md, specVersion "1.0"):
 *
 *   {specVersion, host: {displayName, identifier?, documentationUrl?},
 *    entries: [{identifier, type, url | data, displayName?, description?, tags?, version?, updatedAt?}]}
 *
 * The spec defines no paging; it partitions large catalogs into nested catalogs. So a page that is not
 * the last ends with one entry of type `application/ai-catalog+json` whose url is the next page (and
 * the response carries `Link: <next>; rel="next"`).
 */
import { t } from "elysia";

export const AI_CATALOG_SPEC_VERSION = "1.0";
export const AI_CATALOG_MEDIA_TYPE = "application/ai-catalog+json";
export const A2A_CARD_MEDIA_TYPE = "application/a2a-agent-card+json";
/** Entries per page at most (and by default): the whole catalog of most registries in one document. */
export const MAX_CATALOG_PAGE = 1000;

export const CatalogQuery = t.Object({
  limit: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: MAX_CATALOG_PAGE,
      default: MAX_CATALOG_PAGE,
      description: "Agents per page",
    }),
  ),
  cursor: t.Optional(
    t.String({ maxLength: 200, description: "Where the page starts (from the previous page's last entry)" }),
  ),
});

export const CatalogEntry = t.Object({
  identifier: t.String({
    description:
      "This registry's URL for the agent record: stable, under the operator's control (the registry is " +
      "the catalog operator, not the agent's publisher, so it does not mint urn:air identifiers)",
  }),
  type: t.String({ description: `${A2A_CARD_MEDIA_TYPE}, or ${AI_CATALOG_MEDIA_TYPE} for the next page` }),
  url: t.String({ description: "Where the card is served byte for byte (GET /v1/agents/{id}/card)" }),
  displayName: t.Optional(t.String()),
  description: t.Optional(t.String()),
  tags: t.Optional(t.Array(t.String())),
  version: t.Optional(t.String()),
  updatedAt: t.Optional(t.String({ format: "date-time" })),
});

export const AiCatalog = t.Object(
  {
    specVersion: t.String(),
    host: t.Object({
      displayName: t.String(),
      identifier: t.Optional(t.String()),
      documentationUrl: t.Optional(t.String()),
    }),
    entries: t.Array(CatalogEntry),
  },
  { title: "AiCatalog" },
);
export type AiCatalogValue = typeof AiCatalog.static;
export type CatalogEntryValue = typeof CatalogEntry.static;
