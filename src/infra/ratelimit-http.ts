import { Elysia } from "elysia";
import type { EndpointClass } from "../config";
import { ApiError } from "../errors";
import type { Caller } from "../modules/auth/model";
import type { LimitDecision, RateLimiter } from "./ratelimit";
import type { RequestContext } from "./web";

/** Routes no limiter may gate: probes and scrapes must answer while the service is being hammered. */
const EXEMPT = new Set(["/health", "/health/ready", "/metrics", "/docs", "/docs/json"]);

/** The endpoint class of a route, from its method and template; undefined for exempt routes. */
export function endpointClass(method: string, route: string): EndpointClass | undefined {
  if (EXEMPT.has(route)) return undefined;
  if (route === "/oauth/token") return "token";
  if (route.startsWith("/v1/clients") || route.startsWith("/v1/audit") || route.startsWith("/v1/peers"))
    return "admin";
  // The older registry's routes (src/modules/compat) count as their /v1 equivalents.
  if (route.startsWith("/v1/search") || route === "/agents/search") return "search";
  const writes = route.startsWith("/v1/agents") || route === "/agents/publish";
  if (method !== "GET" && method !== "HEAD" && writes) return "write";
  return "read";
}

export function headersOf(decision: LimitDecision): Record<string, string> {
  return {
    "ratelimit-limit": String(decision.limit),
    "ratelimit-remaining": String(Math.max(0, decision.remaining)),
    "ratelimit-reset": String(decision.resetSeconds),
  };
}

/** Buckets are per client for token holders, per client IP for everyone else. */
export function limiterKey(caller: Caller | undefined, ip: string | null): string {
  return caller?.kind === "client" ? `c:${caller.clientId}` : `ip:${ip ?? "unknown"}`;
}

/** The 429 for a denied decision, with the headers that say when to come back. */
export function rateLimitedError(decision: LimitDecision): ApiError {
  return new ApiError("RATE_LIMITED", `Rate limit exceeded; retry in ${decision.retryAfterSeconds} s`, {
    headers: { ...headersOf(decision), "retry-after": String(Math.max(1, decision.retryAfterSeconds)) },
  });
}

/**
 * Applies the token-bucket limiter to every route registered after it: keyed by client id when the
 * caller has a token, by client IP otherwise. Decides synchronously when the limiter can (leased or
 * local tokens), so most admitted requests never wait on Redis.
 */
export function rateLimitPlugin(deps: { limiter: RateLimiter; requests: RequestContext }) {
  const { limiter, requests } = deps;

  const apply = (decision: LimitDecision, set: { headers: Record<string, unknown> }) => {
    if (!decision.allowed) throw rateLimitedError(decision);
    Object.assign(set.headers, headersOf(decision));
  };

  return new Elysia({ name: "rate-limit" }).onBeforeHandle({ as: "global" }, (context) => {
    const { request, route, set } = context;
    const cls = endpointClass(request.method, route);
    if (cls === undefined) return;
    const caller = (context as unknown as { caller?: Caller }).caller;
    // The address only when the key needs it (see LiveRequestState in web.ts).
    const ip = caller?.kind === "client" ? null : requests.stateOf(request).ip;
    const decision = limiter.take(limiterKey(caller, ip), cls);
    if (decision instanceof Promise) return decision.then((d) => apply(d, set));
    apply(decision, set);
  });
}
