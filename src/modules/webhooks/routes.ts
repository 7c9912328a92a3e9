import { Elysia, t } from "elysia";
import { ProblemSchema } from "../../errors";
import type { RequestContext } from "../../infra/web";
import type { AuthGuard } from "../auth/guard";
import type { Caller } from "../auth/model";
import {
  CreatedWebhook,
  CreateWebhookBody,
  DeliveriesQuery,
  DeliveryList,
  Webhook,
  WebhookList,
  WebhookParams,
} from "./model";
import type { WebhooksService } from "./service";

type Deps = { webhooks: WebhooksService; guard: AuthGuard; requests: RequestContext };

const Problems = { 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema };

export function webhookRoutes(deps: Deps) {
  const { webhooks, requests } = deps;
  const writeContext = (request: Request, caller: Caller) => {
    const state = requests.stateOf(request);
    return { caller, requestId: state.requestId, ip: state.ip };
  };
  const detail = (summary: string) => ({ tags: ["webhooks"], summary });

  return new Elysia({ name: "webhook-routes", prefix: "/v1/webhooks" })
    .use(deps.guard)
    .post(
      "",
      async ({ body, request, caller, set }) => {
        const created = await webhooks.create(writeContext(request, caller), body);
        set.status = 201;
        set.headers.location = `/v1/webhooks/${created.id}`;
        set.headers["cache-control"] = "no-store";
        return created;
      },
      {
        scopes: ["agents:write"],
        body: CreateWebhookBody,
        response: { 201: CreatedWebhook, ...Problems },
        detail: detail(
          "Subscribe a URL to events of your agents (admins: of all agents); the secret is shown once",
        ),
      },
    )
    .get("", ({ caller }) => webhooks.list(caller), {
      scopes: ["agents:write"],
      response: { 200: WebhookList, ...Problems },
      detail: detail("Your webhooks (admins: all)"),
    })
    .get("/:id", ({ caller, params }) => webhooks.get(caller, params.id), {
      scopes: ["agents:write"],
      params: WebhookParams,
      response: { 200: Webhook, ...Problems },
      detail: detail("One webhook"),
    })
    .delete(
      "/:id",
      async ({ caller, params, request, set }) => {
        await webhooks.remove(writeContext(request, caller), params.id);
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["agents:write"],
        params: WebhookParams,
        response: { 204: t.Void(), ...Problems },
        detail: detail("Remove a webhook (its pending deliveries are dropped)"),
      },
    )
    .get(
      "/:id/deliveries",
      ({ caller, params, query }) => webhooks.deliveries(caller, params.id, query.limit ?? 50, query.cursor),
      {
        scopes: ["agents:write"],
        params: WebhookParams,
        query: DeliveriesQuery,
        response: { 200: DeliveryList, ...Problems },
        detail: detail("Delivery log, newest first: status, attempts, last HTTP status and error"),
      },
    );
}
