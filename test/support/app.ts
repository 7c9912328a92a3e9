import { type App, createApp, createDependencies, type Dependencies } from "../../src/app";
import { type Config, testConfig } from "../../src/config";
import type { SafeFetchOptions } from "../../src/infra/http";
import { createLogger } from "../../src/infra/logger";
import { createMetrics } from "../../src/infra/metrics";
import { createRedisClients } from "../../src/infra/redis";
import type { Scope } from "../../src/modules/auth/model";
import { type BackendName, createTestDatabase, type TestDatabase } from "./db";

export const BASE = "http://localhost";

export type TestApp = {
  app: App;
  config: Config;
  db: TestDatabase;
  /** Sends a request through app.handle; `json` bodies are serialised with the JSON content type. */
  request(
    path: string,
    init?: RequestInit & { json?: unknown; token?: string | null; form?: Record<string, string> },
  ): Promise<Response>;
  /** A new client with the given scopes and a fresh access token for it. */
  client(scopes: Scope[], name?: string): Promise<{ clientId: string; clientSecret: string; token: string }>;
  close(): Promise<void>;
};

export async function createTestApp(
  backend: BackendName,
  options: {
    config?: Partial<Config>;
    fetchOptions?: Partial<SafeFetchOptions>;
    db?: TestDatabase;
    /** Redis URL: the app gets its own connections to it, closed with the app. */
    redisUrl?: string;
    /** An Elasticsearch client (the tests' fake): search uses the Elasticsearch backend. */
    elasticsearch?: Dependencies["elasticsearch"];
  } = {},
): Promise<TestApp> {
  // Suites that are not about rate limiting send far more than the production defaults allow.
  const generous = { limit: 1_000_000, periodMs: 1000 };
  const config = testConfig({
    rateLimits: { token: generous, read: generous, search: generous, write: generous, admin: generous },
    ...options.config,
  });
  const db = options.db ?? (await createTestDatabase(backend));
  const deps = await createDependencies(config, {
    database: db.database,
    logger: createLogger("silent"),
    metrics: createMetrics({ collectProcessMetrics: false }),
    fetchOptions: options.fetchOptions,
    redis: options.redisUrl ? createRedisClients(options.redisUrl, createLogger("silent")) : undefined,
    elasticsearch: options.elasticsearch,
  });
  if (deps.redis && !(await deps.redis.ready(5000)))
    throw new Error(`Redis at ${options.redisUrl} is unreachable`);
  const app = createApp(deps);

  const request: TestApp["request"] = (path, init = {}) => {
    const { json, token, form, ...rest } = init;
    const headers = new Headers(rest.headers);
    let body = rest.body;
    if (json !== undefined) {
      headers.set("content-type", "application/json");
      body = typeof json === "string" ? json : JSON.stringify(json);
    }
    if (form !== undefined) {
      headers.set("content-type", "application/x-www-form-urlencoded");
      body = new URLSearchParams(form).toString();
    }
    if (token) headers.set("authorization", `Bearer ${token}`);
    return app.handle(new Request(`${BASE}${path}`, { ...rest, headers, body }));
  };

  const client: TestApp["client"] = async (scopes, name = "test client") => {
    const created = await app.services.auth.createClient({ name, scopes });
    const token = await app.services.auth.issueToken({
      clientId: created.client_id,
      clientSecret: created.client_secret,
      scope: undefined,
    });
    return { clientId: created.client_id, clientSecret: created.client_secret, token: token.access_token };
  };

  return {
    app,
    config,
    db,
    request,
    client,
    close: async () => {
      if (app.server) await app.stop();
      await app.services.searchIndexer.stop();
      await app.services.limiter.close();
      await deps.redis?.close();
      if (!options.db) await db.drop();
    },
  };
}

/** Reads a response body as JSON, failing loudly with the text when it is not JSON. */
export async function json<T = Record<string, unknown>>(response: Response): Promise<T> {
  const text = await response.text();
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new Error(`Expected JSON (status ${response.status}), got: ${text.slice(0, 300)}`);
  }
}
