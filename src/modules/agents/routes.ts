import { Elysia, t } from "elysia";
import type { Config } from "../../config";
import { ProblemSchema } from "../../errors";
import { documentedResponses } from "../../infra/openapi";
import type { RequestContext } from "../../infra/web";
import type { AuthGuard } from "../auth/guard";
import type { Caller } from "../auth/model";
import {
  AgentIdParams,
  AgentList,
  AgentRecord,
  CardDocument,
  EntitlementList,
  EntitlementParams,
  ListQuery,
  PatchBody,
  PublishBody,
  VersionList,
  VersionParams,
} from "./model";
import { topLevelMemberText } from "./raw-json";
import type { AgentsService, SerializedAgent } from "./service";

type Deps = { config: Config; agents: AgentsService; guard: AuthGuard; requests: RequestContext };

/** RFC 9110 If-None-Match: a list of entity tags or `*`, compared weakly. */
export function matchesIfNoneMatch(header: string | null, etag: string): boolean {
  if (header === null) return false;
  if (header.trim() === "*") return true;
  const bare = etag.replace(/^W\//, "");
  return header.split(",").some((candidate) => candidate.trim().replace(/^W\//, "") === bare);
}

export function cacheControlFor(visibility: string) {
  // Private agents must never land in a shared cache; public ones may, but are revalidated each time.
  return visibility === "public" ? "public, max-age=0, must-revalidate" : "private, no-cache";
}

type ResponseSet = { headers: Record<string, unknown>; status?: unknown };

/**
 * A JSON body, or 304 when the client holds the same representation. It returns the body as a string
 * and puts headers on `set`, rather than building a Response: Elysia then creates the Response once
 * from one header object instead of merging the pipeline's headers into ours key by key, which on the
 * cached read path costs as much as the rest of the request.
 */
function conditionalJson(request: Request, set: ResponseSet, body: string, etag: string, visibility: string) {
  const headers = set.headers;
  headers.etag = etag;
  headers["cache-control"] = cacheControlFor(visibility);
  headers.vary = "Authorization";
  if (matchesIfNoneMatch(request.headers.get("if-none-match"), etag)) {
    set.status = 304;
    return null;
  }
  headers["content-type"] = "application/json";
  return body;
}

const readResponses = (schema: object, description: string) =>
  documentedResponses({
    200: { description, schema },
    304: { description: "Not modified: the If-None-Match tag is current" },
    400: { description: "Invalid request", schema: ProblemSchema },
    401: { description: "Invalid bearer token", schema: ProblemSchema },
    404: { description: "No such agent visible to the caller", schema: ProblemSchema },
    429: { description: "Rate limited", schema: ProblemSchema },
  });

const Problems = {
  400: ProblemSchema,
  401: ProblemSchema,
  403: ProblemSchema,
  404: ProblemSchema,
  409: ProblemSchema,
  413: ProblemSchema,
  422: ProblemSchema,
};

export function agentRoutes(deps: Deps) {
  const { agents, requests } = deps;
  const writeContext = (request: Request, caller: Caller) => {
    const state = requests.stateOf(request);
    return { caller, requestId: state.requestId, ip: state.ip };
  };
  const bodyCardText = (request: Request) => {
    const raw = requests.rawBodies.get(request);
    return raw === undefined ? undefined : topLevelMemberText(raw, "card");
  };
  const created = (agent: SerializedAgent) =>
    new Response(agent.body, {
      status: 201,
      headers: {
        "content-type": "application/json",
        location: `/v1/agents/${agent.id}`,
        etag: agent.etag,
        "cache-control": "no-store",
      },
    });
  const written = (agent: SerializedAgent) =>
    new Response(agent.body, {
      status: 200,
      headers: { "content-type": "application/json", etag: agent.etag, "cache-control": "no-store" },
    });

  return new Elysia({ name: "agents-routes", prefix: "/v1/agents" })
    .use(deps.guard)
    .post(
      "",
      async ({ body, request, caller }) =>
        created(await agents.publish(writeContext(request, caller), body, bodyCardText(request))),
      {
        scopes: ["agents:write"],
        body: PublishBody,
        response: { 201: AgentRecord, ...Problems },
        detail: {
          tags: ["agents"],
          summary: "Publish an agent by its Agent Card (inline or fetched from cardUrl)",
        },
      },
    )
    .get(
      "",
      async ({ query, caller }) => {
        const page = await agents.list(caller, query);
        return new Response(
          `{"items":[${page.items.join(",")}],"nextCursor":${JSON.stringify(page.nextCursor)}}`,
          {
            headers: {
              "content-type": "application/json",
              "cache-control": "private, no-cache",
              vary: "Authorization",
            },
          },
        );
      },
      {
        query: ListQuery,
        response: { 200: AgentList, 400: ProblemSchema, 401: ProblemSchema },
        detail: {
          tags: ["agents"],
          summary: "List agents visible to the caller (keyset pagination, newest change first)",
        },
      },
    )
    .get(
      "/:id",
      ({ params, request, caller, set }): string | null | Promise<string | null> => {
        // Synchronous when this process holds the record: no promise, no await on the hot path.
        const cached = agents.peek(caller, params.id);
        if (cached) return conditionalJson(request, set, cached.body, cached.etag, cached.visibility);
        return agents
          .get(caller, params.id)
          .then((agent) => conditionalJson(request, set, agent.body, agent.etag, agent.visibility));
      },
      {
        params: AgentIdParams,
        detail: {
          tags: ["agents"],
          summary: "Read an agent record (ETag / If-None-Match supported)",
          responses: readResponses(AgentRecord, "The agent record"),
        },
      },
    )
    .get(
      "/:id/card",
      ({ params, request, caller, set }): string | null | Promise<string | null> => {
        const cached = agents.peek(caller, params.id);
        if (cached) return conditionalJson(request, set, cached.cardRaw, cached.cardEtag, cached.visibility);
        return agents
          .get(caller, params.id)
          .then((agent) => conditionalJson(request, set, agent.cardRaw, agent.cardEtag, agent.visibility));
      },
      {
        params: AgentIdParams,
        detail: {
          tags: ["agents"],
          summary: "The agent's latest card, byte for byte as published",
          responses: readResponses(CardDocument, "The card as published"),
        },
      },
    )
    .put(
      "/:id",
      async ({ params, body, request, caller }) =>
        written(await agents.update(writeContext(request, caller), params.id, body, bodyCardText(request))),
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        body: PublishBody,
        response: { 200: AgentRecord, ...Problems },
        detail: {
          tags: ["agents"],
          summary: "Publish a new immutable version of the agent's card (owner or admin)",
        },
      },
    )
    .patch(
      "/:id",
      async ({ params, body, request, caller }) =>
        written(await agents.patch(writeContext(request, caller), params.id, body)),
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        body: PatchBody,
        response: { 200: AgentRecord, ...Problems },
        detail: { tags: ["agents"], summary: "Change status, status message or visibility (owner or admin)" },
      },
    )
    .delete(
      "/:id",
      async ({ params, request, caller, set }) => {
        await agents.remove(writeContext(request, caller), params.id);
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        response: { 204: t.Void(), ...Problems },
        detail: { tags: ["agents"], summary: "Retire an agent; a tombstone stays for the change feed" },
      },
    )
    .get("/:id/versions", ({ params, caller }) => agents.versions(caller, params.id), {
      params: AgentIdParams,
      response: { 200: VersionList, 401: ProblemSchema, 404: ProblemSchema },
      detail: { tags: ["agents"], summary: "The agent's card versions, newest first" },
    })
    .get(
      "/:id/versions/:version",
      async ({ params, request, caller, set }) => {
        const found = await agents.version(caller, params.id, params.version);
        return conditionalJson(request, set, found.cardRaw, found.etag, found.visibility);
      },
      {
        params: VersionParams,
        detail: {
          tags: ["agents"],
          summary: "The card of one version, byte for byte as published",
          responses: readResponses(CardDocument, "The card of that version as published"),
        },
      },
    )
    .get(
      "/:id/entitlements",
      async ({ params, request, caller }) => agents.entitlementsOf(writeContext(request, caller), params.id),
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        response: { 200: EntitlementList, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema },
        detail: {
          tags: ["agents"],
          summary: "Clients entitled to see this private agent (owner or admin)",
        },
      },
    )
    .put(
      "/:id/entitlements/:clientId",
      async ({ params, request, caller, set }) => {
        await agents.setEntitlement(writeContext(request, caller), params.id, params.clientId, true);
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["agents:write"],
        params: EntitlementParams,
        response: { 204: t.Void(), 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema },
        detail: {
          tags: ["agents"],
          summary: "Entitle a client to see this agent when private (owner or admin)",
        },
      },
    )
    .delete(
      "/:id/entitlements/:clientId",
      async ({ params, request, caller, set }) => {
        await agents.setEntitlement(writeContext(request, caller), params.id, params.clientId, false);
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["agents:write"],
        params: EntitlementParams,
        response: { 204: t.Void(), 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema },
        detail: { tags: ["agents"], summary: "Withdraw a client's entitlement (owner or admin)" },
      },
    );
}
