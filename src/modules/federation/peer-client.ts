/**
 * Talking to a peer registry: its token endpoint, its own card and its change feed. Every request goes
 * through the SSRF guard (src/infra/http.ts): https only and no private or loopback addresses unless
 * this registry runs with DEBUG, a time limit and a size cap on every answer. The token request is a
 * POST, which `safeFetch` does not do, so it validates the URL with the same guard and refuses redirects
 * (credentials are never re-sent to another location).
 */
import {
  assertAllowedUrl,
  OutboundFetchError,
  type SafeFetchOptions,
  safeFetch,
  safeFetchJson,
} from "../../infra/http";

/** A failure talking to a peer, worded for `lastError` (no secrets, no stack). */
export class PeerError extends Error {
  constructor(
    message: string,
    readonly kind: "network" | "timeout" | "auth" | "status" | "format" = "network",
  ) {
    super(message);
    this.name = "PeerError";
  }
}

export type PeerHttpOptions = {
  allowInsecure: boolean;
  timeoutMs: number;
  /** Tests inject DNS and fetch, as for card fetching. */
  lookup?: SafeFetchOptions["lookup"];
  fetchImpl?: SafeFetchOptions["fetchImpl"];
};

const TOKEN_MAX_BYTES = 64 * 1024;
const CARD_MAX_BYTES = 256 * 1024;
/** A feed page of 1000 records with large cards stays well under this. */
export const FEED_MAX_BYTES = 64 * 1024 * 1024;

const describe = (error: unknown) =>
  error instanceof OutboundFetchError || error instanceof PeerError
    ? error.message
    : error instanceof Error
      ? error.message
      : String(error);

/** Shortest useful excerpt of an error answer: a problem+json detail, else the start of the text. */
function excerpt(body: Uint8Array): string {
  const text = new TextDecoder().decode(body.subarray(0, 2000));
  try {
    const parsed = JSON.parse(text) as { detail?: unknown; error?: unknown; error_description?: unknown };
    const parts = [parsed.error, parsed.detail ?? parsed.error_description].filter(
      (p): p is string => typeof p === "string",
    );
    if (parts.length) return parts.join(": ").slice(0, 300);
  } catch {
    // not JSON
  }
  return text.replace(/\s+/g, " ").trim().slice(0, 120);
}

export function normalizeBaseUrl(input: string): string {
  const url = new URL(input);
  url.hash = "";
  url.search = "";
  return url.toString().replace(/\/+$/, "");
}

export type PeerToken = { accessToken: string; expiresAt: number };

/** client_credentials at the peer's /oauth/token (HTTP Basic), through the guard, without redirects. */
export async function obtainToken(
  baseUrl: string,
  clientId: string,
  clientSecret: string,
  options: PeerHttpOptions,
): Promise<PeerToken> {
  const url = `${baseUrl}/oauth/token`;
  const signal = AbortSignal.timeout(options.timeoutMs);
  try {
    const target = await assertAllowedUrl(url, options, signal);
    const fetchImpl = options.fetchImpl ?? ((u: string, init: RequestInit) => fetch(u, init));
    const basic = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString(
      "base64",
    );
    const response = await fetchImpl(target.href, {
      method: "POST",
      redirect: "manual",
      signal,
      headers: {
        authorization: `Basic ${basic}`,
        "content-type": "application/x-www-form-urlencoded",
        accept: "application/json",
      },
      body: "grant_type=client_credentials",
    });
    const declared = Number(response.headers.get("content-length") ?? "0");
    if (declared > TOKEN_MAX_BYTES) throw new PeerError("the token answer is too large", "format");
    const body = new Uint8Array(await response.arrayBuffer());
    if (body.byteLength > TOKEN_MAX_BYTES) throw new PeerError("the token answer is too large", "format");
    if (response.status >= 300 && response.status < 400)
      throw new PeerError(`the token endpoint redirects (HTTP ${response.status}); use the final base URL`);
    if (response.status === 400 || response.status === 401)
      throw new PeerError(`the peer refused the client credentials (${excerpt(body)})`, "auth");
    if (response.status !== 200)
      throw new PeerError(`the token endpoint answered HTTP ${response.status} (${excerpt(body)})`, "status");
    let parsed: { access_token?: unknown; expires_in?: unknown };
    try {
      parsed = JSON.parse(new TextDecoder().decode(body));
    } catch {
      throw new PeerError("the token endpoint did not answer JSON", "format");
    }
    if (typeof parsed.access_token !== "string" || parsed.access_token.length === 0)
      throw new PeerError("the token endpoint answered without an access_token", "format");
    const lifetime = typeof parsed.expires_in === "number" && parsed.expires_in > 0 ? parsed.expires_in : 300;
    // Renewed a little early (a tenth of its life, at most a minute) so a page never starts on a stale one.
    const margin = Math.min(60, lifetime / 10);
    return { accessToken: parsed.access_token, expiresAt: Date.now() + (lifetime - margin) * 1000 };
  } catch (error) {
    if (error instanceof PeerError) throw error;
    if (signal.aborted) throw new PeerError(`the token request timed out after ${options.timeoutMs} ms`);
    throw new PeerError(`could not obtain a token: ${describe(error)}`);
  }
}

/** The peer's own A2A card (/.well-known/agent-card.json, or the legacy agent.json). */
export async function fetchRegistryCard(
  baseUrl: string,
  options: PeerHttpOptions,
): Promise<{ name: string; card: Record<string, unknown> }> {
  const fetchOptions: SafeFetchOptions = { ...options, maxBytes: CARD_MAX_BYTES, maxRedirects: 3 };
  let lastError: unknown;
  for (const path of ["/.well-known/agent-card.json", "/.well-known/agent.json"]) {
    try {
      const { value } = await safeFetchJson(`${baseUrl}${path}`, fetchOptions);
      const card = value as Record<string, unknown>;
      if (typeof card !== "object" || card === null || typeof card.name !== "string")
        throw new PeerError(`${path} is not an A2A agent card (no name)`, "format");
      return { name: card.name, card };
    } catch (error) {
      lastError = error;
      // Only a missing document is worth trying the legacy location for.
      if (!(error instanceof OutboundFetchError && /status 404/.test(error.message))) break;
    }
  }
  throw new PeerError(`could not read the peer's agent card: ${describe(lastError)}`);
}

export type FeedAnswer =
  | { kind: "page"; text: string }
  | { kind: "expired"; detail: string }
  | { kind: "unauthorized"; detail: string }
  | { kind: "rate_limited"; retryAfterMs: number }
  | { kind: "too_large" };

/** One page of the peer's change feed. Errors other than the ones the engine handles are thrown. */
export async function fetchFeedPage(
  baseUrl: string,
  token: string,
  since: number,
  limit: number,
  options: PeerHttpOptions,
): Promise<FeedAnswer> {
  let result: Awaited<ReturnType<typeof safeFetch>>;
  try {
    result = await safeFetch(`${baseUrl}/v1/changes?since=${since}&limit=${limit}`, {
      ...options,
      maxBytes: FEED_MAX_BYTES,
      headers: { authorization: `Bearer ${token}` },
    });
  } catch (error) {
    if (error instanceof OutboundFetchError && error.reason === "too_large") return { kind: "too_large" };
    const timeout = error instanceof OutboundFetchError && error.reason === "timeout";
    throw new PeerError(`feed request failed: ${describe(error)}`, timeout ? "timeout" : "network");
  }
  const { status, body, headers } = result;
  if (status === 200) {
    try {
      return { kind: "page", text: new TextDecoder("utf-8", { fatal: true }).decode(body) };
    } catch {
      throw new PeerError("the feed page is not UTF-8 text", "format");
    }
  }
  if (status === 410) return { kind: "expired", detail: excerpt(body) };
  if (status === 401) return { kind: "unauthorized", detail: excerpt(body) };
  if (status === 429) {
    const seconds = Number(headers.get("retry-after") ?? "1");
    return { kind: "rate_limited", retryAfterMs: Math.min(60, Math.max(1, seconds || 1)) * 1000 };
  }
  if (status === 403)
    throw new PeerError(`the peer refused the feed to this client (403: ${excerpt(body)})`, "auth");
  throw new PeerError(`the feed answered HTTP ${status} (${excerpt(body)})`, "status");
}

export { describe as describePeerError };
