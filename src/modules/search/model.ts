import { t } from "elysia";
import { AgentRecord, attributeFilters } from "../agents/model";

export const SearchQuery = t.Object({
  q: t.Optional(
    t.String({
      maxLength: 256,
      description:
        "Full-text query: names weigh most, then skills and tags, then descriptions; names match despite typos. Empty lists everything the filters select, newest first.",
    }),
  ),
  ...attributeFilters,
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20 })),
  cursor: t.Optional(
    t.String({ maxLength: 300, description: "Opaque cursor from a previous page's nextCursor" }),
  ),
  consistent: t.Optional(
    t.Boolean({ description: "Read-your-writes: wait until every acknowledged write is searchable" }),
  ),
  facets: t.Optional(
    t.Boolean({
      default: true,
      description: "false skips facet counts (and returns them empty), e.g. when loading a further page",
    }),
  ),
});
export type SearchInput = typeof SearchQuery.static;

/** The filters every backend applies, inside its query, next to visibility. */
export type SearchFilters = Pick<
  SearchInput,
  "skill" | "tag" | "inputMode" | "outputMode" | "streaming" | "provider" | "status" | "health" | "signature"
>;

const FacetValues = t.Array(t.Object({ value: t.String(), count: t.Integer({ minimum: 0 }) }));

export const Facets = t.Object({
  tags: FacetValues,
  skills: FacetValues,
  providers: FacetValues,
  inputModes: FacetValues,
  outputModes: FacetValues,
});
export type FacetCounts = typeof Facets.static;

export const SearchResponse = t.Object(
  {
    items: t.Array(t.Object({ agent: AgentRecord, score: t.Number() })),
    total: t.Integer({ minimum: 0, description: "Matches visible to the caller, over all pages" }),
    totalIsEstimate: t.Boolean({
      description:
        "true when the query matched more agents than the backend counts exactly (500 on Postgres): total is then an estimate, and facet counts are counted over a sample of the matches and scaled to it",
    }),
    facets: Facets,
    nextCursor: t.Union([t.String(), t.Null()]),
  },
  { title: "SearchResults" },
);

export const FACET_NAMES = ["tags", "skills", "providers", "inputModes", "outputModes"] as const;

export const emptyFacets = (): FacetCounts => ({
  tags: [],
  skills: [],
  providers: [],
  inputModes: [],
  outputModes: [],
});
