import { Elysia, t } from "elysia";
import { ProblemSchema } from "../../errors";
import type { RequestContext } from "../../infra/web";
import type { AuthGuard } from "../auth/guard";
import type { Caller } from "../auth/model";
import {
  ChangesPage,
  ChangesQuery,
  PeerCreateBody,
  PeerList,
  PeerParams,
  PeerPatchBody,
  PeerRecord,
  PeerSyncList,
  PeerSyncsQuery,
  SyncAccepted,
} from "./model";
import type { FederationService } from "./service";

type Deps = { federation: FederationService; guard: AuthGuard; requests: RequestContext };

const AdminProblems = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

/** GET /v1/changes (agents:read) and the /v1/peers admin routes. */
export function federationRoutes(deps: Deps) {
  const { federation, requests } = deps;
  const writeContext = (request: Request, caller: Caller) => {
    const state = requests.stateOf(request);
    return { caller, requestId: state.requestId, ip: state.ip };
  };

  return new Elysia({ name: "federation-routes" })
    .use(deps.guard)
    .get(
      "/v1/changes",
      async ({ query, caller }) => {
        const page = await federation.changes(caller, query.since ?? 0, query.limit ?? 100);
        return new Response(page.body, {
          headers: { "content-type": "application/json", "cache-control": "no-store", vary: "Authorization" },
        });
      },
      {
        scopes: ["agents:read"],
        query: ChangesQuery,
        response: {
          200: ChangesPage,
          400: ProblemSchema,
          401: ProblemSchema,
          403: ProblemSchema,
          410: ProblemSchema,
        },
        detail: {
          tags: ["federation"],
          summary: "Change feed of local agents for peer registries (seq order; deletions as tombstones)",
          description:
            "Each agent appears once, at its latest change. Agents the caller may see are upserts carrying " +
            "the agent record; agents it could see before and no longer can are deletes. Federated copies " +
            "are never included. 410 CURSOR_EXPIRED: read again from since=0.",
        },
      },
    )
    .group("/v1/peers", (peers) =>
      peers
        .post(
          "",
          async ({ body, request, caller }) => {
            const peer = await federation.add(writeContext(request, caller), body);
            return new Response(JSON.stringify(peer), {
              status: 201,
              headers: {
                "content-type": "application/json",
                location: `/v1/peers/${peer.id}`,
                "cache-control": "no-store",
              },
            });
          },
          {
            scopes: ["admin"],
            body: PeerCreateBody,
            response: { 201: PeerRecord, ...AdminProblems, 413: ProblemSchema },
            detail: {
              tags: ["federation"],
              summary:
                "Add a peer registry to sync from (validated: token, agent card and change feed are checked first)",
            },
          },
        )
        .get("", () => federation.list(), {
          scopes: ["admin"],
          response: { 200: PeerList, 401: ProblemSchema, 403: ProblemSchema },
          detail: {
            tags: ["federation"],
            summary: "Peers with their sync status (secrets are never returned)",
          },
        })
        .get("/:id", ({ params }) => federation.get(params.id), {
          scopes: ["admin"],
          params: PeerParams,
          response: { 200: PeerRecord, ...AdminProblems },
          detail: { tags: ["federation"], summary: "A peer and its sync status" },
        })
        .patch(
          "/:id",
          ({ params, body, request, caller }) =>
            federation.update(writeContext(request, caller), params.id, body),
          {
            scopes: ["admin"],
            params: PeerParams,
            body: PeerPatchBody,
            response: { 200: PeerRecord, ...AdminProblems },
            detail: {
              tags: ["federation"],
              summary: "Rename, enable or disable a peer, change its interval or its credentials",
            },
          },
        )
        .delete(
          "/:id",
          async ({ params, request, caller, set }) => {
            await federation.remove(writeContext(request, caller), params.id);
            set.status = 204;
            return undefined;
          },
          {
            scopes: ["admin"],
            params: PeerParams,
            response: { 204: t.Void(), ...AdminProblems },
            detail: { tags: ["federation"], summary: "Remove a peer and every copy of its agents" },
          },
        )
        .post(
          "/:id/sync",
          async ({ params, set }) => {
            const accepted = await federation.requestSync(params.id);
            set.status = 202;
            return accepted;
          },
          {
            scopes: ["admin"],
            params: PeerParams,
            response: { 202: SyncAccepted, ...AdminProblems, 503: ProblemSchema },
            detail: { tags: ["federation"], summary: "Sync this peer now (runs in the background)" },
          },
        )
        .get("/:id/syncs", ({ params, query }) => federation.syncHistory(params.id, query.limit ?? 50), {
          scopes: ["admin"],
          params: PeerParams,
          query: PeerSyncsQuery,
          response: { 200: PeerSyncList, ...AdminProblems },
          detail: { tags: ["federation"], summary: "The peer's recent sync runs, newest first" },
        }),
    );
}
