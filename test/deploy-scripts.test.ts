import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  describeWithTools,
  parseEnvFile,
  ROOT,
  read,
  run,
  SECRET_VARIABLES,
  selfSignedCert,
  tempDir,
} from "./support/deploy";

const SCRIPTS = [
  "ops/scripts/deploy.sh",
  "ops/scripts/backup.sh",
  "ops/scripts/restore.sh",
  "ops/scripts/lib/common.sh",
];
const DEPLOY = join(ROOT, "ops/scripts/deploy.sh");
const DOMAIN = "registry.test.internal";

/** A filled-in .env.prod (the example with its placeholders replaced) and a certificate for DOMAIN. */
async function deployFixture(
  options: { certDomain?: string; certDays?: number; env?: Record<string, string> } = {},
) {
  const dir = tempDir("a2a-deploy-");
  const values: Record<string, string> = {
    REGISTRY_DOMAIN: DOMAIN,
    REGISTRY_BASE_URL: `https://${DOMAIN}`,
    REGISTRY_ID: DOMAIN,
    SECRET_KEY: "0123456789abcdef0123456789abcdef0123456789abcdef",
    POSTGRES_PASSWORD: "pg0123456789abcdef0123",
    REDIS_PASSWORD: "redis0123456789abcdef01",
    ELASTIC_PASSWORD: "es0123456789abcdef01234",
    GRAFANA_ADMIN_PASSWORD: "grafana0123456789abcdef",
    ...options.env,
  };
  const env = read("ops/env.prod.example")
    .split("\n")
    .map((line) => {
      const key = /^([A-Z_]+)=/.exec(line)?.[1];
      return key && key in values ? `${key}=${values[key]}` : line;
    })
    .join("\n");
  writeFileSync(join(dir.path, ".env.prod"), env);
  chmodSync(join(dir.path, ".env.prod"), 0o600);
  await selfSignedCert(dir.path, options.certDomain ?? DOMAIN, { days: options.certDays ?? 90 });
  return {
    dir,
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME!,
      ENV_FILE: join(dir.path, ".env.prod"),
      SSL_DIR: dir.path,
      REGISTRY_TAG: "test-release",
    },
  };
}

describeWithTools("shell scripts are shellcheck clean", ["shellcheck"], () => {
  test("shellcheck reports nothing for ops/scripts", async () => {
    const result = await run(["shellcheck", "--external-sources", ...SCRIPTS]);
    expect(result.stdout + result.stderr).toBe("");
    expect(result.code).toBe(0);
  });

  test("every script in ops/scripts is covered, executable and strict", () => {
    const present = readdirSync(join(ROOT, "ops/scripts")).filter((f) => f.endsWith(".sh"));
    expect(present.sort()).toEqual(["backup.sh", "deploy.sh", "restore.sh"]);
    for (const script of SCRIPTS.filter((s) => !s.includes("/lib/"))) {
      const text = read(script);
      expect(text.startsWith("#!/usr/bin/env bash\n")).toBe(true);
      expect(text).toContain("set -Eeuo pipefail");
    }
  });
});

describeWithTools("deploy.sh --dry-run", ["openssl"], () => {
  test("prints the whole plan, changes nothing and exits 0", async () => {
    const fixture = await deployFixture();
    try {
      const result = await run([DEPLOY, "--dry-run"], { env: fixture.env });
      expect(result.stderr).toBe("");
      expect(result.code).toBe(0);
      const out = result.stdout;
      expect(out).not.toContain("FAIL");
      for (const check of [
        "ok    SECRET_KEY is set",
        "ok    certificate and key match",
        `ok    certificate covers ${DOMAIN}`,
        "ok    certificate valid for 14 more days",
      ])
        expect(out).toContain(check);
      // The steps, in order, each with the commands it would run.
      const steps = [
        "1. preflight",
        "2. backup",
        "3. build registry image a2a-registry:test-release",
        "4. data services",
        "5. migrate",
        "6. roll out 2 registry replicas",
        "7. edge and monitoring",
        `8. verify https://${DOMAIN}/health`,
      ];
      const positions = steps.map((step) => out.indexOf(step));
      expect(positions.every((p) => p >= 0)).toBe(true);
      expect([...positions].sort((a, b) => a - b)).toEqual(positions);
      for (const command of [
        "ops/scripts/backup.sh",
        "build --pull registry",
        "up -d --wait postgres redis elasticsearch",
        "run --rm --no-deps registry bun run db:migrate",
        "up -d --no-deps --no-recreate --scale registry=N+2 registry",
        "exec -T nginx nginx -s reload",
        "docker stop --time 30 OLD",
        "up -d --no-deps nginx prometheus grafana",
        `curl -fsS --resolve ${DOMAIN}:443:127.0.0.1 https://${DOMAIN}/health`,
      ])
        expect(out).toContain(command);
      expect(out).toContain(`--env-file ${fixture.env.ENV_FILE}`);
      expect(out).toContain("Plan complete");
    } finally {
      fixture.dir.cleanup();
    }
  });

  test("the example's placeholders fail preflight and nothing runs", async () => {
    const fixture = await deployFixture();
    try {
      copyFileSync(join(ROOT, "ops/env.prod.example"), fixture.env.ENV_FILE);
      const result = await run([DEPLOY, "--dry-run"], { env: fixture.env });
      expect(result.code).toBe(1);
      for (const key of [...SECRET_VARIABLES, "REGISTRY_DOMAIN"])
        expect(result.stdout).toContain(`FAIL  ${key} still holds the example's placeholder`);
      expect(result.stdout).toContain("nothing was changed");
      expect(result.stdout).not.toContain("2. backup");
    } finally {
      fixture.dir.cleanup();
    }
  });

  test("preflight catches a wrong certificate, weak or URL-unsafe secrets, a mismatched base URL, a missing env file", async () => {
    const wrongCert = await deployFixture({ certDomain: "other.example.net" });
    const expiring = await deployFixture({ certDays: 3 });
    const weak = await deployFixture({
      env: {
        SECRET_KEY: "too-short",
        POSTGRES_PASSWORD: "has@and/slash-0123456789",
        REGISTRY_BASE_URL: "http://registry.test.internal",
        ADMIN_CLIENT_ID: "admin",
      },
    });
    try {
      const cert = await run([DEPLOY, "--dry-run"], { env: wrongCert.env });
      expect(cert.code).toBe(1);
      expect(cert.stdout).toContain(`FAIL  certificate does not cover ${DOMAIN}`);
      const soon = await run([DEPLOY, "--dry-run"], { env: expiring.env });
      expect(soon.code).toBe(1);
      expect(soon.stdout).toContain("FAIL  certificate expires within 14 days");
      const secrets = await run([DEPLOY, "--dry-run"], { env: weak.env });
      expect(secrets.code).toBe(1);
      expect(secrets.stdout).toContain("FAIL  SECRET_KEY must be at least 32 characters");
      expect(secrets.stdout).toContain("FAIL  POSTGRES_PASSWORD must be 16+ characters of A-Z a-z 0-9");
      expect(secrets.stdout).toContain(
        "FAIL  REGISTRY_BASE_URL (http://registry.test.internal) must be https://",
      );
      expect(secrets.stdout).toContain("FAIL  ADMIN_CLIENT_ID and ADMIN_CLIENT_SECRET: set both or neither");
      writeFileSync(join(weak.dir.path, "key.pem"), readFileSync(join(wrongCert.dir.path, "key.pem")));
      const mismatch = await run([DEPLOY, "--dry-run"], { env: weak.env });
      expect(mismatch.stdout).toContain("is not the key of");
      const missing = await run([DEPLOY, "--dry-run"], {
        env: { ...weak.env, ENV_FILE: "/nonexistent/.env.prod" },
      });
      expect(missing.code).toBe(1);
      expect(missing.stdout).toContain("/nonexistent/.env.prod is missing");
    } finally {
      for (const f of [wrongCert, expiring, weak]) f.dir.cleanup();
    }
  });

  test("usage: --help prints the header, unknown arguments fail", async () => {
    for (const script of ["deploy.sh", "backup.sh", "restore.sh"]) {
      const help = await run([join(ROOT, "ops/scripts", script), "--help"], {
        env: { PATH: process.env.PATH! },
      });
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`Usage: ops/scripts/${script}`);
      const bad = await run([join(ROOT, "ops/scripts", script), "--no-such-flag"], {
        env: { PATH: process.env.PATH! },
      });
      expect(bad.code).not.toBe(0);
    }
  });
});

/**
 * A stand-in for docker (and curl) that records every call and keeps the registry containers in a file,
 * so deploy.sh's real path (rolling update, readiness, roll back) runs without a Docker engine.
 */
const FAKE_DOCKER = `#!/usr/bin/env bash
printf '%s\\n' "$*" >>"$FAKE/calls"
containers="$FAKE/registry"
touch "$containers"
if [[ $1 == compose ]]; then
  shift
  while [[ $1 == --project-directory || $1 == -f || $1 == --env-file ]]; do shift 2; done
  case "$*" in
    version) exit 0 ;;
    "config --quiet") exit 0 ;;
    "ps --status running -q registry") cat "$containers" ;;
    "ps --status running -q nginx") echo nginx-1 ;;
    "ps --status running -q postgres") echo postgres-1 ;;
    "up -d --no-deps --no-recreate --scale registry="*|"up -d --no-deps --scale registry="*)
      have=$(wc -l <"$containers")
      args="$*"; want=\${args#*registry=}; want=\${want%% *}
      for ((i = have + 1; i <= want; i++)); do echo "new-$i" >>"$containers"; done ;;
    logs*) echo "fake registry logs" ;;
  esac
  exit 0
fi
case $1 in
  exec) [[ -f "$FAKE/ready" ]] && exit 0; exit 1 ;;
  inspect) echo "a2a-registry:previous-release" ;;
  stop) exit 0 ;;
  rm) shift; [[ $1 == -f ]] && shift
      for id in "$@"; do grep -vx "$id" "$containers" >"$containers.tmp" || true; mv "$containers.tmp" "$containers"; done ;;
esac
exit 0
`;
const FAKE_CURL = `#!/usr/bin/env bash
printf 'curl %s\\n' "$*" >>"$FAKE/calls"
exit 0
`;

describeWithTools("deploy.sh against a recorded docker", ["openssl"], () => {
  let fixture: Awaited<ReturnType<typeof deployFixture>>;
  let fake: ReturnType<typeof tempDir>;

  beforeAll(async () => {
    fixture = await deployFixture();
    fake = tempDir("a2a-fake-docker-");
    writeFileSync(join(fake.path, "docker"), FAKE_DOCKER, { mode: 0o755 });
    writeFileSync(join(fake.path, "curl"), FAKE_CURL, { mode: 0o755 });
  });
  afterAll(() => {
    fixture?.dir.cleanup();
    fake?.cleanup();
  });

  async function deploy(state: { running: string[]; ready: boolean }) {
    const stateDir = tempDir("a2a-fake-state-");
    writeFileSync(join(stateDir.path, "registry"), state.running.map((id) => `${id}\n`).join(""));
    if (state.ready) writeFileSync(join(stateDir.path, "ready"), "");
    const result = await run([DEPLOY, "--skip-backup", "--timeout", "3"], {
      env: { ...fixture.env, PATH: `${fake.path}:${process.env.PATH}`, FAKE: stateDir.path },
    });
    const calls = readFileSync(join(stateDir.path, "calls"), "utf8")
      .trim()
      .split("\n")
      .map((line) => line.replace(/^compose --project-directory \S+ -f \S+ --env-file \S+ /, "compose "));
    const running = readFileSync(join(stateDir.path, "registry"), "utf8").trim().split("\n").filter(Boolean);
    stateDir.cleanup();
    const at = (call: string) => calls.findIndex((c) => c.startsWith(call));
    return { ...result, calls, running, at };
  }

  test("an update starts new containers beside the old, waits for readiness, switches nginx, then retires the old", async () => {
    const { code, stderr, calls, running, at } = await deploy({ running: ["old-1", "old-2"], ready: true });
    expect(stderr).toContain("deployed test-release");
    expect(code).toBe(0);
    expect(running).toEqual(["new-3", "new-4"]);
    const order = [
      at("compose build --pull registry"),
      at("compose up -d --wait postgres redis elasticsearch"),
      at("compose run --rm --no-deps registry bun run db:migrate"),
      at("compose up -d --no-deps --no-recreate --scale registry=4 registry"),
      at("exec new-3 bun -e"),
      at("exec new-4 bun -e"),
      at("compose exec -T nginx nginx -s reload"),
      at("stop --time 30 old-1 old-2"),
      at("rm old-1 old-2"),
      at("compose up -d --no-deps nginx prometheus grafana"),
      at("curl "),
    ];
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    // The readiness probe is /health/ready inside each new container.
    expect(calls.find((c) => c.startsWith("exec new-3"))).toContain("/health/ready");
    expect(stderr).toContain("to roll back: REGISTRY_TAG=previous-release");
  });

  test("new containers that never get ready are removed; the old ones keep serving", async () => {
    const { code, stderr, calls, running, at } = await deploy({ running: ["old-1", "old-2"], ready: false });
    expect(code).not.toBe(0);
    expect(stderr).toContain("not ready within 3s");
    expect(stderr).toContain("removing the new containers, the previous ones keep serving");
    expect(running).toEqual(["old-1", "old-2"]);
    expect(at("rm -f new-3 new-4")).toBeGreaterThan(0);
    expect(calls.some((c) => c.startsWith("stop"))).toBe(false);
    expect(at("compose up -d --no-deps nginx prometheus grafana")).toBe(-1);
  });

  test("a first deploy starts the replicas without a roll over", async () => {
    const { code, running, calls } = await deploy({ running: [], ready: true });
    expect(code).toBe(0);
    expect(running).toEqual(["new-1", "new-2"]);
    expect(calls).toContain("compose up -d --no-deps --scale registry=2 registry");
    expect(calls.some((c) => c.startsWith("stop"))).toBe(false);
  });

  test("the replica count comes from REGISTRY_REPLICAS in .env.prod", async () => {
    const env = parseEnvFile(readFileSync(fixture.env.ENV_FILE, "utf8"));
    expect(env.REGISTRY_REPLICAS).toBe("2");
  });
});

describe("README production section", () => {
  test("documents the deploy, verification, backup cron and restore commands that exist", () => {
    const readme = read("README.md");
    const section = readme.slice(readme.indexOf("## Production"));
    expect(section.length).toBeGreaterThan(500);
    for (const text of [
      "cp ops/env.prod.example .env.prod",
      "ssl/cert.pem",
      "ops/scripts/deploy.sh",
      "--dry-run",
      "/health",
      "/metrics",
      "/docs",
      "ops/scripts/backup.sh",
      "0 2 * * *",
      "ops/scripts/restore.sh",
    ])
      expect(section).toContain(text);
  });
});
