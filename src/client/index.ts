/**
 * A typed client for this registry's HTTP API.
 *
 * Request and response types are the server's own TypeBox schemas (`typeof Schema.static`), imported
 * as types only: this module has no runtime dependency on the server, and a schema change that breaks
 * a caller breaks `tsc`. Every method names its route in ROUTES, and test/client.test.ts checks each
 * one against the OpenAPI document the server serves at /docs/json.
 *
 *   const registry = createRegistryClient({ baseUrl: "https://registry.example.com" });
 *   await registry.authenticate({ clientId, clientSecret });
 *   const agent = await registry.agents.publish({ card });
 *   for await (const page of registry.changesPages()) ...
 *
 * Errors: any non-2xx answer throws RegistryError (status, code, detail, field errors, request id,
 * Retry-After), built from the problem+json body (or the OAuth error body of /oauth/token).
 */
import type {
  AgentList,
  AgentRecord,
  EntitlementList,
  ListQuery,
  PatchBody,
  PublishBody,
  VersionList,
} from "../modules/agents/model";
import type {
  ClientCreateBody,
  ClientCreated,
  ClientList,
  Scope,
  TokenResponse,
} from "../modules/auth/model";
import type { AiCatalog } from "../modules/catalog/model";
import type {
  CompatAgentInfo,
  CompatPageQuery,
  CompatPublicList,
  CompatPublishBody,
  CompatPublishResult,
  CompatSearchBody,
  CompatSearchResult,
} from "../modules/compat/model";
import type {
  ChangesPage,
  ChangesQuery,
  PeerCreateBody,
  PeerList,
  PeerPatchBody,
  PeerRecord,
  PeerSyncList,
  SyncAccepted,
} from "../modules/federation/model";
import type { RefreshResult } from "../modules/liveness/model";
import type {
  AgentsIndex,
  AuditPage,
  AuditQuery,
  HealthResponse,
  IndexQuery,
  ReadinessResponse,
} from "../modules/ops/model";
import type { SearchQuery, SearchResponse } from "../modules/search/model";
import type { StatsQuery, StatsResponse } from "../modules/stats/model";
import type {
  CreatedWebhook,
  CreateWebhookBody,
  DeliveriesQuery,
  DeliveryList,
  Webhook,
  WebhookList,
} from "../modules/webhooks/model";

export type AgentRecordValue = typeof AgentRecord.static;
export type AgentPage = typeof AgentList.static;
export type PublishInput = typeof PublishBody.static;
export type PatchInput = typeof PatchBody.static;
export type ListFilters = typeof ListQuery.static;
export type Versions = typeof VersionList.static;
export type Entitlements = typeof EntitlementList.static;
export type Token = typeof TokenResponse.static;
export type ClientCreateInput = typeof ClientCreateBody.static;
export type CreatedClient = typeof ClientCreated.static;
export type Clients = typeof ClientList.static;
export type SearchFilters = typeof SearchQuery.static;
export type SearchResults = typeof SearchResponse.static;
export type ChangesFilters = typeof ChangesQuery.static;
export type ChangesPageValue = typeof ChangesPage.static;
export type PeerInput = typeof PeerCreateBody.static;
export type PeerPatch = typeof PeerPatchBody.static;
export type Peer = typeof PeerRecord.static;
export type Peers = typeof PeerList.static;
export type PeerSyncs = typeof PeerSyncList.static;
export type SyncAcceptedValue = typeof SyncAccepted.static;
export type WebhookInput = typeof CreateWebhookBody.static;
export type WebhookValue = typeof Webhook.static;
export type CreatedWebhookValue = typeof CreatedWebhook.static;
export type Webhooks = typeof WebhookList.static;
export type DeliveriesFilters = typeof DeliveriesQuery.static;
export type Deliveries = typeof DeliveryList.static;
export type Refreshed = typeof RefreshResult.static;
export type AuditFilters = typeof AuditQuery.static;
export type Audit = typeof AuditPage.static;
export type StatsFilters = typeof StatsQuery.static;
export type Stats = typeof StatsResponse.static;
export type Health = typeof HealthResponse.static;
export type Readiness = typeof ReadinessResponse.static;
export type IndexFilters = typeof IndexQuery.static;
export type AgentsIndexValue = typeof AgentsIndex.static;
export type AiCatalogValue = typeof AiCatalog.static;
export type CompatPublishInput = typeof CompatPublishBody.static;
export type CompatPublished = typeof CompatPublishResult.static;
export type CompatPageFilters = typeof CompatPageQuery.static;
export type CompatPublic = typeof CompatPublicList.static;
export type CompatAgent = typeof CompatAgentInfo.static;
export type CompatSearchInput = typeof CompatSearchBody.static;
export type CompatSearch = typeof CompatSearchResult.static;

type Method = "GET" | "POST" | "PUT" | "PATCH" | "DELETE";

/** Every route the client calls, as OpenAPI method + path template (checked against /docs/json). */
export const ROUTES = {
  token: ["POST", "/oauth/token"],
  createClient: ["POST", "/v1/clients"],
  listClients: ["GET", "/v1/clients"],
  revokeClient: ["DELETE", "/v1/clients/{clientId}"],
  publishAgent: ["POST", "/v1/agents"],
  listAgents: ["GET", "/v1/agents"],
  getAgent: ["GET", "/v1/agents/{id}"],
  getCard: ["GET", "/v1/agents/{id}/card"],
  updateAgent: ["PUT", "/v1/agents/{id}"],
  patchAgent: ["PATCH", "/v1/agents/{id}"],
  deleteAgent: ["DELETE", "/v1/agents/{id}"],
  listVersions: ["GET", "/v1/agents/{id}/versions"],
  getVersion: ["GET", "/v1/agents/{id}/versions/{version}"],
  listEntitlements: ["GET", "/v1/agents/{id}/entitlements"],
  grantEntitlement: ["PUT", "/v1/agents/{id}/entitlements/{clientId}"],
  revokeEntitlement: ["DELETE", "/v1/agents/{id}/entitlements/{clientId}"],
  heartbeat: ["POST", "/v1/agents/{id}/heartbeat"],
  refresh: ["POST", "/v1/agents/{id}/refresh"],
  search: ["GET", "/v1/search"],
  changes: ["GET", "/v1/changes"],
  addPeer: ["POST", "/v1/peers"],
  listPeers: ["GET", "/v1/peers"],
  getPeer: ["GET", "/v1/peers/{id}"],
  updatePeer: ["PATCH", "/v1/peers/{id}"],
  removePeer: ["DELETE", "/v1/peers/{id}"],
  syncPeer: ["POST", "/v1/peers/{id}/sync"],
  peerSyncs: ["GET", "/v1/peers/{id}/syncs"],
  createWebhook: ["POST", "/v1/webhooks"],
  listWebhooks: ["GET", "/v1/webhooks"],
  getWebhook: ["GET", "/v1/webhooks/{id}"],
  deleteWebhook: ["DELETE", "/v1/webhooks/{id}"],
  webhookDeliveries: ["GET", "/v1/webhooks/{id}/deliveries"],
  audit: ["GET", "/v1/audit"],
  stats: ["GET", "/v1/stats"],
  health: ["GET", "/health"],
  ready: ["GET", "/health/ready"],
  registryCard: ["GET", "/.well-known/agent-card.json"],
  agentsIndex: ["GET", "/.well-known/agents/index.json"],
  aiCatalog: ["GET", "/.well-known/ai-catalog.json"],
  compatPublish: ["POST", "/agents/publish"],
  compatPublic: ["GET", "/agents/public"],
  compatAgent: ["GET", "/agents/{id}"],
  compatCard: ["GET", "/agents/{id}/card"],
  compatSearch: ["POST", "/agents/search"],
} as const satisfies Record<string, readonly [Method, string]>;
export type RouteName = keyof typeof ROUTES;

/** A problem+json (or OAuth) error answer. */
export class RegistryError extends Error {
  constructor(
    readonly status: number,
    /** The problem code (VALIDATION_FAILED, NOT_FOUND, ...) or the OAuth error (invalid_client, ...). */
    readonly code: string,
    readonly detail: string,
    readonly body: unknown,
    readonly route: RouteName,
    readonly errors: { path: string; message: string }[] = [],
    readonly requestId: string | null = null,
    /** Seconds, from Retry-After (429, 503). */
    readonly retryAfter: number | null = null,
  ) {
    super(`${ROUTES[route][0]} ${ROUTES[route][1]}: ${status} ${code}: ${detail}`);
    this.name = "RegistryError";
  }
}

/** A card as the registry serves it: its exact text, parsed value and strong ETag. */
export type CardDocument = { text: string; card: unknown; etag: string | null };

export type RegistryClientOptions = {
  /** The registry's base URL, e.g. https://registry.example.com (no trailing /v1). */
  baseUrl: string;
  /** A bearer token (POST /oauth/token), or set later with authenticate() / setToken(). */
  token?: string;
  /** A fetch to send requests with (tests pass `(request) => app.handle(request)`). */
  fetch?: (request: Request) => Promise<Response>;
  /** Per request, default 30 s. */
  timeoutMs?: number;
  /** Extra headers on every request (e.g. a User-Agent of your own). */
  headers?: Record<string, string>;
};

type Query = Record<string, string | number | boolean | undefined | null>;
type Params = Record<string, string>;
type CallOptions = { params?: Params; query?: Query; json?: unknown; form?: Record<string, string> };

const fill = (template: string, params: Params = {}) =>
  template.replace(/\{([A-Za-z0-9_]+)\}/g, (_, name: string) => {
    const value = params[name];
    if (value === undefined) throw new TypeError(`missing path parameter ${name}`);
    return encodeURIComponent(value);
  });

const queryString = (query: Query = {}) => {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query))
    if (value !== undefined && value !== null) search.set(key, String(value));
  const text = search.toString();
  return text ? `?${text}` : "";
};

export function createRegistryClient(options: RegistryClientOptions) {
  const baseUrl = options.baseUrl.replace(/\/+$/, "");
  const send = options.fetch ?? ((request: Request) => fetch(request));
  const timeoutMs = options.timeoutMs ?? 30_000;
  let token = options.token;

  async function raw(route: RouteName, call: CallOptions = {}, extra: Record<string, string> = {}) {
    const [method, template] = ROUTES[route];
    const headers = new Headers({ accept: "application/json", ...options.headers, ...extra });
    let body: string | undefined;
    if (call.json !== undefined) {
      headers.set("content-type", "application/json");
      body = typeof call.json === "string" ? call.json : JSON.stringify(call.json);
    } else if (call.form !== undefined) {
      headers.set("content-type", "application/x-www-form-urlencoded");
      body = new URLSearchParams(call.form).toString();
    }
    if (token && !headers.has("authorization")) headers.set("authorization", `Bearer ${token}`);
    const url = `${baseUrl}${fill(template, call.params)}${queryString(call.query)}`;
    const response = await send(
      new Request(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) }),
    );
    if (response.status >= 400) throw await errorOf(route, response);
    return response;
  }

  async function errorOf(route: RouteName, response: Response) {
    const text = await response.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {}
    const problem = (body && typeof body === "object" ? body : {}) as Record<string, unknown>;
    const retryAfter = response.headers.get("retry-after");
    return new RegistryError(
      response.status,
      String(problem.code ?? problem.error ?? `HTTP_${response.status}`),
      String(problem.detail ?? problem.error_description ?? (text.slice(0, 300) || response.statusText)),
      body,
      route,
      Array.isArray(problem.errors) ? (problem.errors as { path: string; message: string }[]) : [],
      (typeof problem.requestId === "string" ? problem.requestId : null) ??
        response.headers.get("x-request-id"),
      retryAfter === null ? null : Number(retryAfter),
    );
  }

  const call = async <T>(route: RouteName, options: CallOptions = {}): Promise<T> =>
    (await (await raw(route, options)).json()) as T;
  const callVoid = async (route: RouteName, options: CallOptions = {}) => {
    await (await raw(route, options)).arrayBuffer();
  };
  const cardOf = async (route: RouteName, options: CallOptions): Promise<CardDocument> => {
    const response = await raw(route, options);
    const text = await response.text();
    return { text, card: JSON.parse(text), etag: response.headers.get("etag") };
  };

  /** Keyset pages until the last, each one as it arrives. */
  async function* pages<T extends { nextCursor: string | null }>(
    fetchPage: (cursor: string | undefined) => Promise<T>,
  ): AsyncGenerator<T> {
    let cursor: string | undefined;
    do {
      const page = await fetchPage(cursor);
      yield page;
      cursor = page.nextCursor ?? undefined;
    } while (cursor !== undefined);
  }

  const agents = {
    publish: (input: PublishInput) => call<AgentRecordValue>("publishAgent", { json: input }),
    list: (filters: ListFilters = {}) => call<AgentPage>("listAgents", { query: filters }),
    /** Every page of GET /v1/agents with these filters. */
    pages: (filters: Omit<ListFilters, "cursor"> = {}) =>
      pages((cursor) => agents.list({ ...filters, cursor })),
    get: (id: string) => call<AgentRecordValue>("getAgent", { params: { id } }),
    /** The card exactly as published (its text), parsed, with its ETag. */
    card: (id: string) => cardOf("getCard", { params: { id } }),
    update: (id: string, input: PublishInput) =>
      call<AgentRecordValue>("updateAgent", { params: { id }, json: input }),
    patch: (id: string, input: PatchInput) =>
      call<AgentRecordValue>("patchAgent", { params: { id }, json: input }),
    remove: (id: string) => callVoid("deleteAgent", { params: { id } }),
    versions: (id: string) => call<Versions>("listVersions", { params: { id } }),
    version: (id: string, version: string) => cardOf("getVersion", { params: { id, version } }),
    entitlements: (id: string) => call<Entitlements>("listEntitlements", { params: { id } }),
    grant: (id: string, clientId: string) => callVoid("grantEntitlement", { params: { id, clientId } }),
    revoke: (id: string, clientId: string) => callVoid("revokeEntitlement", { params: { id, clientId } }),
    heartbeat: (id: string) => callVoid("heartbeat", { params: { id } }),
    refresh: (id: string) => call<Refreshed>("refresh", { params: { id } }),
  };

  const peers = {
    add: (input: PeerInput) => call<Peer>("addPeer", { json: input }),
    list: () => call<Peers>("listPeers"),
    get: (id: string) => call<Peer>("getPeer", { params: { id } }),
    update: (id: string, input: PeerPatch) => call<Peer>("updatePeer", { params: { id }, json: input }),
    remove: (id: string) => callVoid("removePeer", { params: { id } }),
    sync: (id: string) => call<SyncAcceptedValue>("syncPeer", { params: { id } }),
    syncs: (id: string, limit?: number) => call<PeerSyncs>("peerSyncs", { params: { id }, query: { limit } }),
  };

  const webhooks = {
    create: (input: WebhookInput) => call<CreatedWebhookValue>("createWebhook", { json: input }),
    list: () => call<Webhooks>("listWebhooks"),
    get: (id: string) => call<WebhookValue>("getWebhook", { params: { id } }),
    remove: (id: string) => callVoid("deleteWebhook", { params: { id } }),
    deliveries: (id: string, filters: DeliveriesFilters = {}) =>
      call<Deliveries>("webhookDeliveries", { params: { id }, query: filters }),
  };

  const clients = {
    create: (input: ClientCreateInput) => call<CreatedClient>("createClient", { json: input }),
    list: () => call<Clients>("listClients"),
    revoke: (clientId: string) => callVoid("revokeClient", { params: { clientId } }),
  };

  /** The older Python registry's API (A2AReg), served by this registry under /agents. */
  const compat = {
    publish: (input: CompatPublishInput) => call<CompatPublished>("compatPublish", { json: input }),
    publicAgents: (filters: CompatPageFilters = {}) => call<CompatPublic>("compatPublic", { query: filters }),
    agent: (id: string) => call<CompatAgent>("compatAgent", { params: { id } }),
    card: (id: string) => cardOf("compatCard", { params: { id } }),
    search: (input: CompatSearchInput) => call<CompatSearch>("compatSearch", { json: input }),
  };

  return {
    baseUrl,
    /** The bearer token sent with every request (undefined: anonymous). */
    get token() {
      return token;
    },
    setToken(value: string | undefined) {
      token = value;
    },
    /** POST /oauth/token with client credentials (HTTP Basic); the token is then used for every call. */
    async authenticate(input: { clientId: string; clientSecret: string; scope?: Scope[] }): Promise<Token> {
      // Percent-encoded first (RFC 6749 2.3.1), so the credentials are ASCII and btoa works anywhere.
      const basic = btoa(`${encodeURIComponent(input.clientId)}:${encodeURIComponent(input.clientSecret)}`);
      const response = await raw(
        "token",
        {
          form: {
            grant_type: "client_credentials",
            ...(input.scope ? { scope: input.scope.join(" ") } : {}),
          },
        },
        { authorization: `Basic ${basic}` },
      );
      const issued = (await response.json()) as Token;
      token = issued.access_token;
      return issued;
    },
    agents,
    search: (filters: SearchFilters = {}) => call<SearchResults>("search", { query: filters }),
    /** Every page of a search (facets are counted on the first page only). */
    searchPages: (filters: Omit<SearchFilters, "cursor"> = {}) =>
      pages((cursor) =>
        call<SearchResults>("search", {
          query: { ...filters, cursor, ...(cursor ? { facets: false } : {}) },
        }),
      ),
    changes: (filters: ChangesFilters = {}) => call<ChangesPageValue>("changes", { query: filters }),
    /** The change feed from `since` (default 0) to its end, page by page (nextSince / hasMore). */
    async *changesPages(filters: ChangesFilters = {}): AsyncGenerator<ChangesPageValue> {
      let since = filters.since ?? 0;
      for (;;) {
        const page = await call<ChangesPageValue>("changes", { query: { since, limit: filters.limit } });
        yield page;
        if (!page.hasMore || page.nextSince <= since) return;
        since = page.nextSince;
      }
    },
    peers,
    webhooks,
    clients,
    audit: (filters: AuditFilters = {}) => call<Audit>("audit", { query: filters }),
    stats: (filters: StatsFilters = {}) => call<Stats>("stats", { query: filters }),
    health: () => call<Health>("health"),
    ready: () => call<Readiness>("ready"),
    registryCard: () => call<Record<string, unknown>>("registryCard"),
    agentsIndex: (filters: IndexFilters = {}) => call<AgentsIndexValue>("agentsIndex", { query: filters }),
    aiCatalog: (filters: { limit?: number; cursor?: string } = {}) =>
      call<AiCatalogValue>("aiCatalog", { query: filters }),
    compat,
  };
}

export type RegistryClient = ReturnType<typeof createRegistryClient>;
