import { t } from "elysia";

export const WEBHOOK_EVENTS = [
  "agent.published",
  "agent.updated",
  "agent.status_changed",
  "agent.deleted",
  "agent.health_changed",
] as const;
export type WebhookEvent = (typeof WEBHOOK_EVENTS)[number];

const EventName = t.Union([
  t.Literal("agent.published"),
  t.Literal("agent.updated"),
  t.Literal("agent.status_changed"),
  t.Literal("agent.deleted"),
  t.Literal("agent.health_changed"),
]);

export const CreateWebhookBody = t.Object(
  {
    url: t.String({
      minLength: 1,
      maxLength: 2048,
      description: "https endpoint that receives POSTed events (http and private hosts only in DEBUG)",
    }),
    events: t.Array(EventName, { minItems: 1, maxItems: WEBHOOK_EVENTS.length, uniqueItems: true }),
  },
  { additionalProperties: false },
);
export type CreateWebhookInput = typeof CreateWebhookBody.static;

export const WebhookParams = t.Object({ id: t.String({ maxLength: 100 }) });

export const Webhook = t.Object(
  {
    id: t.String({ format: "uuid" }),
    url: t.String(),
    events: t.Array(EventName),
    owner: t.String(),
    createdAt: t.String({ format: "date-time" }),
  },
  { title: "Webhook" },
);

export const CreatedWebhook = t.Composite([
  Webhook,
  t.Object({
    secret: t.String({
      description:
        "HMAC-SHA256 key for the X-A2A-Signature header (t=<unix seconds>,v1=<hex HMAC-SHA256 of <t>.<body>); shown once",
    }),
  }),
]);

export const WebhookList = t.Object({ items: t.Array(Webhook) });

export const DeliveriesQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 200, default: 50 })),
  cursor: t.Optional(t.String({ maxLength: 100 })),
});

export const Delivery = t.Object({
  id: t.Integer(),
  event: EventName,
  agentId: t.Union([t.String(), t.Null()]),
  status: t.Union([t.Literal("pending"), t.Literal("delivered"), t.Literal("failed")]),
  attempts: t.Integer(),
  lastStatusCode: t.Union([t.Integer(), t.Null()]),
  lastError: t.Union([t.String(), t.Null()]),
  createdAt: t.String({ format: "date-time" }),
  deliveredAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
  nextAttemptAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
});

export const DeliveryList = t.Object({
  items: t.Array(Delivery),
  nextCursor: t.Union([t.String(), t.Null()]),
});
