import { t } from "elysia";
import { AgentRecord } from "../agents/model";

/** Largest page the change feed serves. */
export const MAX_FEED_PAGE = 1000;

export const ChangesQuery = t.Object({
  since: t.Optional(
    t.Integer({
      minimum: 0,
      maximum: Number.MAX_SAFE_INTEGER,
      default: 0,
      description: "The nextSince of the previous page; 0 (or absent) reads the whole feed",
    }),
  ),
  limit: t.Optional(t.Integer({ minimum: 1, maximum: MAX_FEED_PAGE, default: 100 })),
});
export type ChangesFilters = typeof ChangesQuery.static;

export const Change = t.Object({
  seq: t.Integer({ description: "Position in this registry's feed; each agent appears once, at its latest" }),
  op: t.Union([t.Literal("upsert"), t.Literal("delete")]),
  id: t.String({ description: "The agent's id in this registry" }),
  agent: t.Optional(AgentRecord),
});

export const ChangesPage = t.Object(
  {
    changes: t.Array(Change),
    nextSince: t.Integer({ description: "Pass as `since` for the next page" }),
    hasMore: t.Boolean(),
  },
  { title: "ChangesPage" },
);

const BaseUrl = t.String({
  minLength: 1,
  maxLength: 2048,
  description: "The peer registry's base URL (https unless this registry runs with DEBUG)",
});
const IntervalSeconds = t.Integer({
  minimum: 1,
  maximum: 86_400,
  description: "Seconds between syncs of this peer (default FEDERATION_INTERVAL_SECONDS)",
});
const PeerName = t.String({ minLength: 1, maxLength: 100 });
const ClientId = t.String({ minLength: 1, maxLength: 200, description: "A client on the peer registry" });
const ClientSecret = t.String({
  minLength: 1,
  maxLength: 500,
  description: "That client's secret; stored encrypted, never returned",
});

export const PeerCreateBody = t.Object(
  {
    name: PeerName,
    baseUrl: BaseUrl,
    clientId: ClientId,
    clientSecret: ClientSecret,
    intervalSeconds: t.Optional(IntervalSeconds),
  },
  { additionalProperties: false },
);
export type PeerCreateInput = typeof PeerCreateBody.static;

export const PeerPatchBody = t.Object(
  {
    name: t.Optional(PeerName),
    enabled: t.Optional(t.Boolean()),
    intervalSeconds: t.Optional(t.Union([IntervalSeconds, t.Null()])),
    clientId: t.Optional(ClientId),
    clientSecret: t.Optional(ClientSecret),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type PeerPatchInput = typeof PeerPatchBody.static;

export const PeerParams = t.Object({ id: t.String({ maxLength: 100 }) });

export const PeerStatus = t.Union([
  t.Literal("never"),
  t.Literal("running"),
  t.Literal("success"),
  t.Literal("failed"),
]);

export const PeerRecord = t.Object(
  {
    id: t.String({ format: "uuid" }),
    name: t.String(),
    baseUrl: t.String(),
    registryId: t.Union([t.String(), t.Null()], {
      description: "The peer's registry id (source.registry of its agents), learned from its feed",
    }),
    clientId: t.String(),
    enabled: t.Boolean(),
    intervalSeconds: t.Integer(),
    lastSeq: t.Integer({ description: "The peer's feed cursor: every change up to it is applied here" }),
    lastSyncAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
    lastSuccessAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
    lastStatus: PeerStatus,
    lastError: t.Union([t.String(), t.Null()]),
    lagChanges: t.Integer({
      description:
        "Changes known to wait in the peer's feed after the last run: 0 once drained, a lower bound when a run stopped early",
    }),
    lagSeconds: t.Union([t.Number(), t.Null()], {
      description: "Seconds since the last successful sync (null before the first)",
    }),
    agentsSynced: t.Integer({ description: "Live copies of the peer's agents held here" }),
    consecutiveFailures: t.Integer(),
    nextSyncAt: t.String({ format: "date-time" }),
    createdAt: t.String({ format: "date-time" }),
  },
  { title: "Peer" },
);
export type PeerRecordValue = typeof PeerRecord.static;

export const PeerList = t.Object({ items: t.Array(PeerRecord) });

export const PeerSyncsQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 500, default: 50 })),
});

export const PeerSyncList = t.Object({
  items: t.Array(
    t.Object({
      id: t.String(),
      startedAt: t.String({ format: "date-time" }),
      finishedAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
      status: t.Union([
        t.Literal("running"),
        t.Literal("success"),
        t.Literal("failed"),
        t.Literal("aborted"),
      ]),
      fromSeq: t.Integer(),
      toSeq: t.Union([t.Integer(), t.Null()]),
      pages: t.Integer(),
      added: t.Integer(),
      updated: t.Integer(),
      removed: t.Integer(),
      skipped: t.Integer(),
      error: t.Union([t.String(), t.Null()]),
      instance: t.String(),
    }),
  ),
});

export const SyncAccepted = t.Object({
  status: t.Literal("accepted"),
  peer: t.String(),
});
