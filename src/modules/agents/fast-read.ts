import type { Config } from "../../config";
import { problemResponse } from "../../errors";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { RateLimiter } from "../../infra/ratelimit";
import { limiterKey, rateLimitedError } from "../../infra/ratelimit-http";
import { clientIp, createAccessRecorder, requestIdOf, SECURITY_HEADERS } from "../../infra/web";
import type { AuthService } from "../auth/service";
import { cacheControlFor, matchesIfNoneMatch } from "./routes";
import type { AgentsService } from "./service";

/** A record's id as cached: a UUID in lower case (any other spelling goes to the app). */
const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const PATH = new RegExp(`^/v1/agents/(${UUID})(/card)?$`);
const ID = new RegExp(`^${UUID}$`);

type Server = { requestIP(request: Request): { address: string } | null } | null;
type Kind = "record" | "card";
const ROUTES: Record<Kind, string> = { record: "/v1/agents/:id", card: "/v1/agents/:id/card" };

/**
 * The discovery hot path, answered before routing: `GET /v1/agents/:id` and `/card` when everything
 * needed is already in this process: the record in L1, the caller known without I/O (anonymous, or a
 * token already verified), and a rate-limit token already leased. It sends exactly what the routed
 * handler would (same headers, same ETag and 304 rules, same limits, metrics and access log); any other
 * case returns undefined and takes the ordinary route, which awaits what it must.
 *
 * Served two ways: as Bun routes of their own (`routeHandler`: Bun has matched the path and parsed the
 * id, so the URL is never read), and from the app's onRequest for requests that reach Elysia directly
 * (`app.handle`, or a server without the native routes), which matches the path itself.
 */
export function createFastRead(deps: {
  config: Config;
  agents: AgentsService;
  auth: AuthService;
  limiter: RateLimiter;
  metrics: Metrics;
  logger: Logger;
}) {
  const { config, agents, auth, limiter, metrics, logger } = deps;
  const record = createAccessRecorder({ metrics, logger });
  // Bound once per answer kind: the metric series lookup is not repeated on every request.
  const recorders = {
    record: { 200: record.as("GET", ROUTES.record, 200), 304: record.as("GET", ROUTES.record, 304) },
    card: { 200: record.as("GET", ROUTES.card, 200), 304: record.as("GET", ROUTES.card, 304) },
  };
  const readLimit = String(config.rateLimits.read.limit);
  // Building a Response's headers from a plain object costs more than the rest of this path; the fixed
  // ones are built once per kind of answer, and each response only sets the few that vary.
  const baseHeaders = new Map<string, Headers>();
  const headersFor = (visibility: string, notModified: boolean) => {
    const key = `${visibility}|${notModified}`;
    let headers = baseHeaders.get(key);
    if (!headers) {
      headers = new Headers({
        ...SECURITY_HEADERS,
        "ratelimit-limit": readLimit,
        "cache-control": cacheControlFor(visibility),
        vary: "Authorization",
        ...(notModified ? {} : { "content-type": "application/json" }),
      });
      baseHeaders.set(key, headers);
    }
    return headers;
  };
  // In production a miss on the native route is handed to the app, whose onRequest would try again.
  const missed = new WeakSet<Request>();
  const miss = (request: Request) => {
    missed.add(request);
    return undefined;
  };
  const answer = (request: Request, server: Server, id: string, kind: Kind): Response | undefined => {
    const startedAt = performance.now();
    const caller = auth.peekCaller(request.headers.get("authorization"));
    if (!caller) return miss(request);
    const agent = agents.peek(caller, id);
    if (!agent) return miss(request);
    const ip = caller.kind === "client" ? null : clientIp(request, server, config.trustProxy);
    const decision = limiter.takeSync(limiterKey(caller, ip), "read");
    if (!decision) return miss(request);

    metrics.countCache("l1", "hit");
    const requestId = requestIdOf(request);
    const who = { requestId, clientId: caller.kind === "client" ? caller.clientId : null, ip };
    if (!decision.allowed) {
      const denial = rateLimitedError(decision);
      const response = problemResponse(denial.code, denial.detail, requestId, {
        ...SECURITY_HEADERS,
        "x-request-id": requestId,
        ...denial.options.headers,
      });
      record("GET", ROUTES[kind], response.status, startedAt, who);
      return response;
    }
    const card = kind === "card";
    const etag = card ? agent.cardEtag : agent.etag;
    const notModified = matchesIfNoneMatch(request.headers.get("if-none-match"), etag);
    const response = new Response(notModified ? null : card ? agent.cardRaw : agent.body, {
      status: notModified ? 304 : 200,
      headers: headersFor(agent.visibility, notModified),
    });
    const headers = response.headers;
    headers.set("x-request-id", requestId);
    headers.set("ratelimit-remaining", String(Math.max(0, decision.remaining)));
    headers.set("ratelimit-reset", String(decision.resetSeconds));
    headers.set("etag", etag);
    recorders[kind][notModified ? 304 : 200](startedAt, who);
    return response;
  };

  /** From the app's onRequest: any request, the path matched here. */
  const fromRequest = (request: Request, server: Server): Response | undefined => {
    if (request.method !== "GET" || missed.has(request)) return undefined;
    const url = request.url;
    const pathStart = url.indexOf("/", url.indexOf("//") + 2);
    const query = url.indexOf("?", pathStart);
    const match = PATH.exec(query < 0 ? url.slice(pathStart) : url.slice(pathStart, query));
    if (!match) return undefined;
    return answer(request, server, match[1]!, match[2] === undefined ? "record" : "card");
  };

  /**
   * A Bun route handler for GET `ROUTES[kind]`: answers a hit, hands anything else to `fallback`
   * (the app), whose onRequest then knows not to try again.
   */
  const routeHandler =
    (kind: Kind, fallback: (request: Request) => Response | Promise<Response>) =>
    (request: Request & { params: { id: string } }, server: Server) => {
      const id = request.params.id;
      const hit = request.method === "GET" && ID.test(id) ? answer(request, server, id, kind) : miss(request);
      return hit ?? fallback(request);
    };

  return Object.assign(fromRequest, { routeHandler, routes: ROUTES });
}

export type FastRead = ReturnType<typeof createFastRead>;
