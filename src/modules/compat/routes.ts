import { Elysia } from "elysia";
import type { Config } from "../../config";
import { ApiError, ProblemSchema } from "../../errors";
import type { Database } from "../../infra/db/client";
import { documentedResponses } from "../../infra/openapi";
import type { RequestContext } from "../../infra/web";
import { analyzeCard, cardHash } from "../agents/card";
import type { AgentRecordValue } from "../agents/model";
import { topLevelMemberText } from "../agents/raw-json";
import { cacheControlFor, matchesIfNoneMatch } from "../agents/routes";
import type { AgentsService, SerializedAgent } from "../agents/service";
import type { AuthGuard } from "../auth/guard";
import type { Caller } from "../auth/model";
import type { SearchInput } from "../search/model";
import type { SearchService } from "../search/service";
import {
  type CompatAgentInfoValue,
  CompatAgentInfo,
  CompatIdParams,
  CompatPageQuery,
  CompatPublicList,
  CompatPublishBody,
  type CompatPublishResultValue,
  CompatPublishResult,
  CompatSearchBody,
  CompatSearchResult,
  MAX_SEARCH_WINDOW,
} from "./model";
import { compatRepo } from "./repo";

type Deps = {
  config: Config;
  database: Database;
  agents: AgentsService;
  search: SearchService;
  guard: AuthGuard;
  requests: RequestContext;
  /**
   * The web page that also lives at GET /agents/:id (the discovery UI's agent page). That path is
   * shared: browsers get the page, API clients the older registry's JSON (see prefersHtml).
   */
  htmlPage?: (request: Request) => Response | Promise<Response>;
};

type ResponseSet = { headers: Record<string, unknown>; status?: unknown };

/** The quality an Accept header gives a media type: the most specific matching range decides (RFC 9110 12.5.1). */
function qualityOf(accept: string, type: string): number {
  const [main] = type.split("/");
  let specificity = -1;
  let quality = 0;
  for (const part of accept.split(",")) {
    const [range = "", ...params] = part.trim().toLowerCase().split(";");
    const q = params.map((p) => p.trim()).find((p) => p.startsWith("q="));
    const value = q ? Number(q.slice(2)) : 1;
    const level = range === type ? 2 : range === `${main}/*` ? 1 : range === "*/*" ? 0 : -1;
    if (level < 0 || level < specificity) continue;
    quality = level > specificity ? value : Math.max(quality, value);
    specificity = level;
  }
  return Number.isFinite(quality) ? quality : 0;
}

/**
 * Whether GET /agents/:id should answer the web page rather than JSON: when the client ranks
 * text/html above application/json (a browser navigating), or says nothing at all (a plain link).
 * HTTP libraries send an Accept of any type (or application/json) and get JSON.
 */
export function prefersHtml(accept: string | null): boolean {
  if (accept === null || accept.trim() === "") return true;
  return qualityOf(accept, "text/html") > qualityOf(accept, "application/json");
}

/** A legacy card without protocolVersion reports its generation, as the older registry required a string. */
const protocolVersionOf = (record: AgentRecordValue) => record.protocolVersion ?? record.generation;

const objectOr = (value: unknown): Record<string, unknown> =>
  value && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, unknown>) : {};

/** The older registry's AgentInfoResponse, from this registry's record. */
export function compatAgentInfo(record: AgentRecordValue): CompatAgentInfoValue {
  const card = objectOr(record.card);
  return {
    agentId: record.id,
    name: record.name,
    description: record.description,
    publisherId: record.source.federated ? record.source.registry : (record.owner ?? record.source.registry),
    version: record.version,
    protocolVersion: protocolVersionOf(record),
    capabilities: objectOr(card.capabilities),
    skills: Array.isArray(card.skills) ? card.skills : [],
  };
}

function publishResult(record: AgentRecordValue): CompatPublishResultValue {
  return {
    agentId: record.id,
    version: record.version,
    protocolVersion: protocolVersionOf(record),
    public: record.visibility === "public",
    signatureValid: record.signature === "valid",
  };
}

const parseRecord = (agent: SerializedAgent) => JSON.parse(agent.body) as AgentRecordValue;

const jsonResponse = (body: unknown, status: number, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });

const Problems = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
  413: ProblemSchema,
  422: ProblemSchema,
  429: ProblemSchema,
};

const readResponses = (schema: object, description: string) =>
  documentedResponses({
    200: { description, schema },
    304: { description: "Not modified: the If-None-Match tag is current" },
    400: { description: "Invalid request", schema: ProblemSchema },
    401: { description: "Invalid bearer token", schema: ProblemSchema },
    404: { description: "No such agent visible to the caller", schema: ProblemSchema },
    429: { description: "Rate limited", schema: ProblemSchema },
  });

/**
 * The older Python registry's routes (A2AReg), answered by the same services as /v1 under the same
 * rules: the caller sees exactly what /v1 shows it (private agents are 404 to anyone else, never 403),
 * writes need the same scopes, and the rate limiter puts each route in its /v1 equivalent's class.
 */
export function compatRoutes(deps: Deps) {
  const { agents, search, requests } = deps;
  const repo = compatRepo(deps.database);
  const writeContext = (request: Request, caller: Caller) => {
    const state = requests.stateOf(request);
    return { caller, requestId: state.requestId, ip: state.ip };
  };
  const bodyCardText = (request: Request) => {
    const raw = requests.rawBodies.get(request);
    return raw === undefined ? undefined : topLevelMemberText(raw, "card");
  };

  async function page(request: Request, set: ResponseSet) {
    const answer = await deps.htmlPage!(request);
    answer.headers.forEach((value, name) => {
      set.headers[name] = value;
    });
    // One URL, two representations: caches must key on Accept too.
    set.headers.vary = ["Accept", answer.headers.get("vary")].filter(Boolean).join(", ");
    set.status = answer.status;
    if (answer.status === 304) return null;
    return new Response(answer.body, {
      status: answer.status,
      headers: set.headers as Record<string, string>,
    });
  }

  function conditional(request: Request, set: ResponseSet, body: string, etag: string, visibility: string) {
    set.headers.etag = etag;
    set.headers["cache-control"] = cacheControlFor(visibility);
    set.headers.vary = "Authorization, Accept";
    if (matchesIfNoneMatch(request.headers.get("if-none-match"), etag)) {
      set.status = 304;
      return null;
    }
    set.headers["content-type"] = "application/json";
    return body;
  }

  /** Search pages of up to 100, following keyset cursors until skip + top results are in hand. */
  async function searchWindow(caller: Caller, input: SearchInput, wanted: number) {
    const hits: Array<{ agent: AgentRecordValue }> = [];
    let total = 0;
    let cursor: string | undefined;
    do {
      const limit = Math.min(100, wanted - hits.length);
      const first = cursor === undefined;
      const page = JSON.parse(await search.search(caller, { ...input, limit, cursor, facets: first })) as {
        items: Array<{ agent: AgentRecordValue }>;
        total: number;
        nextCursor: string | null;
      };
      if (first) total = page.total;
      hits.push(...page.items);
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined && hits.length < wanted);
    return { hits, total };
  }

  return new Elysia({ name: "compat-routes" })
    .use(deps.guard)
    .post(
      "/agents/publish",
      async ({ body, request, caller }) => {
        const ctx = writeContext(request, caller);
        const visibility = body.public === false ? ("private" as const) : ("public" as const);
        const cardText = bodyCardText(request);
        // The older registry answered a re-publish of a known agent instead of refusing it: the same
        // card is a no-op, a changed one a new version. Only the agent's own owner gets that; anyone
        // else meets the url rule of POST /v1/agents (409), so nothing about the agent is revealed.
        if (body.card !== undefined && body.cardUrl === undefined && caller.kind === "client") {
          const analysis = analyzeCard(body.card);
          const existing = analysis.ok ? await repo.findLiveLocalByUrl(analysis.primaryUrl) : undefined;
          if (existing && existing.owner === caller.clientId) {
            const unchanged = existing.cardHash === cardHash(body.card) && existing.visibility === visibility;
            const agent = unchanged
              ? await agents.get(caller, existing.id)
              : await agents.update(ctx, existing.id, { card: body.card, visibility }, cardText);
            return jsonResponse(publishResult(parseRecord(agent)), 200, {
              location: `/agents/${agent.id}`,
              "cache-control": "no-store",
            });
          }
        }
        const agent = await agents.publish(
          ctx,
          { card: body.card, cardUrl: body.cardUrl, visibility },
          cardText,
        );
        return jsonResponse(publishResult(parseRecord(agent)), 201, {
          location: `/agents/${agent.id}`,
          "cache-control": "no-store",
        });
      },
      {
        scopes: ["agents:write"],
        body: CompatPublishBody,
        response: { 200: CompatPublishResult, 201: CompatPublishResult, ...Problems },
        detail: {
          tags: ["compat"],
          summary: "Older registry (A2AReg): publish an agent by its card or cardUrl (as POST /v1/agents)",
          description:
            "Same validation, signature checks, quota and search indexing as POST /v1/agents; `public: false` " +
            "is visibility private. 201 for a new agent, 200 for the owner's re-publish of a live agent.",
        },
      },
    )
    .get(
      "/agents/public",
      async ({ query, set }) => {
        const top = query.top ?? 20;
        const skip = query.skip ?? 0;
        const index = await agents.publicIndex(undefined, skip + top);
        const items = index.agents.slice(skip, skip + top);
        set.headers["cache-control"] = "public, max-age=30";
        return {
          items,
          count: index.count,
          next: skip + top < index.count ? `/agents/public?skip=${skip + top}&top=${top}` : null,
        };
      },
      {
        query: CompatPageQuery,
        response: { 200: CompatPublicList, 400: ProblemSchema, 401: ProblemSchema, 429: ProblemSchema },
        detail: {
          tags: ["compat"],
          summary:
            "Older registry (A2AReg): public active agents, top/skip pages (as /.well-known/agents/index.json)",
        },
      },
    )
    .get(
      "/agents/:id",
      async ({ params, request, caller, set }) => {
        if (deps.htmlPage && prefersHtml(request.headers.get("accept"))) return page(request, set);
        const agent = await agents.get(caller, params.id);
        const body = JSON.stringify(compatAgentInfo(parseRecord(agent)));
        return conditional(request, set, body, `"c${agent.etag.slice(1)}`, agent.visibility);
      },
      {
        params: CompatIdParams,
        detail: {
          tags: ["compat", "web"],
          summary: "Older registry (A2AReg): agent info; browsers (Accept: text/html) get the web page",
          description:
            "JSON for clients that accept application/json (or */*), from the same record and visibility " +
            "rules as GET /v1/agents/{id}: a private agent is 404 to anyone but its owner, entitled clients " +
            "and admins. A request ranking text/html higher, or without Accept, gets the discovery page.",
          responses: readResponses(CompatAgentInfo, "The agent, in the older registry's shape"),
        },
      },
    )
    .get(
      "/agents/:id/card",
      async ({ params, request, caller, set }) => {
        const agent = await agents.get(caller, params.id);
        return conditional(request, set, agent.cardRaw, agent.cardEtag, agent.visibility);
      },
      {
        params: CompatIdParams,
        detail: {
          tags: ["compat"],
          summary: "Older registry (A2AReg): the agent's card, byte for byte (as GET /v1/agents/{id}/card)",
          responses: readResponses({ description: "The Agent Card exactly as published" }, "The card"),
        },
      },
    )
    .post(
      "/agents/search",
      async ({ body, caller }) => {
        const top = body.top ?? body.limit ?? 20;
        const skip = body.skip ?? (body.page !== undefined ? (body.page - 1) * top : 0);
        if (skip + top > MAX_SEARCH_WINDOW)
          throw new ApiError("VALIDATION_FAILED", `skip + top may be at most ${MAX_SEARCH_WINDOW}`, {
            errors: [{ path: "/body/skip", message: `skip + top may be at most ${MAX_SEARCH_WINDOW}` }],
          });
        const { capabilities, ...filters } = body.filters ?? {};
        const input: SearchInput = {
          q: body.q ?? body.query,
          ...filters,
          ...(capabilities?.includes("streaming") ? { streaming: true } : {}),
        };
        const { hits, total } = await searchWindow(caller, input, skip + top);
        const items = hits.slice(skip, skip + top).map(({ agent }) => ({
          ...compatAgentInfo(agent),
          url: agent.url,
          public: agent.visibility === "public",
        }));
        return jsonResponse({ items, count: total }, 200, {
          "cache-control": "private, no-cache",
          vary: "Authorization",
        });
      },
      {
        body: CompatSearchBody,
        response: { 200: CompatSearchResult, 400: ProblemSchema, 401: ProblemSchema, 429: ProblemSchema },
        detail: {
          tags: ["compat"],
          summary:
            "Older registry (A2AReg): search {q, filters, top, skip} -> {items, count} (as GET /v1/search)",
        },
      },
    );
}
