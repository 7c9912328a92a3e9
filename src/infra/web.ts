import { Elysia } from "elysia";
import type { Config } from "../config";
import { ApiError, ERROR_CODES, type ErrorCode, type FieldError, problemResponse } from "../errors";
import { storableText } from "./db/client";
import type { Logger } from "./logger";
import type { Metrics } from "./metrics";

/** Per-request facts gathered before routing and read by the access log, audit and rate limiter. */
export type RequestState = {
  startedAt: number;
  requestId: string;
  ip: string | null;
  clientId: string | null;
};

const REQUEST_ID_PATTERN = /^[A-Za-z0-9._:@-]{1,128}$/;

/** The caller's X-Request-ID when it is a sane token, else a new one. */
export function requestIdOf(request: Request): string {
  const incoming = request.headers.get("x-request-id");
  return incoming && REQUEST_ID_PATTERN.test(incoming) ? incoming : crypto.randomUUID();
}

/**
 * What every answered request leaves behind: its metrics, and an access-log line when info is enabled
 * (decided once: building the line is work even when pino would drop it).
 */
export function createAccessRecorder(deps: { metrics: Metrics; logger: Logger }) {
  const { metrics, logger } = deps;
  const accessLog = logger.isLevelEnabled("info");
  type Who = { requestId: string; clientId: string | null; ip: string | null };
  const finish = (
    observe: (seconds: number) => void,
    method: string,
    route: string,
    status: number,
    startedAt: number,
    who: Who,
  ) => {
    const seconds = (performance.now() - startedAt) / 1000;
    observe(seconds);
    if (accessLog)
      logger.info(
        {
          requestId: who.requestId,
          method,
          route,
          status,
          durationMs: Math.round(seconds * 100_000) / 100,
          clientId: who.clientId,
          ip: who.ip,
        },
        "request",
      );
  };
  const record = (method: string, route: string, status: number, startedAt: number, who: Who) =>
    finish(metrics.requests.recorderFor(method, route, status), method, route, status, startedAt, who);
  /** `record` bound to one method, route and status, for a hot path that answers few kinds. */
  const recordAs = (method: string, route: string, status: number) => {
    const observe = metrics.requests.recorderFor(method, route, status);
    return (startedAt: number, who: Who) => finish(observe, method, route, status, startedAt, who);
  };
  return Object.assign(record, { as: recordAs });
}

/** Exact request bodies, kept so a card can be stored byte for byte as its publisher sent it. */
export type RawBodies = WeakMap<Request, string>;

export const SECURITY_HEADERS: Record<string, string> = {
  "strict-transport-security": "max-age=63072000; includeSubDomains",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-resource-policy": "same-site",
};

/** Swagger UI loads its script and styles from a CDN; only /docs gets a policy that allows it. */
const DOCS_CSP =
  "default-src 'none'; script-src 'unsafe-inline' https://unpkg.com; style-src 'unsafe-inline' https://unpkg.com; " +
  "img-src 'self' data: https://unpkg.com; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

export function clientIp(
  request: Request,
  server: { requestIP(r: Request): { address: string } | null } | null,
  trustProxy: boolean,
) {
  if (trustProxy) {
    // The proxy in front of us appends the address it saw as the last entry; earlier ones are client-supplied.
    const forwarded = request.headers.get("x-forwarded-for");
    const last = forwarded?.split(",").pop()?.trim();
    if (last) return last;
    const real = request.headers.get("x-real-ip");
    if (real) return real.trim();
  }
  return server?.requestIP(request)?.address ?? null;
}

/**
 * Bun's idleTimeout for the server (src/index.ts): a connection whose request has not been answered
 * within this many seconds is closed. Bun does not restart the timer for body bytes, so a body sent a
 * byte at a time is cut off after this long, like a silent one. Long enough for the slowest honest
 * request (a peer validated with three outbound calls, or a card fetched by URL), short enough that a
 * slowloris holds a connection for half a minute at most.
 */
export const REQUEST_IDLE_TIMEOUT_SECONDS = 30;

/** Reads a body up to `limit` bytes, failing as soon as the stream passes it, without buffering the rest. */
export async function readBodyText(request: Request, limit: number): Promise<string> {
  if (!request.body) return "";
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch {
      // The client went away or Bun's idleTimeout closed a body that trickled in too slowly: the
      // caller's fault, not a server error (nobody may be left to read this answer).
      throw new ApiError("VALIDATION_FAILED", "The request body was not received completely", {
        headers: { connection: "close" },
      });
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      // The rest is never read: the connection closes after this answer rather than draining it.
      throw new ApiError("PAYLOAD_TOO_LARGE", `Request body exceeds ${limit} bytes`, {
        headers: { connection: "close" },
      });
    }
    chunks.push(value);
  }
  const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    throw new ApiError("VALIDATION_FAILED", "Request body is not valid UTF-8");
  }
}

/**
 * Deepest nesting of arrays and objects a JSON request body may have. Far above any real body (a card
 * may nest 32 levels: CARD_LIMITS.depth), and low enough that recursive code downstream (validation,
 * and the validation error that serialises the value it rejects) cannot exhaust the stack.
 */
export const MAX_JSON_DEPTH = 64;

/** Whether JSON text nests deeper than `max` (strings skipped); linear and iterative. */
export function nestsDeeperThan(text: string, max: number): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22) {
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/**
 * Whether JSON text can decode to a NUL or a lone surrogate at all. The text was decoded as strict
 * UTF-8 (no lone surrogates) and JSON forbids raw control characters in strings, so both can only come
 * from a `\u0000` or `\uD800`-`\uDFFF` escape: text without one needs no walk over the parsed value.
 * (An escaped backslash before a literal "u0000" matches too; that only costs the walk.)
 */
export const mayHoldUnstorable = (jsonText: string) => /\\u(?:0000|[dD][89a-fA-F])/.test(jsonText);

/**
 * The path (JSON pointer under `base`) of the first string, key or value, that Postgres cannot store
 * as text: one holding U+0000 (NUL) or a lone surrogate (not Unicode, so not UTF-8). Iterative.
 */
export function unstorableStringPath(value: unknown, base: string): string | undefined {
  const stack: Array<[unknown, string]> = [[value, base]];
  while (stack.length > 0) {
    const [node, path] = stack.pop()!;
    if (typeof node === "string") {
      if (!storableText(node)) return path;
    } else if (Array.isArray(node)) {
      for (let i = node.length - 1; i >= 0; i--) stack.push([node[i], `${path}/${i}`]);
    } else if (node !== null && typeof node === "object") {
      for (const [key, child] of Object.entries(node)) {
        const childPath = `${path}/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`;
        if (!storableText(key)) return childPath;
        stack.push([child, childPath]);
      }
    }
  }
  return undefined;
}

const unstorable = (path: string) =>
  new ApiError("VALIDATION_FAILED", `${path} holds a NUL character or a lone surrogate`, {
    errors: [{ path, message: "NUL characters and lone surrogates are not accepted" }],
  });

function formToObject(text: string): Record<string, string | string[]> {
  const result: Record<string, string | string[]> = Object.create(null);
  for (const [key, value] of new URLSearchParams(text)) {
    if (key.includes("\0") || value.includes("\0")) throw unstorable(`/body/${key.replaceAll("\0", "")}`);
    const existing = result[key];
    if (existing === undefined) result[key] = value;
    else result[key] = Array.isArray(existing) ? [...existing, value] : [existing, value];
  }
  return result;
}

function validationErrors(error: unknown, request: Request): FieldError[] {
  const source = error as {
    all?: Array<{ path?: string; message?: string; summary?: string; value?: unknown }>;
    type?: string;
  };
  const where = source.type ?? "";
  const list = Array.isArray(source.all) ? source.all : [];
  return list.slice(0, 50).map((e) => {
    let path = `/${where}${e.path ?? ""}`;
    // Elysia checks a converted query number on its own ("property") and drops its name; find it again.
    if (where === "property") {
      const params = new URL(request.url).searchParams;
      const name = [...params.keys()].find((key) => Number(params.get(key)) === e.value);
      path = name === undefined ? "/query" : `/query/${name}`;
    }
    return { path, message: e.summary ?? e.message ?? "Invalid value" };
  });
}

const DB_UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "57P01",
  "57P02",
  "57P03",
  "53300",
]);

function isDependencyFailure(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && DB_UNAVAILABLE_CODES.has(code)) return true;
    const message = (current as { message?: unknown }).message;
    if (typeof message === "string" && /embedded database is closed|PGlite is closed/i.test(message))
      return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * The state of a request the pipeline saw arrive. The client address is looked up on first use: Bun's
 * requestIP costs a system call and an object per request, a measurable share of a cheap request, and
 * most requests (exempt routes, clients known by token) never need it.
 */
class LiveRequestState implements RequestState {
  readonly startedAt = performance.now();
  clientId: string | null = null;
  private address: string | null | undefined;

  constructor(
    public requestId: string,
    private readonly request: Request,
    private readonly server: Parameters<typeof clientIp>[1],
    private readonly trustProxy: boolean,
  ) {}

  get ip(): string | null {
    if (this.address === undefined) this.address = clientIp(this.request, this.server, this.trustProxy);
    return this.address;
  }

  set ip(address: string | null) {
    this.address = address;
  }
}

/** Request state and raw bodies live beside the Request object, not in globals, one set per app. */
export function createRequestContext() {
  const states = new WeakMap<Request, RequestState>();
  const rawBodies: RawBodies = new WeakMap();
  const stateOf = (request: Request): RequestState => {
    let state = states.get(request);
    if (!state) {
      state = { startedAt: performance.now(), requestId: crypto.randomUUID(), ip: null, clientId: null };
      states.set(request, state);
    }
    return state;
  };
  return { states, stateOf, rawBodies };
}
export type RequestContext = ReturnType<typeof createRequestContext>;

/**
 * Cross-cutting HTTP behaviour shared by every route: request ids, security headers, the body limit,
 * JSON and form parsing (keeping the raw text), the one error handler, the access log and request metrics.
 */
export function webPipeline(deps: {
  /** Answers a request before routing when it can do so synchronously (the cached agent read). */
  fastPath?: (request: Request, server: Parameters<typeof clientIp>[1]) => Response | undefined;
  config: Config;
  logger: Logger;
  metrics: Metrics;
  requests: RequestContext;
}) {
  const { config, logger, metrics } = deps;
  const { states, stateOf, rawBodies } = deps.requests;

  const record = createAccessRecorder({ metrics, logger });
  const finish = (request: Request, route: string | undefined, status: number) => {
    const state = stateOf(request);
    record(request.method, route || "unmatched", status, state.startedAt, state);
  };

  return (
    new Elysia({ name: "web-pipeline" })
      .onRequest(({ request, set, server }) => {
        // First, before set.headers is touched: a Response returned with empty set.headers is sent as is.
        if (deps.fastPath) {
          const fast = deps.fastPath(request, server);
          if (fast) return fast;
        }
        const state = new LiveRequestState(requestIdOf(request), request, server, config.trustProxy);
        states.set(request, state);
        Object.assign(set.headers, SECURITY_HEADERS);
        set.headers["x-request-id"] = state.requestId;
        const path = request.url.slice(request.url.indexOf("/", 8));
        if (path.startsWith("/docs")) set.headers["content-security-policy"] = DOCS_CSP;
        // U+0000 can be in no stored value or key (Postgres text cannot hold it): refused for every route.
        const nul = path.includes("%") ? path.search(/%00/i) : -1;
        if (nul >= 0) {
          const query = path.indexOf("?");
          throw unstorable(query >= 0 && query < nul ? "/query" : "/params");
        }

        const declared = request.headers.get("content-length");
        // Thrown rather than returned so the error handler, access log and metrics see it like any error.
        if (declared !== null && Number(declared) > config.maxBodyBytes)
          throw new ApiError(
            "PAYLOAD_TOO_LARGE",
            `Request body of ${declared} bytes exceeds the limit of ${config.maxBodyBytes} bytes`,
            { headers: { connection: "close" } },
          );
      })
      .onParse({ as: "global" }, async ({ request, contentType }) => {
        const type = contentType.split(";")[0]!.trim().toLowerCase();
        if (type === "application/json" || type.endsWith("+json")) {
          const text = await readBodyText(request, config.maxBodyBytes);
          rawBodies.set(request, text);
          if (text.trim() === "")
            throw new ApiError("VALIDATION_FAILED", "Request body is empty; expected JSON");
          if (nestsDeeperThan(text, MAX_JSON_DEPTH))
            throw new ApiError(
              "VALIDATION_FAILED",
              `Request body nests deeper than ${MAX_JSON_DEPTH} levels`,
              {
                errors: [{ path: "/body", message: `Nesting deeper than ${MAX_JSON_DEPTH} levels` }],
              },
            );
          let value: unknown;
          try {
            value = JSON.parse(text);
          } catch {
            throw new ApiError("VALIDATION_FAILED", "Request body is not valid JSON");
          }
          const unsafe = mayHoldUnstorable(text) ? unstorableStringPath(value, "/body") : undefined;
          if (unsafe !== undefined) throw unstorable(unsafe);
          return value;
        }
        if (type === "application/x-www-form-urlencoded") {
          return formToObject(await readBodyText(request, config.maxBodyBytes));
        }
        if (request.body && type !== "") {
          throw new ApiError(
            "VALIDATION_FAILED",
            `Unsupported content type "${type}"; send application/json (or a form for /oauth/token)`,
          );
        }
        return undefined;
      })
      .onError({ as: "global" }, (context) => {
        const { code, error: thrown, request, path, set } = context;
        const state = stateOf(request);
        // Elysia wraps whatever a parser throws in its own ParseError; the ApiError inside is the real answer.
        const cause = (thrown as { cause?: unknown }).cause;
        const error = code === "PARSE" && cause instanceof ApiError ? cause : thrown;
        let apiCode: ErrorCode;
        let detail: string;
        let errors: FieldError[] | undefined;
        let headers: Record<string, string> = {};
        if (error instanceof ApiError) {
          apiCode = error.code;
          detail = error.detail;
          errors = error.options.errors;
          headers = error.options.headers ?? {};
        } else if (code === "VALIDATION") {
          apiCode = "VALIDATION_FAILED";
          errors = validationErrors(error, request);
          detail = errors.length
            ? `Invalid request: ${errors
                .slice(0, 3)
                .map((e) => `${e.path} ${e.message}`)
                .join("; ")}`
            : "Invalid request";
        } else if (code === "PARSE") {
          apiCode = "VALIDATION_FAILED";
          detail = "Request body could not be parsed";
        } else if (code === "NOT_FOUND") {
          apiCode = "NOT_FOUND";
          detail = `No route for ${request.method} ${path}`;
        } else if (isDependencyFailure(error)) {
          apiCode = "DEPENDENCY_UNAVAILABLE";
          detail = "The database is unavailable; retry shortly";
          headers = { "retry-after": "5" };
          logger.error({ requestId: state.requestId, err: error }, "dependency unavailable");
        } else {
          apiCode = "INTERNAL";
          detail = "An unexpected error occurred; quote the request id when reporting it";
          logger.error({ requestId: state.requestId, err: error }, "unhandled error");
        }
        const responseHeaders = { ...SECURITY_HEADERS, "x-request-id": state.requestId, ...headers };
        const status =
          path === "/oauth/token" && apiCode === "VALIDATION_FAILED" ? 400 : ERROR_CODES[apiCode].status;
        set.status = status;
        finish(request, (context as { route?: string }).route, status);
        // RFC 6749 5.2 governs every error of the token endpoint, including bodies we cannot parse.
        if (path === "/oauth/token" && apiCode === "VALIDATION_FAILED")
          return new Response(JSON.stringify({ error: "invalid_request", error_description: detail }), {
            status: 400,
            headers: {
              ...responseHeaders,
              "content-type": "application/json",
              "cache-control": "no-store",
              pragma: "no-cache",
            },
          });
        return problemResponse(apiCode, detail, state.requestId, responseHeaders, errors);
      })
      // Recorded when the response is decided (after the handler, or in the error handler) rather than in
      // onAfterResponse, which Elysia defers with a setImmediate per request.
      .onAfterHandle({ as: "global" }, ({ request, route, set, response }) => {
        const status =
          response instanceof Response ? response.status : typeof set.status === "number" ? set.status : 200;
        finish(request, route, status);
      })
  );
}
