import { describe, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { eventually, freePort } from "./redis";

/** Helpers for the deployment suites (test/deploy-*.test.ts): the artifacts under ops/, nginx/, grafana/. */

export const ROOT = join(import.meta.dir, "../..");
export const read = (path: string) => readFileSync(join(ROOT, path), "utf8");

/**
 * A describe block that needs external programs. Without them it is skipped with a message saying
 * which are missing, except under CI (CI=1), where .ci/run installs them: there it fails instead.
 */
export function describeWithTools(name: string, tools: string[], body: () => void) {
  const missing = tools.filter((tool) => !Bun.which(tool));
  if (missing.length === 0) return describe(name, body);
  if (process.env.CI)
    return describe(name, () => {
      test(`needs ${missing.join(", ")}`, () => {
        throw new Error(`${missing.join(", ")} not installed; .ci/run installs them (apt-get)`);
      });
    });
  console.warn(
    `[skip] ${name}: ${missing.join(", ")} not installed (apt-get install nginx prometheus shellcheck)`,
  );
  return describe.skip(name, body);
}

export type RunResult = { code: number; stdout: string; stderr: string };

/** Runs a command to completion. */
export async function run(
  cmd: string[],
  options: {
    cwd?: string;
    env?: Record<string, string | undefined>;
    stdin?: string;
    timeoutMs?: number;
  } = {},
): Promise<RunResult> {
  const proc = Bun.spawn(cmd, {
    cwd: options.cwd ?? ROOT,
    env: options.env ?? process.env,
    stdin: options.stdin === undefined ? "ignore" : new TextEncoder().encode(options.stdin),
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), options.timeoutMs ?? 50_000);
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

/** A temporary directory that `cleanup` removes. */
export function tempDir(prefix: string) {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export type Registry = {
  base: string;
  port: number;
  proc: ReturnType<typeof Bun.spawn>;
  stop(): Promise<void>;
};

/**
 * `bun src/index.ts` on a free loopback port (embedded PGlite in a temp dir unless env says otherwise).
 * A process that exits during start (a port taken meanwhile, say) is started again on another port.
 */
export async function startRegistry(env: Record<string, string> = {}, attempts = 3): Promise<Registry> {
  const port = freePort();
  const data = tempDir("a2a-deploy-registry-");
  const proc = Bun.spawn(["bun", "src/index.ts"], {
    cwd: ROOT,
    env: {
      ...process.env,
      DEBUG: "true",
      LOG_LEVEL: "warn",
      HOST: "127.0.0.1",
      DATA_DIR: data.path,
      ...env,
      PORT: String(port),
    },
    stdout: "ignore",
    stderr: "pipe",
  });
  let stderr = "";
  void (async () => {
    for await (const chunk of proc.stderr) stderr += new TextDecoder().decode(chunk);
  })();
  const base = `http://127.0.0.1:${port}`;
  const stop = async () => {
    proc.kill("SIGKILL");
    await proc.exited;
    data.cleanup();
  };
  let exited = false;
  void proc.exited.then(() => {
    exited = true;
  });
  // Generous: on a loaded machine (other suites, benchmarks) a boot can take tens of seconds.
  const up = await eventually(async () => {
    if (exited) return true;
    try {
      return (await fetch(`${base}/health`)).ok;
    } catch {
      return false;
    }
  }, 90_000);
  if (up && !exited) return { base, port, proc, stop };
  await stop();
  if (exited && attempts > 1) return startRegistry(env, attempts - 1);
  throw new Error(`registry did not answer /health on ${base}:\n${stderr.slice(-2000)}`);
}

/**
 * envsubst as the nginx image's entrypoint runs it: only `${NAME}` for the names given is replaced.
 * Fails when the template uses a placeholder it was not given, or a given one is never used.
 */
export function renderTemplate(text: string, vars: Record<string, string>) {
  const used = new Set<string>();
  const out = text.replace(/\$\{([A-Z_][A-Z0-9_]*)\}/g, (_whole, name: string) => {
    if (!(name in vars)) throw new Error(`template placeholder \${${name}} has no value`);
    used.add(name);
    return vars[name]!;
  });
  const unused = Object.keys(vars).filter((name) => !used.has(name));
  if (unused.length) throw new Error(`template never uses ${unused.join(", ")}`);
  return out;
}

/** The placeholders `${NAME}` of a template. */
export function templatePlaceholders(text: string) {
  return new Set([...text.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g)].map((m) => m[1]!));
}

/** Replaces `from` by `to`, failing unless `from` occurs exactly once (so drift in the source is caught). */
export function replaceOnce(text: string, from: string, to: string) {
  const count = text.split(from).length - 1;
  if (count !== 1) throw new Error(`expected exactly one "${from}" in nginx.conf, found ${count}`);
  return text.replace(from, to);
}

export type NginxSetup = {
  dir: string;
  conf: string;
  httpPort: number;
  httpsPort: number;
  serverName: string;
  certPem: string;
};

/**
 * The shipped nginx files laid out as the nginx image sees them under /etc/nginx, in a temp dir:
 * nginx.conf (only the process user and the pid, log and temp paths changed so an unprivileged nginx
 * can run it), snippets/ verbatim, conf.d/registry.conf rendered from the template with loopback
 * ports and the given upstream, and a self-signed certificate for `serverName` in ssl/.
 */
export async function prepareNginx(options: {
  upstream: string;
  serverName?: string;
  maxBodyBytes?: number;
}): Promise<NginxSetup> {
  const serverName = options.serverName ?? "localhost";
  const dir = mkdtempSync(join(tmpdir(), "a2a-nginx-"));
  // nginx workers run as "nobody" when the tests run as root: they must reach the temp dirs.
  chmodSync(dir, 0o755);
  for (const sub of ["conf.d", "ssl", "logs", "temp", "www"]) mkdirSync(join(dir, sub));
  cpSync(join(ROOT, "nginx/snippets"), join(dir, "snippets"), { recursive: true });
  copyFileSync("/etc/nginx/mime.types", join(dir, "mime.types"));

  let conf = read("nginx/nginx.conf");
  conf = replaceOnce(conf, "user nginx;\n", "");
  conf = replaceOnce(conf, "pid /var/run/nginx.pid;", `pid ${dir}/logs/nginx.pid;`);
  conf = replaceOnce(
    conf,
    "error_log /var/log/nginx/error.log warn;",
    `error_log ${dir}/logs/error.log warn;`,
  );
  conf = replaceOnce(
    conf,
    "access_log /var/log/nginx/access.log registry_json;",
    `access_log ${dir}/logs/access.log registry_json;\n` +
      ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map((kind) => `  ${kind}_temp_path ${dir}/temp/${kind};`)
        .join("\n"),
  );
  writeFileSync(join(dir, "nginx.conf"), conf);

  const httpPort = freePort();
  const httpsPort = freePort();
  const site = renderTemplate(read("nginx/templates/registry.conf.template"), {
    NGINX_SERVER_NAME: serverName,
    NGINX_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
    NGINX_HTTPS_LISTEN: `127.0.0.1:${httpsPort}`,
    REGISTRY_UPSTREAM: options.upstream,
    NGINX_MAX_BODY_BYTES: String(options.maxBodyBytes ?? 1_048_576),
  }).replace("root /var/www/certbot;", `root ${dir}/www;`);
  writeFileSync(join(dir, "conf.d/registry.conf"), site);

  await selfSignedCert(join(dir, "ssl"), serverName, { days: 2, ip: "127.0.0.1" });
  return {
    dir,
    conf: join(dir, "nginx.conf"),
    httpPort,
    httpsPort,
    serverName,
    certPem: readFileSync(join(dir, "ssl/cert.pem"), "utf8"),
  };
}

/** A self-signed certificate for `name` (and optionally an IP) as dir/cert.pem and dir/key.pem. */
export async function selfSignedCert(
  dir: string,
  name: string,
  options: { days?: number; ip?: string } = {},
) {
  const altNames = [`DNS:${name}`, ...(options.ip ? [`IP:${options.ip}`] : [])].join(",");
  const result = await run([
    "openssl",
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-days",
    String(options.days ?? 2),
    "-subj",
    `/CN=${name}`,
    "-addext",
    `subjectAltName=${altNames}`,
    "-keyout",
    join(dir, "key.pem"),
    "-out",
    join(dir, "cert.pem"),
  ]);
  if (result.code !== 0) throw new Error(`openssl failed: ${result.stderr}`);
}

/** The secrets .env.prod must provide (ops/env.prod.example holds placeholders for each). */
export const SECRET_VARIABLES = [
  "SECRET_KEY",
  "POSTGRES_PASSWORD",
  "REDIS_PASSWORD",
  "ELASTIC_PASSWORD",
  "GRAFANA_ADMIN_PASSWORD",
];

/** `nginx -t` on a prepared layout. */
export function nginxTest(setup: NginxSetup) {
  return run(["nginx", "-t", "-p", setup.dir, "-c", setup.conf]);
}

/** Starts nginx in the foreground on a prepared layout and waits for it to accept connections. */
export async function startNginx(setup: NginxSetup) {
  const proc = Bun.spawn(["nginx", "-p", setup.dir, "-c", setup.conf, "-g", "daemon off;"], {
    stdout: "ignore",
    stderr: "pipe",
  });
  const up = await eventually(async () => {
    try {
      return (await fetch(`http://127.0.0.1:${setup.httpPort}/nginx-health`)).ok;
    } catch {
      return false;
    }
  }, 30_000);
  const errorLog = () => {
    try {
      return readFileSync(join(setup.dir, "logs/error.log"), "utf8");
    } catch {
      return "";
    }
  };
  const stop = async () => {
    proc.kill("SIGQUIT");
    const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
    if (!exited) {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    rmSync(setup.dir, { recursive: true, force: true });
  };
  if (!up) {
    const log = errorLog();
    await stop();
    throw new Error(`nginx did not start:\n${log}`);
  }
  return { proc, stop, errorLog, accessLog: () => readFileSync(join(setup.dir, "logs/access.log"), "utf8") };
}

/** KEY=value lines of an env file (comments and blank lines skipped); later lines win, like compose. */
export function parseEnvFile(text: string) {
  const env: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) env[match[1]!] = match[2]!;
  }
  return env;
}

/** The commented `# NAME=` / `# NAME ` mentions of an env file (variables documented but not set there). */
export function commentedEnvNames(text: string) {
  return new Set([...text.matchAll(/^#\s*([A-Z][A-Z0-9_]+)(=|\s)/gm)].map((m) => m[1]!));
}

/**
 * Compose's variable interpolation: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`,
 * `${VAR?error}`, `$VAR`, and `$$` for a literal `$`. Throws like compose on a missing required variable.
 */
export function interpolate(text: string, env: Record<string, string | undefined>): string {
  return text.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, name?: string, op?: string, arg?: string, bare?: string) => {
      if (whole === "$$") return "$";
      if (bare) return env[bare] ?? "";
      const value = env[name!];
      const unsetOrEmpty = value === undefined || value === "";
      if (op === ":-") return unsetOrEmpty ? interpolate(arg ?? "", env) : value!;
      if (op === "-") return value === undefined ? interpolate(arg ?? "", env) : value;
      if (op === ":?") {
        if (unsetOrEmpty) throw new Error(`required variable ${name} is missing: ${arg}`);
        return value!;
      }
      if (op === "?") {
        if (value === undefined) throw new Error(`required variable ${name} is missing: ${arg}`);
        return value;
      }
      return value ?? "";
    },
  );
}

/** Compose's order: the YAML is parsed first, then each string scalar is interpolated. */
export function interpolateDeep<T>(value: T, env: Record<string, string | undefined>): T {
  if (typeof value === "string") return interpolate(value, env) as T;
  if (Array.isArray(value)) return value.map((item) => interpolateDeep(item, env)) as T;
  if (value && typeof value === "object")
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolateDeep(v, env)])) as T;
  return value;
}

/** Every `${NAME...}` / `$NAME` reference of a compose file (not `$$NAME`, which the container expands). */
export function composeVariables(text: string) {
  const names = new Set<string>();
  for (const m of text
    .replaceAll("$$", "")
    .matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)|\$([A-Za-z_][A-Za-z0-9_]*)/g))
    names.add((m[1] ?? m[2])!);
  return names;
}

export function parseYaml<T = unknown>(text: string): T {
  return Bun.YAML.parse(text) as T;
}

/** Metric names declared by a Prometheus text exposition (# HELP / # TYPE lines), with histogram series names. */
export function exportedMetricNames(text: string) {
  const names = new Set<string>();
  for (const line of text.split("\n")) {
    const match = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (!match) continue;
    const [, name, type] = match;
    names.add(name!);
    if (type === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(name! + suffix);
    if (type === "summary") for (const suffix of ["_sum", "_count"]) names.add(name! + suffix);
  }
  return names;
}

const PROMQL_WORDS = new Set([
  "and",
  "or",
  "unless",
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "offset",
  "bool",
  "inf",
  "nan",
]);

/**
 * The metric names a PromQL expression selects. Strings, label matchers, grouping clauses, ranges,
 * numbers, function calls and keywords are taken out; what is left are metric names.
 */
export function promqlMetricNames(expr: string) {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, " ")
    .replace(/\{[^}]*\}/g, " ")
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, " ")
    .replace(/\[[^\]]*\]/g, " ")
    .replace(/\$__\w+|\$\w+/g, " ");
  const names = new Set<string>();
  for (const m of stripped.matchAll(/([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?/g)) {
    const [, word, call] = m;
    if (call || PROMQL_WORDS.has(word!.toLowerCase())) continue;
    // The exponent or unit of a number such as 1e-9 or 5m.
    const before = stripped[m.index! - 1];
    if (before && /[0-9.]/.test(before)) continue;
    names.add(word!);
  }
  return names;
}

/** Grafana dashboard panels, rows' nested panels included. */
export function dashboardPanels(dashboard: { panels?: Panel[] }): Panel[] {
  return (dashboard.panels ?? []).flatMap((panel) => [panel, ...(panel.panels ?? [])]);
}
export type Panel = {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string; refId: string; datasource?: { type: string; uid: string } }[];
  panels?: Panel[];
  fieldConfig?: { defaults?: { unit?: string } };
};

/** Grafana's template variables replaced by values that make a query plain PromQL. */
export function grafanaToPromql(expr: string) {
  return expr
    .replaceAll("$__rate_interval", "5m")
    .replaceAll("$__interval", "1m")
    .replaceAll("$__range", "1h")
    .replace(/\$\{?instance\}?/g, ".*");
}

/** The Postgres server the deployment suites use: TEST_DATABASE_URL (CI) or the local default. */
export const POSTGRES_ADMIN_URL =
  process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** Whether that server answers; under CI it must. */
export async function postgresReachable() {
  const result = await run(["psql", "--dbname", POSTGRES_ADMIN_URL, "-qAtXc", "select 1"], {
    timeoutMs: 10_000,
  });
  return result.code === 0 && result.stdout.trim() === "1";
}

/** SQL against a database of that server through psql; returns trimmed stdout, throws on error. */
export async function psql(url: string, sql: string) {
  const result = await run(["psql", "--dbname", url, "-qAtX", "-v", "ON_ERROR_STOP=1"], { stdin: sql });
  if (result.code !== 0) throw new Error(`psql failed: ${result.stderr}`);
  return result.stdout.trim();
}

/** The URL of another database on the same server. */
export function databaseUrl(name: string) {
  const url = new URL(POSTGRES_ADMIN_URL);
  url.pathname = `/${name}`;
  return url.toString();
}

let scratchCounter = 0;

/** A new, empty database (named a2a_test_* so CI's cleanup also catches leftovers). */
export async function scratchDatabase(label: string) {
  const name = `a2a_test_${label}_${process.pid}_${Date.now().toString(36)}_${scratchCounter++}`;
  await psql(POSTGRES_ADMIN_URL, `create database "${name}";`);
  return {
    name,
    url: databaseUrl(name),
    drop: () => psql(POSTGRES_ADMIN_URL, `drop database if exists "${name}" with (force);`),
  };
}

/** Databases whose name starts with the prefix. */
export async function databasesLike(prefix: string) {
  const out = await psql(
    POSTGRES_ADMIN_URL,
    `select datname from pg_database where starts_with(datname, '${prefix.replaceAll("'", "''")}') order by 1;`,
  );
  return out ? out.split("\n") : [];
}
