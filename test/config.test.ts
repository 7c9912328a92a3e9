import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ConfigError, parseConfig } from "../src/config";

const SECRET = "s3cr3t-value-for-tests-0123456789abcdef";
const PROD = { DEBUG: "false", SECRET_KEY: SECRET };

/** Runs parseConfig and returns the ConfigError it throws (failing when it does not throw one). */
function configError(env: Record<string, string | undefined>): ConfigError {
  try {
    parseConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(env)}`);
}

describe("parseConfig: defaults", () => {
  test("happy: production defaults with only SECRET_KEY", () => {
    const config = parseConfig(PROD);
    expect(config.port).toBe(8000);
    expect(config.algorithm).toBe("HS256");
    expect(config.accessTokenExpireMinutes).toBe(30);
    expect(config.debug).toBe(false);
    expect(config.secretKey).toBe(SECRET);
    expect(config.secretKeyIsDevDefault).toBe(false);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.dataDir).toBe("./data");
    expect(config.maxAgentsPerClient).toBe(1000);
    expect(config.enableFederation).toBe(true);
    expect(config.federationIntervalSeconds).toBe(30);
    expect(config.adminClient).toBeUndefined();
    expect(config.maxBodyBytes).toBe(1024 * 1024);
    expect(config.logLevel).toBe("info");
    expect(config.registryBaseUrl).toBe("http://localhost:8000");
  });

  test("happy: default rate limits parse to {limit, periodMs}", () => {
    const { rateLimits } = parseConfig(PROD);
    for (const cls of ["token", "read", "search", "write", "admin"] as const) {
      expect(Number.isInteger(rateLimits[cls].limit)).toBe(true);
      expect(rateLimits[cls].limit).toBeGreaterThan(0);
      expect(rateLimits[cls].periodMs).toBeGreaterThan(0);
    }
    expect(rateLimits.read).toEqual({ limit: 600, periodMs: 60_000 });
  });

  test("happy: rate limit units", () => {
    const config = parseConfig({
      ...PROD,
      RATE_LIMIT_READ: "10/1m",
      RATE_LIMIT_SEARCH: "5/h",
      RATE_LIMIT_WRITE: "100/500ms",
      RATE_LIMIT_TOKEN: "3/30s",
    });
    expect(config.rateLimits.read).toEqual({ limit: 10, periodMs: 60_000 });
    expect(config.rateLimits.search).toEqual({ limit: 5, periodMs: 3_600_000 });
    expect(config.rateLimits.write).toEqual({ limit: 100, periodMs: 500 });
    expect(config.rateLimits.token).toEqual({ limit: 3, periodMs: 30_000 });
  });

  test("happy: DEBUG without SECRET_KEY uses the dev key and says so", () => {
    const config = parseConfig({ DEBUG: "true" });
    expect(config.debug).toBe(true);
    expect(config.secretKeyIsDevDefault).toBe(true);
    expect(config.secretKey.length).toBeGreaterThanOrEqual(32);
    expect(config.logLevel).toBe("debug");
  });

  test("happy: explicit values are converted", () => {
    const config = parseConfig({
      ...PROD,
      PORT: "9000",
      ALGORITHM: "HS512",
      ACCESS_TOKEN_EXPIRE_MINUTES: "5",
      DATABASE_URL: "postgresql://u:p@db:5432/registry",
      REGISTRY_BASE_URL: "https://registry.example.com/",
      ADMIN_CLIENT_ID: "bootstrap-admin",
      ADMIN_CLIENT_SECRET: "admin-secret-0123456789",
      ENABLE_FEDERATION: "0",
      LOG_LEVEL: "warn",
    });
    expect(config.port).toBe(9000);
    expect(config.algorithm).toBe("HS512");
    expect(config.accessTokenExpireMinutes).toBe(5);
    expect(config.databaseUrl).toBe("postgresql://u:p@db:5432/registry");
    expect(config.registryBaseUrl).toBe("https://registry.example.com");
    expect(config.registryId).toBe("registry.example.com");
    expect(config.adminClient).toEqual({
      clientId: "bootstrap-admin",
      clientSecret: "admin-secret-0123456789",
    });
    expect(config.enableFederation).toBe(false);
    expect(config.logLevel).toBe("warn");
  });

  test("happy: empty strings count as unset", () => {
    const config = parseConfig({
      ...PROD,
      PORT: "",
      DATABASE_URL: "",
      ALGORITHM: "",
      RATE_LIMIT_READ: "",
      LOG_LEVEL: "",
      ADMIN_CLIENT_ID: "",
      ADMIN_CLIENT_SECRET: "",
      REDIS_URL: "",
    });
    expect(config.port).toBe(8000);
    expect(config.databaseUrl).toBeUndefined();
    expect(config.redisUrl).toBeUndefined();
    expect(config.algorithm).toBe("HS256");
    expect(config.rateLimits.read).toEqual({ limit: 600, periodMs: 60_000 });
    expect(config.logLevel).toBe("info");
    expect(config.adminClient).toBeUndefined();
  });

  test("happy: unrelated environment variables are ignored", () => {
    expect(() => parseConfig({ ...PROD, PATH: "/usr/bin", SOME_OTHER_THING: "x y z" })).not.toThrow();
  });
});

describe("parseConfig: errors", () => {
  test("errors: DEBUG=false without SECRET_KEY names SECRET_KEY", () => {
    expect(configError({ DEBUG: "false" }).message).toContain("SECRET_KEY");
    expect(configError({}).message).toContain("SECRET_KEY");
  });

  test("errors: an empty SECRET_KEY counts as unset", () => {
    expect(configError({ DEBUG: "false", SECRET_KEY: "" }).message).toContain("SECRET_KEY");
  });

  const cases: Array<[string, Record<string, string>]> = [
    ["PORT", { PORT: "abc" }],
    ["PORT", { PORT: "70000" }],
    ["PORT", { PORT: "-1" }],
    ["PORT", { PORT: "80.5" }],
    ["DATABASE_URL", { DATABASE_URL: "mysql://u:p@db/registry" }],
    ["DATABASE_URL", { DATABASE_URL: "not a url" }],
    ["RATE_LIMIT_READ", { RATE_LIMIT_READ: "abc" }],
    ["RATE_LIMIT_READ", { RATE_LIMIT_READ: "0/1s" }],
    ["RATE_LIMIT_READ", { RATE_LIMIT_READ: "10/0s" }],
    ["RATE_LIMIT_WRITE", { RATE_LIMIT_WRITE: "10 per minute" }],
    ["LOG_LEVEL", { LOG_LEVEL: "verbose" }],
    ["ALGORITHM", { ALGORITHM: "RS256" }],
    ["ALGORITHM", { ALGORITHM: "none" }],
    ["ADMIN_CLIENT_ID", { ADMIN_CLIENT_ID: "bootstrap-admin" }],
    ["ADMIN_CLIENT_SECRET", { ADMIN_CLIENT_SECRET: "admin-secret-0123456789" }],
    ["DEBUG", { DEBUG: "yes" }],
    ["ACCESS_TOKEN_EXPIRE_MINUTES", { ACCESS_TOKEN_EXPIRE_MINUTES: "0" }],
    ["ACCESS_TOKEN_EXPIRE_MINUTES", { ACCESS_TOKEN_EXPIRE_MINUTES: "thirty" }],
    ["MAX_AGENTS_PER_CLIENT", { MAX_AGENTS_PER_CLIENT: "lots" }],
    ["REGISTRY_BASE_URL", { REGISTRY_BASE_URL: "ftp://registry.example.com" }],
    ["REDIS_URL", { REDIS_URL: "http://redis:6379" }],
    ["ENABLE_FEDERATION", { ENABLE_FEDERATION: "maybe" }],
  ];
  for (const [variable, env] of cases) {
    test(`errors: ${variable}=${JSON.stringify(Object.values(env)[0])} names ${variable}`, () => {
      const error = configError({ ...PROD, ...env });
      expect(error.message).toContain(variable);
    });
  }

  test("security: SECRET_KEY is never echoed", () => {
    const short = "too-short-secret";
    const error = configError({ DEBUG: "false", SECRET_KEY: short });
    expect(error.message).toContain("SECRET_KEY");
    expect(error.message).not.toContain(short);
  });

  test("security: ADMIN_CLIENT_SECRET is never echoed", () => {
    const short = "tiny-secret";
    const error = configError({ ...PROD, ADMIN_CLIENT_ID: "bootstrap-admin", ADMIN_CLIENT_SECRET: short });
    expect(error.message).toContain("ADMIN_CLIENT_SECRET");
    expect(error.message).not.toContain(short);
  });

  test("security: secrets are not echoed by errors about other variables", () => {
    const error = configError({
      ...PROD,
      ADMIN_CLIENT_ID: "bootstrap-admin",
      ADMIN_CLIENT_SECRET: "admin-secret-0123456789",
      PORT: "not-a-port",
    });
    expect(error.message).toContain("PORT");
    expect(error.message).not.toContain(SECRET);
    expect(error.message).not.toContain("admin-secret-0123456789");
  });

  test("security: credentials inside DATABASE_URL / REDIS_URL are not echoed", () => {
    const error = configError({ ...PROD, DATABASE_URL: "mysql://user:hunter2-db-password@db/registry" });
    expect(error.message).toContain("DATABASE_URL");
    expect(error.message).not.toContain("hunter2-db-password");
    const redis = configError({ ...PROD, REDIS_URL: "http://:hunter3-redis-password@redis:6379" });
    expect(redis.message).toContain("REDIS_URL");
    expect(redis.message).not.toContain("hunter3-redis-password");
  });
});

describe("boot with bad configuration (subprocess)", () => {
  const root = resolve(import.meta.dir, "..");

  async function boot(env: Record<string, string>) {
    const dataDir = mkdtempSync(join(tmpdir(), "a2a-config-"));
    try {
      const proc = Bun.spawn(["bun", "src/index.ts"], {
        cwd: root,
        env: {
          PATH: process.env.PATH ?? "/usr/bin:/bin",
          HOME: process.env.HOME ?? tmpdir(),
          DATA_DIR: dataDir,
          ...env,
        },
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => proc.kill("SIGKILL"), 20_000);
      const [stdout, stderr, code] = await Promise.all([
        new Response(proc.stdout).text(),
        new Response(proc.stderr).text(),
        proc.exited,
      ]);
      clearTimeout(timer);
      return { code, output: `${stdout}\n${stderr}` };
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  test("errors: DEBUG=false without SECRET_KEY exits non-zero naming SECRET_KEY", async () => {
    const { code, output } = await boot({ DEBUG: "false", LOG_LEVEL: "warn" });
    expect(code).not.toBe(0);
    expect(output).toContain("SECRET_KEY");
    expect(output).not.toMatch(/\n\s+at /);
  }, 30_000);

  test("errors: PORT=abc exits non-zero naming PORT", async () => {
    const { code, output } = await boot({ DEBUG: "true", PORT: "abc", LOG_LEVEL: "warn" });
    expect(code).not.toBe(0);
    expect(output).toContain("PORT");
  }, 30_000);

  test("security: a too-short SECRET_KEY fails boot without printing it", async () => {
    const { code, output } = await boot({
      DEBUG: "false",
      SECRET_KEY: "short-but-secret",
      LOG_LEVEL: "warn",
    });
    expect(code).not.toBe(0);
    expect(output).toContain("SECRET_KEY");
    expect(output).not.toContain("short-but-secret");
  }, 30_000);
});
