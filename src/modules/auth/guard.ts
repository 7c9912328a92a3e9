import { Elysia } from "elysia";
import { ApiError } from "../../errors";
import type { Metrics } from "../../infra/metrics";
import type { RequestContext } from "../../infra/web";
import { type Caller, hasScope, type Scope } from "./model";
import type { AuthService } from "./service";

export function requireScopes(caller: Caller, required: readonly Scope[], metrics?: Metrics): void {
  if (caller.kind !== "client") {
    metrics?.authFailures.inc({ reason: "missing_token" });
    throw new ApiError("UNAUTHORIZED", "This route needs a bearer token (POST /oauth/token)", {
      headers: { "www-authenticate": 'Bearer realm="a2a-registry"' },
    });
  }
  const missing = required.filter((scope) => !hasScope(caller, scope));
  if (missing.length > 0) {
    metrics?.authFailures.inc({ reason: "insufficient_scope" });
    throw new ApiError("FORBIDDEN", `Token lacks scope: ${missing.join(" ")}`, {
      headers: { "www-authenticate": `Bearer error="insufficient_scope", scope="${missing.join(" ")}"` },
    });
  }
}

/**
 * Resolves `caller` for every route registered after it and offers the `scopes` macro. Named, so the
 * feature modules that each `.use()` it share one instance and the token is verified once per request.
 */
export function authGuard(deps: { auth: AuthService; requests: RequestContext; metrics: Metrics }) {
  return new Elysia({ name: "auth-guard" })
    .derive({ as: "global" }, async ({ request }) => {
      const caller = await deps.auth.authenticateBearer(request.headers.get("authorization"));
      if (caller.kind === "client") deps.requests.stateOf(request).clientId = caller.clientId;
      return { caller };
    })
    .macro({
      // transform runs before body validation: an unauthorised caller learns nothing about the schema.
      scopes: (required: Scope[]) => ({
        transform(context) {
          requireScopes((context as unknown as { caller: Caller }).caller, required, deps.metrics);
        },
      }),
    });
}

export type AuthGuard = ReturnType<typeof authGuard>;
