import { t } from "elysia";

export const Visibility = t.Union([t.Literal("public"), t.Literal("private")]);
export const LiveStatus = t.Union([t.Literal("active"), t.Literal("deprecated")]);
export const AgentStatus = t.Union([t.Literal("active"), t.Literal("deprecated"), t.Literal("deleted")]);
export const Health = t.Union([t.Literal("unknown"), t.Literal("up"), t.Literal("down")]);
export const SignatureState = t.Union([t.Literal("none"), t.Literal("valid"), t.Literal("invalid")]);
export const Generation = t.Union([t.Literal("1.0"), t.Literal("0.3"), t.Literal("0.2")]);

const CardValue = t.Unknown({
  description: "An A2A Agent Card (1.0, 0.3.x or legacy 0.2.x), stored and served verbatim",
});

export const PublishBody = t.Object(
  {
    card: t.Optional(CardValue),
    cardUrl: t.Optional(
      t.String({
        minLength: 1,
        maxLength: 2048,
        description: "https URL the registry fetches the card from",
      }),
    ),
    visibility: t.Optional(Visibility),
    allowInvalidSignature: t.Optional(t.Boolean()),
  },
  { additionalProperties: false, description: "Exactly one of card or cardUrl" },
);
export type PublishInput = typeof PublishBody.static;

export const PatchBody = t.Object(
  {
    status: t.Optional(LiveStatus),
    statusMessage: t.Optional(t.Union([t.String({ maxLength: 500 }), t.Null()])),
    visibility: t.Optional(Visibility),
  },
  { additionalProperties: false, minProperties: 1 },
);
export type PatchInput = typeof PatchBody.static;

export const AgentIdParams = t.Object({ id: t.String({ maxLength: 100 }) });
export const VersionParams = t.Object({
  id: t.String({ maxLength: 100 }),
  version: t.String({ maxLength: 200 }),
});
export const EntitlementParams = t.Object({
  id: t.String({ maxLength: 100 }),
  clientId: t.String({ minLength: 1, maxLength: 128 }),
});

const Filter = (description: string) => t.Optional(t.String({ minLength: 1, maxLength: 200, description }));

/** Attribute filters shared by listing and search. */
export const attributeFilters = {
  skill: Filter("Skill id or name (case-insensitive)"),
  tag: Filter("Skill tag (case-insensitive)"),
  inputMode: Filter("Media type the agent accepts, e.g. text/plain"),
  outputMode: Filter("Media type the agent produces"),
  streaming: t.Optional(t.Boolean()),
  provider: Filter("Provider organization (case-insensitive)"),
  status: t.Optional(LiveStatus),
  health: t.Optional(Health),
  signature: t.Optional(SignatureState),
};

export const ListQuery = t.Object({
  limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20 })),
  cursor: t.Optional(
    t.String({ maxLength: 200, description: "Opaque cursor from a previous page's nextCursor" }),
  ),
  ...attributeFilters,
  updatedSince: t.Optional(t.String({ format: "date-time" })),
});
export type ListFilters = typeof ListQuery.static;

export const AgentRecord = t.Object(
  {
    id: t.String({ format: "uuid" }),
    name: t.String(),
    description: t.String(),
    url: t.String(),
    visibility: Visibility,
    status: AgentStatus,
    statusMessage: t.Union([t.String(), t.Null()]),
    version: t.String(),
    generation: Generation,
    protocolVersion: t.Union([t.String(), t.Null()]),
    cardHash: t.String(),
    card: t.Unknown(),
    signature: SignatureState,
    signatureKid: t.Union([t.String(), t.Null()], { description: "kid of the key that signed the card" }),
    verifiedDomain: t.Union([t.String(), t.Null()], {
      description: "Host whose /.well-known/jwks.json holds the signing key (the card url's own origin)",
    }),
    signatureError: t.Union([t.String(), t.Null()], {
      description: "Why the signature is not valid (including: its key set was unreachable at publish)",
    }),
    health: Health,
    checkedAt: t.Union([t.String({ format: "date-time" }), t.Null()]),
    healthError: t.Union([t.String(), t.Null()], { description: "Why the last probes failed" }),
    drift: t.Union([
      t.Object({
        detectedAt: t.String({ format: "date-time" }),
        reason: t.String(),
        fetchedHash: t.Optional(t.String()),
      }),
      t.Null(),
    ]),
    source: t.Object({
      registry: t.String({ description: "Registry id the agent was published in" }),
      originId: t.String(),
      federated: t.Boolean(),
    }),
    owner: t.Union([t.String(), t.Null()]),
    createdAt: t.String({ format: "date-time" }),
    updatedAt: t.String({ format: "date-time" }),
  },
  { title: "AgentRecord" },
);
export type AgentRecordValue = typeof AgentRecord.static;

export const AgentList = t.Object({
  items: t.Array(AgentRecord),
  nextCursor: t.Union([t.String(), t.Null()]),
});
export const VersionList = t.Object({
  items: t.Array(
    t.Object({ version: t.String(), cardHash: t.String(), createdAt: t.String({ format: "date-time" }) }),
  ),
});
export const EntitlementList = t.Object({
  items: t.Array(t.Object({ clientId: t.String(), createdAt: t.String({ format: "date-time" }) })),
});
export const CardDocument = t.Unknown({ description: "The Agent Card exactly as published" });
