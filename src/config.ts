import { type Static, Type as T } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import pkg from "../package.json" with { type: "json" };

/** A rate limit written as `N/period`, e.g. `600/60s`, `10/1m`, `5/1h`: a bucket of N refilled over period. */
export type RateLimit = { limit: number; periodMs: number };
export const ENDPOINT_CLASSES = ["token", "read", "search", "write", "admin"] as const;
export type EndpointClass = (typeof ENDPOINT_CLASSES)[number];

const Bool = T.Union([T.Literal("true"), T.Literal("false"), T.Literal("1"), T.Literal("0")]);
/** Digits only here; the range is checked where the value is converted, with a message naming the range. */
const Int = T.String({ pattern: "^[0-9]+$" });
const RateLimitText = T.String({ pattern: "^[0-9]+/[0-9]*(ms|s|m|h)$" });

/**
 * Every variable the registry reads. Values arrive as strings; the schema checks their shape and
 * `parseConfig` converts them. Variables not listed here are ignored (the environment holds many).
 */
export const EnvSchema = T.Object({
  APP_NAME: T.Optional(T.String({ minLength: 1, maxLength: 100 })),
  APP_VERSION: T.Optional(T.String({ minLength: 1, maxLength: 50 })),
  DEBUG: T.Optional(Bool),
  PORT: T.Optional(Int),
  HOST: T.Optional(T.String({ minLength: 1 })),
  DATABASE_URL: T.Optional(T.String({ pattern: "^postgres(ql)?://" })),
  DATABASE_POOL_MAX: T.Optional(Int),
  DATA_DIR: T.Optional(T.String({ minLength: 1 })),
  REDIS_URL: T.Optional(T.String({ pattern: "^rediss?://" })),
  ELASTICSEARCH_URL: T.Optional(T.String({ pattern: "^https?://" })),
  SECRET_KEY: T.Optional(T.String({ minLength: 32 })),
  ALGORITHM: T.Optional(T.Union([T.Literal("HS256"), T.Literal("HS384"), T.Literal("HS512")])),
  ACCESS_TOKEN_EXPIRE_MINUTES: T.Optional(Int),
  REGISTRY_BASE_URL: T.Optional(T.String({ pattern: "^https?://[^\\s]+$" })),
  REGISTRY_ID: T.Optional(T.String({ pattern: "^[A-Za-z0-9._:-]{1,100}$" })),
  MAX_AGENTS_PER_CLIENT: T.Optional(Int),
  ENABLE_FEDERATION: T.Optional(Bool),
  FEDERATION_INTERVAL_SECONDS: T.Optional(Int),
  FEDERATION_TOMBSTONE_RETENTION_HOURS: T.Optional(Int),
  FEDERATION_PAGE_SIZE: T.Optional(Int),
  FEDERATION_REQUEST_TIMEOUT_MS: T.Optional(Int),
  FEDERATION_MAX_BACKOFF_SECONDS: T.Optional(Int),
  FEDERATION_CONCURRENCY: T.Optional(Int),
  ADMIN_CLIENT_ID: T.Optional(T.String({ pattern: "^[A-Za-z0-9._~-]{3,100}$" })),
  ADMIN_CLIENT_SECRET: T.Optional(T.String({ minLength: 16, maxLength: 200 })),
  RATE_LIMIT_TOKEN: T.Optional(RateLimitText),
  RATE_LIMIT_READ: T.Optional(RateLimitText),
  RATE_LIMIT_SEARCH: T.Optional(RateLimitText),
  RATE_LIMIT_WRITE: T.Optional(RateLimitText),
  RATE_LIMIT_ADMIN: T.Optional(RateLimitText),
  TRUST_PROXY: T.Optional(Bool),
  WEB_CONCURRENCY: T.Optional(Int),
  LOG_LEVEL: T.Optional(
    T.Union(["fatal", "error", "warn", "info", "debug", "trace", "silent"].map((l) => T.Literal(l))),
  ),
  MAX_BODY_BYTES: T.Optional(Int),
  CARD_FETCH_TIMEOUT_MS: T.Optional(Int),
  CACHE_ENABLED: T.Optional(Bool),
  CACHE_L1_MAX_ENTRIES: T.Optional(Int),
  CACHE_L1_TTL_MS: T.Optional(Int),
  CACHE_REDIS_TTL_SECONDS: T.Optional(Int),
  PROBE_ENABLED: T.Optional(Bool),
  PROBE_INTERVAL_SECONDS: T.Optional(Int),
  PROBE_TIMEOUT_MS: T.Optional(Int),
  PROBE_CONCURRENCY: T.Optional(Int),
  HEALTH_DOWN_AFTER_SECONDS: T.Optional(Int),
  PROBE_SELF_PRESERVATION_PERCENT: T.Optional(Int),
  PROBE_SELF_PRESERVATION_MIN_PROBES: T.Optional(Int),
  HEARTBEAT_TTL_SECONDS: T.Optional(Int),
  WEBHOOK_TIMEOUT_MS: T.Optional(Int),
  WEBHOOK_MAX_ATTEMPTS: T.Optional(Int),
});
export type Env = Static<typeof EnvSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

const DEFAULT_RATE_LIMITS: Record<EndpointClass, string> = {
  token: "30/60s",
  read: "600/60s",
  search: "120/60s",
  write: "60/60s",
  admin: "120/60s",
};

/** A fixed, public key for development only: anyone can forge tokens with it, hence the DEBUG gate. */
const DEV_SECRET_KEY = "dev-only-insecure-secret-key-do-not-use-in-production";

const SECRET_VARIABLES = new Set(["SECRET_KEY", "ADMIN_CLIENT_SECRET"]);

/** Hides `user:password@` in URL-like values so a malformed DATABASE_URL never prints its password. */
function maskCredentials(value: string) {
  return value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, "$1***@");
}

function parseRateLimit(name: string, text: string): RateLimit {
  const match = /^([0-9]+)\/([0-9]*)(ms|s|m|h)$/.exec(text);
  if (!match) throw new ConfigError(`${name}: expected N/period such as 600/60s, got "${text}"`);
  const limit = Number(match[1]);
  const amount = match[2] === "" ? 1 : Number(match[2]);
  const unitMs = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[3] as "ms" | "s" | "m" | "h"];
  const periodMs = amount * unitMs;
  if (limit < 1 || periodMs < 1)
    throw new ConfigError(`${name}: limit and period must be positive, got "${text}"`);
  return { limit, periodMs };
}

function toBool(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  return value === "true" || value === "1";
}

/**
 * Parses the environment once. Throws ConfigError naming the first offending variable, so boot can stop
 * with a message an operator can act on. Empty strings count as unset (compose files often pass `X=`).
 * Tools that never sign tokens (the CLI) pass `requireSecret: false`.
 */
export function parseConfig(
  source: Record<string, string | undefined> = process.env,
  options: { requireSecret?: boolean } = {},
) {
  const env: Record<string, string> = {};
  for (const key of Object.keys(EnvSchema.properties)) {
    const value = source[key];
    if (value !== undefined && value !== "") env[key] = value;
  }
  const firstError = Value.Errors(EnvSchema, env).First();
  if (firstError) {
    const variable = firstError.path.replace(/^\//, "");
    const shown = SECRET_VARIABLES.has(variable) ? "(hidden)" : `"${maskCredentials(env[variable] ?? "")}"`;
    throw new ConfigError(`${variable}: ${firstError.message} (got ${shown})`);
  }
  const int = (key: keyof Env, fallback: number, min: number, max: number) => {
    const text = env[key];
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isSafeInteger(value) || value < min || value > max)
      throw new ConfigError(`${key}: expected an integer from ${min} to ${max} (got "${text}")`);
    return value;
  };

  const debug = toBool(env.DEBUG, false);
  if (!debug && env.SECRET_KEY === undefined && options.requireSecret !== false)
    throw new ConfigError("SECRET_KEY: required when DEBUG is false (at least 32 characters)");
  if ((env.ADMIN_CLIENT_ID === undefined) !== (env.ADMIN_CLIENT_SECRET === undefined))
    throw new ConfigError("ADMIN_CLIENT_ID / ADMIN_CLIENT_SECRET: set both or neither");

  const port = int("PORT", 8000, 0, 65535);
  const rateLimits = {} as Record<EndpointClass, RateLimit>;
  for (const cls of ENDPOINT_CLASSES) {
    const key = `RATE_LIMIT_${cls.toUpperCase()}` as keyof Env;
    rateLimits[cls] = parseRateLimit(key, env[key] ?? DEFAULT_RATE_LIMITS[cls]);
  }
  const baseUrl = (env.REGISTRY_BASE_URL ?? `http://localhost:${port}`).replace(/\/+$/, "");

  return {
    appName: env.APP_NAME ?? "A2A Agent Registry",
    appVersion: env.APP_VERSION ?? pkg.version,
    debug,
    port,
    host: env.HOST ?? "0.0.0.0",
    databaseUrl: env.DATABASE_URL,
    databasePoolMax: int("DATABASE_POOL_MAX", 20, 1, 1000),
    dataDir: env.DATA_DIR ?? "./data",
    redisUrl: env.REDIS_URL,
    elasticsearchUrl: env.ELASTICSEARCH_URL,
    secretKey: env.SECRET_KEY ?? DEV_SECRET_KEY,
    secretKeyIsDevDefault: env.SECRET_KEY === undefined,
    algorithm: env.ALGORITHM ?? "HS256",
    accessTokenExpireMinutes: int("ACCESS_TOKEN_EXPIRE_MINUTES", 30, 1, 60 * 24 * 30),
    registryBaseUrl: baseUrl,
    registryId: env.REGISTRY_ID ?? new URL(baseUrl).host,
    maxAgentsPerClient: int("MAX_AGENTS_PER_CLIENT", 1000, 0, 10_000_000),
    enableFederation: toBool(env.ENABLE_FEDERATION, true),
    federationIntervalSeconds: int("FEDERATION_INTERVAL_SECONDS", 30, 1, 86_400),
    federation: {
      /** Deleted agents stay in the change feed this long; 0 purges them at the next maintenance pass. */
      tombstoneRetentionHours: int("FEDERATION_TOMBSTONE_RETENTION_HOURS", 168, 0, 87_600),
      /** Changes asked for per feed page when pulling from a peer (the feed serves at most 1000). */
      pageSize: int("FEDERATION_PAGE_SIZE", 500, 1, 1000),
      /** Time limit for each request to a peer (token, card, one feed page). */
      requestTimeoutMs: int("FEDERATION_REQUEST_TIMEOUT_MS", 10_000, 100, 300_000),
      /** Ceiling of the exponential backoff after consecutive failed syncs of a peer. */
      maxBackoffSeconds: int("FEDERATION_MAX_BACKOFF_SECONDS", 900, 1, 86_400),
      /** Peers synced at the same time by one worker. */
      concurrency: int("FEDERATION_CONCURRENCY", 4, 1, 64),
    },
    adminClient:
      env.ADMIN_CLIENT_ID && env.ADMIN_CLIENT_SECRET
        ? { clientId: env.ADMIN_CLIENT_ID, clientSecret: env.ADMIN_CLIENT_SECRET }
        : undefined,
    rateLimits,
    trustProxy: toBool(env.TRUST_PROXY, false),
    webConcurrency: env.WEB_CONCURRENCY === undefined ? undefined : int("WEB_CONCURRENCY", 1, 1, 256),
    logLevel: env.LOG_LEVEL ?? (debug ? "debug" : "info"),
    maxBodyBytes: int("MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
    cardFetchTimeoutMs: int("CARD_FETCH_TIMEOUT_MS", 5000, 100, 60_000),
    cardFetchMaxBytes: 256 * 1024,
    probe: {
      /** Liveness probes and drift checks of local agents (a background loop in every instance). */
      enabled: toBool(env.PROBE_ENABLED, true),
      /** Each agent is looked at about this often (plus or minus a fifth, so probes spread out). */
      intervalSeconds: int("PROBE_INTERVAL_SECONDS", 300, 1, 86_400),
      timeoutMs: int("PROBE_TIMEOUT_MS", 5000, 100, 60_000),
      concurrency: int("PROBE_CONCURRENCY", 16, 1, 256),
      /** An agent is declared down once its probes have failed for this long. */
      downAfterSeconds: int("HEALTH_DOWN_AFTER_SECONDS", 60, 0, 86_400),
      /** Above this share of failed probes in one round the prober suspects its own network. */
      selfPreservationPercent: int("PROBE_SELF_PRESERVATION_PERCENT", 85, 1, 100),
      /** Rounds with fewer probes than this never trigger self-preservation (too little evidence). */
      selfPreservationMinProbes: int("PROBE_SELF_PRESERVATION_MIN_PROBES", 10, 1, 100_000),
      /** A heartbeat keeps an agent up (without probes) for this long. */
      heartbeatTtlSeconds: int("HEARTBEAT_TTL_SECONDS", 90, 1, 86_400),
    },
    webhooks: {
      timeoutMs: int("WEBHOOK_TIMEOUT_MS", 5000, 100, 60_000),
      /** Attempts per delivery before it is marked failed (backoff doubles from 10 s, capped at 1 h). */
      maxAttempts: int("WEBHOOK_MAX_ATTEMPTS", 10, 1, 100),
    },
    cache: {
      enabled: toBool(env.CACHE_ENABLED, true),
      l1MaxEntries: int("CACHE_L1_MAX_ENTRIES", 20_000, 0, 10_000_000),
      // Only bounds staleness should an invalidation be lost while the channel looks connected (a
      // disconnect already empties L1); short next to the Redis TTL, long enough to serve hot sets.
      l1TtlMs: int("CACHE_L1_TTL_MS", 30_000, 0, 3_600_000),
      redisTtlSeconds: int("CACHE_REDIS_TTL_SECONDS", 300, 1, 86_400 * 30),
    },
  };
}

export type Config = ReturnType<typeof parseConfig>;

/** Config for tests and tools: defaults plus overrides, without reading process.env. */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return { ...parseConfig({ DEBUG: "true", LOG_LEVEL: "silent" }), ...overrides };
}
