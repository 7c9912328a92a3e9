/**
 * Request and response shapes of the older Python registry (A2AReg, FastAPI) this registry descends
 * from, as its server code and SDK define them (app/api/agents.py, app/api/search.py,
 * app/schemas/agent.py: PublishResponse, AgentInfoResponse, SearchBody):
 *
 * - POST /agents/publish     {card, public} | {cardUrl, public}  -> {agentId, version, protocolVersion, public, signatureValid}
 * - GET  /agents/public      ?top (1-100, 20) &skip (>= 0)       -> {items:[{id, name, ...}], count, next}
 * - GET  /agents/:id                                              -> {agentId, name, description, publisherId, version,
 *                                                                     protocolVersion, capabilities, skills}
 * - GET  /agents/:id/card                                         -> the card
 * - POST /agents/search      {q, filters, top, skip}             -> {items, count}
 *
 * Where that registry left something undefined or inconsistent, the choice made here is documented on
 * the schema (and so in /docs under the `compat` tag).
 */
import { t } from "elysia";

/** Deepest page GET /agents/public serves (skip + top), answered from one query. */
export const MAX_PUBLIC_WINDOW = 10_100;
/** Deepest result POST /agents/search serves (skip + top): each 100 results deeper is one more query. */
export const MAX_SEARCH_WINDOW = 1_000;

export const CompatPublishBody = t.Object(
  {
    card: t.Optional(
      t.Unknown({ description: "The Agent Card (A2A 1.0, 0.3.x or legacy 0.2.x), stored verbatim" }),
    ),
    cardUrl: t.Optional(
      t.String({
        minLength: 1,
        maxLength: 2048,
        description: "https URL the registry fetches the card from",
      }),
    ),
    public: t.Optional(
      t.Boolean({
        default: true,
        description: "false publishes it private (visibility: private); default true",
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      "Exactly one of card or cardUrl. Re-publishing an inline card whose url is already live under the same " +
      "owner is idempotent like the older registry: the same card answers 200 with the existing agent, a " +
      "changed card becomes a new version (PUT /v1/agents/{id}); another owner's url is 409 AGENT_EXISTS.",
  },
);
export type CompatPublishInput = typeof CompatPublishBody.static;

export const CompatPublishResult = t.Object(
  {
    agentId: t.String({ description: "The agent's id here (the same id as /v1/agents/{id})" }),
    version: t.String(),
    protocolVersion: t.String({
      description: "The card's A2A protocol version; legacy cards without one report their generation, 0.2",
    }),
    public: t.Boolean(),
    signatureValid: t.Boolean({
      description: "true when the card carries signatures and every one verified",
    }),
  },
  { title: "CompatPublishResult" },
);
export type CompatPublishResultValue = typeof CompatPublishResult.static;

export const CompatPageQuery = t.Object({
  top: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: "Page size" })),
  skip: t.Optional(
    t.Integer({
      minimum: 0,
      maximum: MAX_PUBLIC_WINDOW - 100,
      default: 0,
      description: "Agents to skip (offset); pages go at most 10,000 deep",
    }),
  ),
});

export const CompatPublicItem = t.Object({
  id: t.String(),
  name: t.String(),
  description: t.String(),
  url: t.String({ description: "The agent's primary interface url" }),
});

export const CompatPublicList = t.Object(
  {
    items: t.Array(CompatPublicItem),
    count: t.Integer({
      description:
        "Public active agents in all (the older registry put the page length here; a total is what paging needs)",
    }),
    next: t.Union([t.String(), t.Null()], {
      description: "Relative URL of the next page (/agents/public?skip=..&top=..), null on the last page",
    }),
  },
  { title: "CompatPublicList" },
);

const Capabilities = t.Record(t.String(), t.Unknown(), { description: "The card's capabilities, verbatim" });
const Skills = t.Array(t.Unknown(), { description: "The card's skills, verbatim" });

export const CompatAgentInfo = t.Object(
  {
    agentId: t.String(),
    name: t.String(),
    description: t.String(),
    publisherId: t.String({
      description: "The client that published the agent (for a federated copy: the registry it comes from)",
    }),
    version: t.String(),
    protocolVersion: t.String(),
    capabilities: Capabilities,
    skills: Skills,
  },
  { title: "CompatAgentInfo" },
);
export type CompatAgentInfoValue = typeof CompatAgentInfo.static;

export const CompatSearchFilters = t.Object(
  {
    skill: t.Optional(t.String({ minLength: 1, maxLength: 200, description: "Skill id or name" })),
    tag: t.Optional(t.String({ minLength: 1, maxLength: 200 })),
    inputMode: t.Optional(t.String({ minLength: 1, maxLength: 200 })),
    outputMode: t.Optional(t.String({ minLength: 1, maxLength: 200 })),
    provider: t.Optional(t.String({ minLength: 1, maxLength: 200 })),
    streaming: t.Optional(t.Boolean()),
    status: t.Optional(t.Union([t.Literal("active"), t.Literal("deprecated")])),
    health: t.Optional(t.Union([t.Literal("unknown"), t.Literal("up"), t.Literal("down")])),
    signature: t.Optional(t.Union([t.Literal("none"), t.Literal("valid"), t.Literal("invalid")])),
    capabilities: t.Optional(
      t.Array(t.Literal("streaming"), {
        maxItems: 1,
        description:
          'Capabilities the agent must have (older registry filter); only "streaming" is indexed here',
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      "The filters of GET /v1/search. The older registry's protocolVersion and publisherId filters are not " +
      "indexed here and are refused (400) rather than ignored.",
  },
);

export const CompatSearchBody = t.Object(
  {
    q: t.Optional(t.String({ maxLength: 256, description: "Full-text query (as GET /v1/search q)" })),
    filters: t.Optional(CompatSearchFilters),
    // No schema defaults here: they would hide the SDK's limit/page aliases below.
    top: t.Optional(t.Integer({ minimum: 1, maximum: 100, description: "Page size (default 20)" })),
    skip: t.Optional(
      t.Integer({ minimum: 0, maximum: MAX_SEARCH_WINDOW - 1, description: "Results to skip (default 0)" }),
    ),
    // What the older registry's Python SDK (A2AClient.search_agents) sends to the same route.
    query: t.Optional(t.String({ maxLength: 256, description: "Alias of q (sent by the older Python SDK)" })),
    limit: t.Optional(
      t.Integer({ minimum: 1, maximum: 100, description: "Alias of top (older Python SDK)" }),
    ),
    page: t.Optional(
      t.Integer({
        minimum: 1,
        maximum: MAX_SEARCH_WINDOW,
        description: "1-based page of `limit` (older SDK)",
      }),
    ),
    semantic: t.Optional(t.Boolean({ description: "Accepted and ignored (older Python SDK)" })),
  },
  {
    additionalProperties: false,
    description: `Relevance-ranked like GET /v1/search, under the same visibility rules; skip + top at most ${MAX_SEARCH_WINDOW}.`,
  },
);
export type CompatSearchInput = typeof CompatSearchBody.static;

export const CompatSearchItem = t.Object({
  agentId: t.String(),
  name: t.String(),
  description: t.String(),
  url: t.String(),
  publisherId: t.String(),
  version: t.String(),
  protocolVersion: t.String(),
  capabilities: Capabilities,
  skills: Skills,
  public: t.Boolean(),
});

export const CompatSearchResult = t.Object(
  {
    items: t.Array(CompatSearchItem),
    count: t.Integer({ description: "Matches visible to the caller, over all pages" }),
  },
  { title: "CompatSearchResult" },
);

export const CompatIdParams = t.Object({ id: t.String({ maxLength: 200 }) });
