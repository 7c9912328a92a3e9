import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { EnvSchema, parseConfig } from "../src/config";
import {
  commentedEnvNames,
  composeVariables,
  interpolate,
  interpolateDeep,
  parseEnvFile,
  parseYaml,
  ROOT,
  read,
  SECRET_VARIABLES,
  templatePlaceholders,
} from "./support/deploy";

type Service = {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[] | string;
  environment?: Record<string, string>;
  env_file?: unknown;
  ports?: string[];
  volumes?: string[];
  healthcheck?: { test: string[] | string; interval?: string; retries?: number };
  depends_on?: Record<string, { condition: string }>;
  deploy?: { replicas?: number | string; resources?: { limits?: { cpus?: string; memory?: string } } };
  networks?: string[];
  restart?: string;
  container_name?: string;
  logging?: { options?: Record<string, string> };
  shm_size?: string;
};
type Compose = {
  services: Record<string, Service>;
  networks: Record<string, { internal?: boolean }>;
  volumes: Record<string, unknown>;
};

const RAW = read("docker-compose.prod.yml");
const EXAMPLE_TEXT = read("ops/env.prod.example");
const EXAMPLE = parseEnvFile(EXAMPLE_TEXT);
const raw = parseYaml<Compose>(RAW);
/** The compose file as `docker compose --env-file .env.prod` sees it when .env.prod is the example. */
const compose = interpolateDeep(raw, EXAMPLE);
const services = compose.services;
const registryEnv = services.registry!.environment!;

/** Every variable the registry reads (src/config.ts). */
const REGISTRY_VARIABLES = Object.keys(EnvSchema.properties);
/** Registry variables production leaves unset on purpose, with the reason. */
const UNSET_IN_PRODUCTION: Record<string, string> = { DATA_DIR: "embedded PGlite only; DATABASE_URL is set" };
/** Variables of the compose file and the scripts (deploy.sh, backup.sh) that are not the registry's. */
const OPS_VARIABLES = [
  "REGISTRY_DOMAIN",
  "POSTGRES_PASSWORD",
  "REDIS_PASSWORD",
  "ELASTIC_PASSWORD",
  "GRAFANA_ADMIN_PASSWORD",
  "REGISTRY_REPLICAS",
  "REGISTRY_CPUS",
  "REGISTRY_MEMORY",
  "ES_HEAP",
  "REGISTRY_IMAGE",
  "REGISTRY_TAG",
  "BACKUP_DIR",
  "BACKUP_RETENTION_DAYS",
];
const SECRET_NAME = /PASSWORD|SECRET/;

describe("docker-compose.prod.yml", () => {
  test("the stack: registry, postgres, redis, elasticsearch, nginx, prometheus, grafana", () => {
    expect(Object.keys(services).sort()).toEqual(
      ["elasticsearch", "grafana", "nginx", "postgres", "prometheus", "redis", "registry"].sort(),
    );
  });

  test("every service has a health check, a restart policy, resource limits and bounded logs", () => {
    for (const [name, service] of Object.entries(services)) {
      const check = service.healthcheck?.test;
      expect({ name, check: Array.isArray(check) ? check[0] : check }).toEqual({
        name,
        check: expect.stringMatching(/^CMD(-SHELL)?$/),
      });
      expect(service.healthcheck?.interval).toMatch(/^\d+s$/);
      expect({ name, restart: service.restart }).toEqual({ name, restart: "unless-stopped" });
      expect({ name, memory: service.deploy?.resources?.limits?.memory }).toEqual({
        name,
        memory: expect.stringMatching(/^\d+[mg]$/),
      });
      expect(service.logging?.options?.["max-size"]).toBeTruthy();
    }
  });

  test("health checks probe what each service is for", () => {
    const text = (name: string) => JSON.stringify(services[name]!.healthcheck!.test);
    expect(text("registry")).toContain("/health");
    expect(text("postgres")).toContain("pg_isready -U registry -d registry");
    expect(text("redis")).toContain("REDISCLI_AUTH=");
    expect(text("redis")).toContain("redis-cli ping");
    expect(text("elasticsearch")).toContain("_cluster/health?wait_for_status=yellow");
    expect(text("nginx")).toContain("/nginx-health");
    expect(text("prometheus")).toContain("/-/ready");
    expect(text("grafana")).toContain("/api/health");
  });

  test("the registry is replicas-ready: built from ops/Dockerfile, no fixed name or port, limits set", () => {
    const registry = services.registry!;
    expect(registry.build).toEqual({ context: ".", dockerfile: "ops/Dockerfile" });
    expect(existsSync(join(ROOT, "ops/Dockerfile"))).toBe(true);
    expect(registry.container_name).toBeUndefined();
    expect(registry.ports).toBeUndefined();
    expect(raw.services.registry!.deploy!.replicas).toBe(`\${REGISTRY_REPLICAS:-2}`);
    expect(Number(registry.deploy!.replicas)).toBeGreaterThanOrEqual(2);
    expect(registry.deploy!.resources!.limits!.cpus).toMatch(/^\d+(\.\d+)?$/);
    expect(registry.depends_on).toEqual({
      postgres: { condition: "service_healthy" },
      redis: { condition: "service_healthy" },
      elasticsearch: { condition: "service_healthy" },
    });
    // The registry gets only its own variables: no env_file handing it every secret of .env.prod.
    expect(registry.env_file).toBeUndefined();
  });

  test("every variable the registry reads is set for it", () => {
    for (const name of REGISTRY_VARIABLES) {
      if (name in UNSET_IN_PRODUCTION) expect(registryEnv[name]).toBeUndefined();
      else expect({ name, set: name in registryEnv }).toEqual({ name, set: true });
    }
  });

  test("with .env.prod filled in, the registry's real config parser accepts the production environment", () => {
    const config = parseConfig(registryEnv);
    expect(config.debug).toBe(false);
    expect(config.secretKeyIsDevDefault).toBe(false);
    expect(config.secretKey).toBe(EXAMPLE.SECRET_KEY!);
    expect(config.trustProxy).toBe(true);
    expect(config.webConcurrency).toBe(1);
    expect(config.port).toBe(8000);
    expect(config.host).toBe("0.0.0.0");
    expect(config.registryBaseUrl).toBe(EXAMPLE.REGISTRY_BASE_URL!);
    expect(config.registryId).toBe(EXAMPLE.REGISTRY_ID!);
    expect(config.adminClient).toBeUndefined();

    const database = new URL(config.databaseUrl!);
    expect([database.hostname, database.port, database.pathname, database.username]).toEqual([
      "postgres",
      "5432",
      "/registry",
      services.postgres!.environment!.POSTGRES_USER!,
    ]);
    expect(database.password).toBe(EXAMPLE.POSTGRES_PASSWORD!);
    expect(services.postgres!.environment!.POSTGRES_PASSWORD).toBe(EXAMPLE.POSTGRES_PASSWORD!);
    const redis = new URL(config.redisUrl!);
    expect([redis.hostname, redis.password]).toEqual(["redis", EXAMPLE.REDIS_PASSWORD!]);
    expect(services.redis!.environment!.REDIS_PASSWORD).toBe(EXAMPLE.REDIS_PASSWORD!);
    const search = new URL(config.elasticsearchUrl!);
    expect([search.hostname, search.port, search.username, search.password]).toEqual([
      "elasticsearch",
      "9200",
      "elastic",
      EXAMPLE.ELASTIC_PASSWORD!,
    ]);
    expect(services.elasticsearch!.environment!.ELASTIC_PASSWORD).toBe(EXAMPLE.ELASTIC_PASSWORD!);
  });

  test("without .env.prod the stack does not start: each required secret and name is demanded", () => {
    expect(() => interpolate(RAW, {})).toThrow(/required variable/);
    for (const name of [...SECRET_VARIABLES, "REGISTRY_BASE_URL", "REGISTRY_ID", "REGISTRY_DOMAIN"]) {
      const { [name]: _, ...without } = EXAMPLE;
      expect(() => interpolate(RAW, without)).toThrow(new RegExp(`required variable ${name} is missing`));
    }
  });

  test("no secret is written in the compose file: each comes from .env.prod", () => {
    for (const [name, service] of Object.entries(raw.services)) {
      for (const [key, value] of Object.entries(service.environment ?? {})) {
        if (SECRET_NAME.test(key))
          expect({ service: name, key, value }).toEqual({
            service: name,
            key,
            value: expect.stringMatching(/^\$\{/),
          });
        // Credentials inside URLs are variables too.
        const userinfo = /^[a-z]+:\/\/([^@/]*)@/.exec(String(value))?.[1];
        if (userinfo?.includes(":"))
          expect({ service: name, key, password: userinfo.slice(userinfo.indexOf(":") + 1) }).toEqual({
            service: name,
            key,
            password: expect.stringMatching(/^\$\{[A-Z_]+(:\?[^}]*)?\}$/),
          });
      }
    }
    const secrets = Object.entries(EXAMPLE).filter(([key, value]) => SECRET_NAME.test(key) && value);
    expect(secrets.length).toBeGreaterThanOrEqual(5);
    for (const [, value] of secrets) expect(RAW).not.toContain(value);
    // Secrets used inside containers' own commands stay variables there ($$ is a literal $ for the shell).
    expect((raw.services.redis!.command as string[]).join(" ")).toContain('--requirepass "$$REDIS_PASSWORD"');
    expect(JSON.stringify(raw.services.redis!.healthcheck!.test)).not.toContain("-a ");
  });

  test("postgres: version 15/16, the guide's tuning, a volume, pg_isready", () => {
    const postgres = services.postgres!;
    expect(postgres.image).toMatch(/^postgres:1[56](\.|$|-)/);
    const command = (postgres.command as string[]).join(" ");
    for (const setting of [
      "max_connections=200",
      "shared_buffers=256MB",
      "effective_cache_size=1GB",
      "random_page_cost=1.1",
      "effective_io_concurrency=200",
    ])
      expect(command).toContain(`-c ${setting}`);
    expect(postgres.volumes).toEqual(["pgdata:/var/lib/postgresql/data"]);
    expect(compose.volumes).toHaveProperty("pgdata");
    expect(postgres.shm_size).toBeTruthy();
  });

  test("connections: a rolling deploy's doubled replicas fit under max_connections with room to spare", () => {
    const replicas = Number(services.registry!.deploy!.replicas);
    const poolMax = Number(registryEnv.DATABASE_POOL_MAX);
    const processes = Number(registryEnv.WEB_CONCURRENCY);
    expect(2 * replicas * processes * poolMax + 20).toBeLessThanOrEqual(200);
  });

  test("redis 7 with a password the registry's URL uses; elasticsearch 8 single node with a fixed heap", () => {
    expect(services.redis!.image).toMatch(/^redis:7/);
    expect(raw.services.registry!.environment!.REDIS_URL).toContain(":${REDIS_PASSWORD");
    const es = services.elasticsearch!;
    expect(es.image).toMatch(/elasticsearch:8\.\d+\.\d+$/);
    expect(es.environment!["discovery.type"]).toBe("single-node");
    const heap = /-Xms(\S+) -Xmx(\S+)/.exec(es.environment!.ES_JAVA_OPTS!)!;
    expect(heap[1]).toBe(heap[2]!);
    expect(es.environment!["xpack.security.enabled"]).toBe("true");
    expect(es.volumes).toEqual(["esdata:/usr/share/elasticsearch/data"]);
  });

  test("nginx: 80 and 443 published, the shipped config mounted, certificates from ./ssl", () => {
    const nginx = services.nginx!;
    expect(nginx.ports).toEqual(["80:80", "443:443"]);
    expect(nginx.volumes).toEqual(
      expect.arrayContaining([
        "./nginx/nginx.conf:/etc/nginx/nginx.conf:ro",
        "./nginx/templates:/etc/nginx/templates:ro",
        "./nginx/snippets:/etc/nginx/snippets:ro",
        "./ssl:/etc/nginx/ssl:ro",
      ]),
    );
    // The environment fills exactly the template's placeholders; the upstream is the registry service.
    expect(Object.keys(nginx.environment!).sort()).toEqual(
      [...templatePlaceholders(read("nginx/templates/registry.conf.template"))].sort(),
    );
    expect(nginx.environment).toMatchObject({
      NGINX_SERVER_NAME: EXAMPLE.REGISTRY_DOMAIN,
      NGINX_HTTP_LISTEN: "80",
      NGINX_HTTPS_LISTEN: "443",
      REGISTRY_UPSTREAM: `registry:${registryEnv.PORT}`,
      // nginx refuses bodies above exactly the registry's own limit.
      NGINX_MAX_BODY_BYTES: registryEnv.MAX_BODY_BYTES,
    });
  });

  test("prometheus and grafana: configuration mounted, reachable only from the host", () => {
    expect(services.prometheus!.volumes).toContain("./ops/prometheus:/etc/prometheus:ro");
    expect(services.prometheus!.command).toContain("--config.file=/etc/prometheus/prometheus.yml");
    expect(services.grafana!.environment!.GF_SECURITY_ADMIN_PASSWORD).toBe(EXAMPLE.GRAFANA_ADMIN_PASSWORD!);
    expect(services.grafana!.environment!.GF_USERS_ALLOW_SIGN_UP).toBe("false");
    for (const [name, service] of Object.entries(services)) {
      if (name === "nginx") continue;
      for (const port of service.ports ?? [])
        expect({ name, port }).toEqual({ name, port: expect.stringMatching(/^127\.0\.0\.1:/) });
    }
  });

  test("networks: data services are internal; each path the stack needs is connected", () => {
    expect(compose.networks.backend?.internal).toBe(true);
    for (const name of ["postgres", "redis", "elasticsearch"])
      expect(services[name]!.networks).toEqual(["backend"]);
    const shares = (a: string, b: string) =>
      (services[a]!.networks ?? []).some((network) => (services[b]!.networks ?? []).includes(network));
    expect(shares("nginx", "registry")).toBe(true);
    expect(shares("registry", "postgres")).toBe(true);
    expect(shares("prometheus", "registry")).toBe(true);
    expect(shares("grafana", "prometheus")).toBe(true);
    expect(shares("nginx", "postgres")).toBe(false);
  });

  test("every mounted repository path exists (./ssl and ./certbot are the operator's)", () => {
    for (const service of Object.values(services))
      for (const volume of service.volumes ?? []) {
        const source = volume.split(":")[0]!;
        if (!source.startsWith("./") || source === "./ssl" || source.startsWith("./certbot")) continue;
        expect({ volume, exists: existsSync(join(ROOT, source)) }).toEqual({ volume, exists: true });
      }
  });
});

describe("ops/env.prod.example", () => {
  test("lists every variable the registry reads (set, or commented where compose sets it)", () => {
    const commented = commentedEnvNames(EXAMPLE_TEXT);
    for (const name of REGISTRY_VARIABLES)
      expect({ name, listed: name in EXAMPLE || commented.has(name) }).toEqual({ name, listed: true });
  });

  test("documents every variable the compose file interpolates and the scripts read", () => {
    const commented = commentedEnvNames(EXAMPLE_TEXT);
    for (const name of new Set([...composeVariables(RAW), ...OPS_VARIABLES]))
      expect({ name, documented: name in EXAMPLE || commented.has(name) }).toEqual({
        name,
        documented: true,
      });
  });

  test("ships no usable secret: every one is a placeholder deploy.sh refuses", () => {
    for (const name of SECRET_VARIABLES) expect(EXAMPLE[name]).toContain("change-me");
    expect(EXAMPLE.REGISTRY_DOMAIN).toContain("example.com");
    expect(EXAMPLE.REGISTRY_BASE_URL).toBe(`https://${EXAMPLE.REGISTRY_DOMAIN}`);
    expect(read(".gitignore").split("\n")).toContain(".env.prod");
  });

  test("every comment line is a comment and every setting is KEY=value without quotes", () => {
    for (const line of EXAMPLE_TEXT.split("\n")) {
      if (line === "" || line.startsWith("#")) continue;
      expect(line).toMatch(/^[A-Z][A-Z0-9_]*=[^"']*$/);
    }
  });
});
