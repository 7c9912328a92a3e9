import { Elysia, t } from "elysia";
import { ProblemSchema } from "../../errors";
import type { RequestContext } from "../../infra/web";
import { AgentIdParams } from "../agents/model";
import type { AgentsService } from "../agents/service";
import type { AuthGuard } from "../auth/guard";
import type { Caller } from "../auth/model";
import { RefreshResult } from "./model";

type Deps = { agents: AgentsService; guard: AuthGuard; requests: RequestContext };

const Problems = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

/** Owner actions on freshness: heartbeats (liveness without probes) and re-fetching a card now. */
export function livenessRoutes(deps: Deps) {
  const { agents, requests } = deps;
  const writeContext = (request: Request, caller: Caller) => {
    const state = requests.stateOf(request);
    return { caller, requestId: state.requestId, ip: state.ip };
  };
  return new Elysia({ name: "liveness-routes", prefix: "/v1/agents" })
    .use(deps.guard)
    .post(
      "/:id/heartbeat",
      async ({ params, request, caller, set }) => {
        await agents.heartbeat(writeContext(request, caller), params.id);
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        response: { 204: t.Void(), ...Problems },
        detail: {
          tags: ["agents"],
          summary: "Heartbeat (owner): the agent counts as up for HEARTBEAT_TTL_SECONDS, without probes",
        },
      },
    )
    .post(
      "/:id/refresh",
      async ({ params, request, caller }) => {
        const { agent, ...diff } = await agents.refreshFromUrl(writeContext(request, caller), params.id);
        return new Response(`${JSON.stringify(diff).slice(0, -1)},"agent":${agent.body}}`, {
          headers: { "content-type": "application/json", "cache-control": "no-store" },
        });
      },
      {
        scopes: ["agents:write"],
        params: AgentIdParams,
        response: { 200: RefreshResult, ...Problems, 422: ProblemSchema },
        detail: {
          tags: ["agents"],
          summary: "Re-fetch a card published by cardUrl now (owner): a new version, or drift, with a diff",
        },
      },
    );
}
