import { Elysia, t } from "elysia";
import { ApiError, ProblemSchema } from "../../errors";
import type { Audit } from "../../infra/audit";
import type { Metrics } from "../../infra/metrics";
import type { RequestContext } from "../../infra/web";
import type { AuthGuard } from "./guard";
import {
  ClientCreateBody,
  ClientCreated,
  ClientIdParams,
  ClientList,
  OAuthError,
  type OAuthErrorCode,
  TokenRequestForm,
  TokenResponse,
} from "./model";
import { type AuthService, OAuthFailure } from "./service";

type Deps = { auth: AuthService; guard: AuthGuard; audit: Audit; metrics: Metrics; requests: RequestContext };

const NO_STORE = { "cache-control": "no-store", pragma: "no-cache" };

function oauthError(error: OAuthErrorCode, description: string, status: number) {
  const headers: Record<string, string> = { ...NO_STORE, "content-type": "application/json" };
  // RFC 6749 5.2: a 401 names the authentication scheme the client should use.
  if (status === 401) headers["www-authenticate"] = 'Basic realm="a2a-registry"';
  return new Response(JSON.stringify({ error, error_description: description }), { status, headers });
}

/** Decodes an RFC 6749 2.3.1 Basic credential: base64 of form-urlencoded id ":" form-urlencoded secret. */
function parseBasic(header: string): { clientId: string; clientSecret: string } | null {
  const match = /^Basic +([A-Za-z0-9+/=]+) *$/i.exec(header);
  if (!match) return null;
  const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  if (colon < 0) return null;
  try {
    const formDecode = (s: string) => decodeURIComponent(s.replaceAll("+", " "));
    return {
      clientId: formDecode(decoded.slice(0, colon)),
      clientSecret: formDecode(decoded.slice(colon + 1)),
    };
  } catch {
    return null;
  }
}

export function authRoutes(deps: Deps) {
  const { auth, audit, metrics, requests } = deps;

  const tokenRoute = new Elysia({ name: "oauth-token" }).post(
    "/oauth/token",
    async ({ body, request }) => {
      const state = requests.stateOf(request);
      const authorization = request.headers.get("authorization");
      let attemptedClient: string | null = null;
      const deny = async (error: OAuthErrorCode, description: string, status: 400 | 401) => {
        metrics.authFailures.inc({ reason: error });
        await audit.recordDetached({
          actor: attemptedClient ?? "anonymous",
          action: "token.denied",
          target: attemptedClient,
          outcome: "failure",
          ip: state.ip,
          requestId: state.requestId,
          details: { error, description },
        });
        return oauthError(error, description, status);
      };

      if (body === undefined || body === null || typeof body !== "object" || Array.isArray(body))
        return deny("invalid_request", "Send an application/x-www-form-urlencoded body", 400);
      const params = body as Record<string, unknown>;
      for (const [key, value] of Object.entries(params)) {
        if (Array.isArray(value)) return deny("invalid_request", `Parameter "${key}" is repeated`, 400);
        if (typeof value !== "string")
          return deny("invalid_request", `Parameter "${key}" must be a string`, 400);
      }
      const form = params as Record<string, string | undefined>;
      if (form.client_id !== undefined) attemptedClient = form.client_id.slice(0, 128);
      if (!form.grant_type) return deny("invalid_request", "Missing grant_type", 400);
      if (form.grant_type !== "client_credentials")
        return deny("unsupported_grant_type", "Only grant_type=client_credentials is supported", 400);

      let credentials: { clientId: string; clientSecret: string } | null = null;
      if (authorization !== null) {
        if (form.client_secret !== undefined)
          return deny("invalid_request", "Use one client authentication method, not both", 400);
        credentials = parseBasic(authorization);
        if (!credentials) return deny("invalid_client", "Malformed HTTP Basic client credentials", 401);
        if (form.client_id !== undefined && form.client_id !== credentials.clientId)
          return deny("invalid_request", "client_id does not match the authenticated client", 400);
      } else if (form.client_id !== undefined && form.client_secret !== undefined) {
        credentials = { clientId: form.client_id, clientSecret: form.client_secret };
      } else {
        return deny(
          "invalid_client",
          "Client authentication is required (HTTP Basic or client_id/client_secret)",
          401,
        );
      }
      attemptedClient = credentials.clientId.slice(0, 128);

      try {
        const token = await auth.issueToken({ ...credentials, scope: form.scope });
        await audit.recordDetached({
          actor: credentials.clientId,
          action: "token.issued",
          target: credentials.clientId,
          outcome: "success",
          ip: state.ip,
          requestId: state.requestId,
          details: { scope: token.scope },
        });
        return new Response(JSON.stringify(token), {
          status: 200,
          headers: { ...NO_STORE, "content-type": "application/json" },
        });
      } catch (error) {
        if (error instanceof OAuthFailure) return deny(error.error, error.description, error.status);
        throw error;
      }
    },
    {
      detail: {
        tags: ["auth"],
        summary: "Issue an access token (OAuth 2.0 client credentials, RFC 6749 section 4.4)",
        description:
          "Authenticate with HTTP Basic (client_id:client_secret) or with client_id and client_secret form " +
          "fields. Errors follow RFC 6749 section 5.2, not problem+json.",
        requestBody: {
          required: true,
          content: {
            "application/x-www-form-urlencoded": { schema: TokenRequestForm as never },
          },
        },
      },
      response: { 200: TokenResponse, 400: OAuthError, 401: OAuthError },
    },
  );

  const clientRoutes = new Elysia({ name: "clients-admin" })
    .use(deps.guard)
    .post(
      "/v1/clients",
      async ({ body, request, set, caller }) => {
        const state = requests.stateOf(request);
        const created = await auth.createClient(body);
        await audit.recordDetached({
          actor: caller.kind === "client" ? caller.clientId : "anonymous",
          action: "client.created",
          target: created.client_id,
          outcome: "success",
          ip: state.ip,
          requestId: state.requestId,
          details: { name: created.name, scopes: created.scopes },
        });
        set.status = 201;
        set.headers["cache-control"] = "no-store";
        return created;
      },
      {
        scopes: ["admin"],
        body: ClientCreateBody,
        response: { 201: ClientCreated, 400: ProblemSchema, 401: ProblemSchema, 403: ProblemSchema },
        detail: { tags: ["clients"], summary: "Create an API client (its secret is shown once)" },
      },
    )
    .get(
      "/v1/clients",
      async () => {
        const rows = await auth.listClients();
        return {
          items: rows.map((row) => ({
            client_id: row.clientId,
            name: row.name,
            scopes: row.scopes as never,
            disabled: row.disabled,
            created_at: row.createdAt.toISOString(),
          })),
        };
      },
      {
        scopes: ["admin"],
        response: { 200: ClientList, 401: ProblemSchema, 403: ProblemSchema },
        detail: { tags: ["clients"], summary: "List API clients (never their secrets)" },
      },
    )
    .delete(
      "/v1/clients/:clientId",
      async ({ params, request, set, caller }) => {
        const state = requests.stateOf(request);
        const revoked = await auth.revokeClient(params.clientId);
        if (!revoked) throw new ApiError("NOT_FOUND", `No client ${params.clientId}`);
        await audit.recordDetached({
          actor: caller.kind === "client" ? caller.clientId : "anonymous",
          action: "client.revoked",
          target: params.clientId,
          outcome: "success",
          ip: state.ip,
          requestId: state.requestId,
        });
        set.status = 204;
        return undefined;
      },
      {
        scopes: ["admin"],
        params: ClientIdParams,
        response: { 204: t.Void(), 401: ProblemSchema, 403: ProblemSchema, 404: ProblemSchema },
        detail: { tags: ["clients"], summary: "Revoke a client: its live tokens stop working at once" },
      },
    );

  return { tokenRoute, clientRoutes };
}
