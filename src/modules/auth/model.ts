import { t } from "elysia";

export const SCOPES = ["agents:read", "agents:write", "admin"] as const;
export type Scope = (typeof SCOPES)[number];

export const ScopeSchema = t.Union(
  SCOPES.map((s) => t.Literal(s)),
  { description: "agents:read, agents:write or admin (admin implies all; agents:write implies agents:read)" },
);

export const ClientCreateBody = t.Object(
  {
    name: t.String({ minLength: 1, maxLength: 100 }),
    scopes: t.Array(ScopeSchema, { minItems: 1, maxItems: 3, uniqueItems: true }),
  },
  { additionalProperties: false },
);

export const ClientCreated = t.Object({
  client_id: t.String(),
  client_secret: t.String({ description: "Shown once; only its argon2id hash is stored" }),
  name: t.String(),
  scopes: t.Array(ScopeSchema),
});

export const ClientSummary = t.Object({
  client_id: t.String(),
  name: t.String(),
  scopes: t.Array(ScopeSchema),
  disabled: t.Boolean(),
  created_at: t.String({ format: "date-time" }),
});

export const ClientList = t.Object({ items: t.Array(ClientSummary) });
export const ClientIdParams = t.Object({ clientId: t.String({ minLength: 1, maxLength: 128 }) });

export const TokenRequestForm = t.Object({
  grant_type: t.Literal("client_credentials"),
  scope: t.Optional(t.String({ description: "Space-separated subset of the client's scopes" })),
  client_id: t.Optional(t.String({ description: "When not using HTTP Basic" })),
  client_secret: t.Optional(t.String({ description: "When not using HTTP Basic" })),
});

export const TokenResponse = t.Object({
  access_token: t.String(),
  token_type: t.Literal("Bearer"),
  expires_in: t.Integer(),
  scope: t.String(),
});

export const OAUTH_ERRORS = [
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unauthorized_client",
  "unsupported_grant_type",
  "invalid_scope",
] as const;
export type OAuthErrorCode = (typeof OAUTH_ERRORS)[number];

export const OAuthError = t.Object({
  error: t.Union(OAUTH_ERRORS.map((e) => t.Literal(e))),
  error_description: t.Optional(t.String()),
});

/** Who is calling: resolved once per request from the bearer token. */
export type Caller =
  | { kind: "anonymous" }
  | { kind: "client"; clientId: string; scopes: readonly Scope[]; admin: boolean; tokenId: string };

export const ANONYMOUS: Caller = { kind: "anonymous" };

export function hasScope(caller: Caller, scope: Scope): boolean {
  if (caller.kind !== "client") return false;
  if (caller.admin) return true;
  if (caller.scopes.includes(scope)) return true;
  return scope === "agents:read" && caller.scopes.includes("agents:write");
}
