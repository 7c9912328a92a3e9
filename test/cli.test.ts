import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { sql } from "drizzle-orm";
import { createTestApp, json, type TestApp } from "./support/app";
import { type BackendName, createTestDatabase, type TestDatabase } from "./support/db";

// Spawns child processes that each open (and on first use initialise) an embedded database; the
// 5 s default is too tight on a loaded machine. (bunfig.toml `[test] timeout` is not applied by bun.)

const ROOT = resolve(import.meta.dir, "..");

type CliResult = { code: number; stdout: string; stderr: string };

/** Runs `bun src/cli.ts ...args` as a child process and collects its output. */
async function runCli(args: string[], env: Record<string, string>): Promise<CliResult> {
  const proc = Bun.spawn(["bun", "src/cli.ts", ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: "",
      ADMIN_CLIENT_ID: "",
      ADMIN_CLIENT_SECRET: "",
      LOG_LEVEL: "warn",
      ...env,
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

/** Parses the `client_id:` / `client_secret:` lines `clients create` prints. */
function parseCreated(stdout: string) {
  const clientId = /^client_id:\s+(\S+)$/m.exec(stdout)?.[1];
  const clientSecret = /^client_secret:\s+(\S+)$/m.exec(stdout)?.[1];
  const scopes = /^scopes:\s+(.+)$/m.exec(stdout)?.[1];
  if (!clientId || !clientSecret) throw new Error(`unexpected clients create output:\n${stdout}`);
  return { clientId, clientSecret, scopes: scopes?.trim().split(/\s+/) ?? [] };
}

/** The rows of `clients list`: id, state, scopes, name, created_at separated by tabs. */
function parseList(stdout: string) {
  return stdout
    .split("\n")
    .filter((line) => line.trim() !== "")
    .map((line) => {
      const [clientId, state, scopes, name, createdAt] = line.split("\t");
      return { clientId, state, scopes: scopes?.split(","), name, createdAt };
    });
}

const basic = (id: string, secret: string) =>
  `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString("base64")}`;

function requestToken(t: TestApp, clientId: string, clientSecret: string) {
  return t.request("/oauth/token", {
    method: "POST",
    form: { grant_type: "client_credentials" },
    headers: { authorization: basic(clientId, clientSecret) },
  });
}

/** Opens an app over a database the CLI wrote to, runs `fn`, and closes both (PGlite: one process at a time). */
async function withApp<T>(
  backend: BackendName,
  open: () => Promise<TestDatabase>,
  fn: (t: TestApp) => Promise<T>,
): Promise<T> {
  const db = await open();
  const t = await createTestApp(backend, { db });
  try {
    return await fn(t);
  } finally {
    await t.close();
    await db.drop();
  }
}

const expectUsage = (result: CliResult) => {
  expect(result.code).not.toBe(0);
  expect(`${result.stdout}\n${result.stderr}`).toContain("Usage:");
  expect(`${result.stdout}\n${result.stderr}`).not.toContain("    at ");
};

// ---------------------------------------------------------------------------------------------------

describe("cli [pglite in DATA_DIR]", () => {
  let dataDir: string;
  const env = () => ({ DATA_DIR: dataDir });
  const openDb = () => createTestDatabase("pglite", { dataDir });
  let created: { clientId: string; clientSecret: string; scopes: string[] };
  let createRun: CliResult;

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "a2a-cli-"));
  });
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
  });

  describe("happy", () => {
    test("migrate exits 0 on a fresh data dir", async () => {
      const result = await runCli(["migrate"], env());
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toContain("migrations applied");
      // Running it again is a no-op, not an error.
      const again = await runCli(["migrate"], env());
      expect(again.code, again.stdout + again.stderr).toBe(0);
    });

    test("clients create prints client_id and client_secret once", async () => {
      createRun = await runCli(
        ["clients", "create", "--name", "CLI Client", "--scopes", "agents:read,agents:write"],
        env(),
      );
      expect(createRun.code, createRun.stdout + createRun.stderr).toBe(0);
      created = parseCreated(createRun.stdout);
      expect(created.clientId).toStartWith("cli_");
      expect(created.clientSecret.length).toBeGreaterThanOrEqual(32);
      expect(created.scopes.sort()).toEqual(["agents:read", "agents:write"]);
      expect(createRun.stdout.split(created.clientSecret).length - 1).toBe(1);
      expect(createRun.stderr).not.toContain(created.clientSecret);
    });

    test("clients list shows the client but never its secret or hash", async () => {
      const result = await runCli(["clients", "list"], env());
      expect(result.code, result.stdout + result.stderr).toBe(0);
      const rows = parseList(result.stdout);
      const row = rows.find((r) => r.clientId === created.clientId);
      expect(row).toBeDefined();
      expect(row!.state).toBe("active");
      expect(row!.name).toBe("CLI Client");
      expect(row!.scopes?.sort()).toEqual(["agents:read", "agents:write"]);
      expect(result.stdout + result.stderr).not.toContain(created.clientSecret);
      expect(result.stdout).not.toContain("$argon2");
    });

    test("the printed secret works at /oauth/token; only its argon2id hash is stored; the creation is audited", async () => {
      await withApp("pglite", openDb, async (t) => {
        const res = await requestToken(t, created.clientId, created.clientSecret);
        expect(res.status, await res.clone().text()).toBe(200);
        const body = await json<{ scope: string }>(res);
        expect(body.scope.split(" ").sort()).toEqual(["agents:read", "agents:write"]);

        const rows = await t.db.database.rows<{ secret_hash: string; whole: string }>(
          sql`select secret_hash, c::text as whole from clients c where client_id = ${created.clientId}`,
        );
        expect(rows).toHaveLength(1);
        expect(rows[0]!.secret_hash).toStartWith("$argon2id$");
        expect(rows[0]!.whole).not.toContain(created.clientSecret);

        const audit = await t.db.database.rows<{ actor: string; outcome: string; details: unknown }>(
          sql`select actor, outcome, details from audit_log where action = 'client.created' and target = ${created.clientId}`,
        );
        expect(audit).toHaveLength(1);
        expect(audit[0]!.actor).toBe("cli");
        expect(audit[0]!.outcome).toBe("success");
        expect(JSON.stringify(audit[0]!.details)).not.toContain(created.clientSecret);
      });
    });

    test("clients revoke marks it revoked in the list and the token endpoint refuses it", async () => {
      const result = await runCli(["clients", "revoke", created.clientId], env());
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toContain(created.clientId);

      const list = await runCli(["clients", "list"], env());
      expect(list.code).toBe(0);
      expect(parseList(list.stdout).find((r) => r.clientId === created.clientId)?.state).toBe("revoked");

      await withApp("pglite", openDb, async (t) => {
        const res = await requestToken(t, created.clientId, created.clientSecret);
        expect(res.status).toBe(401);
        expect((await json<{ error: string }>(res)).error).toBe("invalid_client");
        const audit = await t.db.database.rows<{ actor: string }>(
          sql`select actor from audit_log where action = 'client.revoked' and target = ${created.clientId}`,
        );
        expect(audit.map((a) => a.actor)).toEqual(["cli"]);
      });
    });

    test("help prints usage and exits 0", async () => {
      const result = await runCli(["help"], env());
      expect(result.code).toBe(0);
      expect(result.stdout).toContain("Usage:");
      expect(result.stdout).toContain("clients create");
    });
  });

  describe("errors", () => {
    test("an unknown scope -> non-zero exit with a usage message; nothing is created", async () => {
      const before = parseList((await runCli(["clients", "list"], env())).stdout).length;
      const result = await runCli(
        ["clients", "create", "--name", "Bad", "--scopes", "agents:read,superuser"],
        env(),
      );
      expectUsage(result);
      expect(result.stdout + result.stderr).toContain("superuser");
      expect(result.stdout).not.toMatch(/client_secret:/);
      const after = parseList((await runCli(["clients", "list"], env())).stdout);
      expect(after.length).toBe(before);
      expect(after.some((r) => r.name === "Bad")).toBe(false);
    });

    test("other usage errors exit non-zero with the usage text", async () => {
      const cases: string[][] = [
        ["clients", "create", "--scopes", "agents:read"], // no --name
        ["clients", "create", "--name", "X", "--scopes", ""], // empty scope list
        ["clients", "create", "--name", "X", "--bogus", "y"], // unknown option
        ["clients", "revoke"], // no id
        ["clients", "frobnicate"],
        ["clients"],
        ["nonsense"],
        [],
      ];
      // Sequential on the already-migrated data dir: PGlite allows one process at a time.
      for (const args of cases) {
        const result = await runCli(args, env());
        expect({ args, code: result.code === 0 ? 0 : "non-zero" }).toEqual({ args, code: "non-zero" });
        expectUsage(result);
      }
      const list = parseList((await runCli(["clients", "list"], env())).stdout);
      expect(list.some((r) => r.name === "X")).toBe(false);
    });

    test("revoking an unknown client exits 1 and says so", async () => {
      const result = await runCli(["clients", "revoke", "cli_does_not_exist"], env());
      expect(result.code).toBe(1);
      expect(result.stdout + result.stderr).toContain("No client cli_does_not_exist");
    });
  });

  describe("security", () => {
    test("a malformed DATABASE_URL fails with a configuration error naming the variable", async () => {
      const result = await runCli(["clients", "list"], { DATA_DIR: dataDir, DATABASE_URL: "mysql://nope" });
      expect(result.code).not.toBe(0);
      expect(result.stderr).toContain("DATABASE_URL");
      expect(result.stderr).not.toContain("    at ");
    });
  });
});

// ---------------------------------------------------------------------------------------------------

describe.if(Boolean(process.env.TEST_DATABASE_URL))("cli [postgres via DATABASE_URL]", () => {
  let db: TestDatabase;
  let t: TestApp;
  const env = () => ({ DATABASE_URL: db.url!, DATA_DIR: join(tmpdir(), "a2a-cli-unused") });

  beforeAll(async () => {
    db = await createTestDatabase("postgres");
    t = await createTestApp("postgres", { db });
  });
  afterAll(async () => {
    await t?.close();
    await db?.drop();
  });

  test("migrate exits 0 against Postgres", async () => {
    const result = await runCli(["migrate"], env());
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toContain("postgres");
  });

  test("clients create, list, token, revoke against a fresh Postgres database", async () => {
    const result = await runCli(["clients", "create", "--name", "PG Client", "--scopes", "admin"], env());
    expect(result.code, result.stdout + result.stderr).toBe(0);
    const created = parseCreated(result.stdout);
    expect(created.scopes).toEqual(["admin"]);

    const list = await runCli(["clients", "list"], env());
    expect(list.code).toBe(0);
    expect(parseList(list.stdout).find((r) => r.clientId === created.clientId)?.state).toBe("active");
    expect(list.stdout).not.toContain(created.clientSecret);

    const ok = await requestToken(t, created.clientId, created.clientSecret);
    expect(ok.status, await ok.clone().text()).toBe(200);
    const { access_token: token } = await json<{ access_token: string }>(ok);
    expect((await t.request("/v1/clients", { token })).status).toBe(200);

    const revoke = await runCli(["clients", "revoke", created.clientId], env());
    expect(revoke.code, revoke.stdout + revoke.stderr).toBe(0);
    // The live token stops working at once, even though the revocation came from another process.
    expect((await t.request("/v1/clients", { token })).status).toBe(401);
    expect((await requestToken(t, created.clientId, created.clientSecret)).status).toBe(401);
  });

  test("reindex rebuilds lost or damaged search rows, with progress and a final count", async () => {
    const writer = await t.client(["agents:write"], "reindex writer");
    for (const n of [1, 2, 3]) {
      const res = await t.request("/v1/agents", {
        method: "POST",
        token: writer.token,
        json: {
          card: {
            protocolVersion: "0.3.0",
            name: `Reindex Agent ${n}`,
            description: "Knows about quokkas.",
            url: `https://reindex-${n}-${Date.now()}.example.com/a2a`,
            version: "1.0.0",
            capabilities: {},
            defaultInputModes: ["text/plain"],
            defaultOutputModes: ["text/plain"],
            skills: [{ id: "s", name: "s", description: "s", tags: ["t"] }],
          },
        },
      });
      expect(res.status).toBe(201);
    }
    const found = async () =>
      (await json<{ total: number }>(await t.request("/v1/search?q=quokkas&consistent=true"))).total;
    expect(await found()).toBe(3);
    // Damage what the triggers derived: one agent's search row lost, the others emptied, and a search row
    // left behind for an agent that is gone.
    const [lost] = await t.db.database.rows<{ id: string }>(
      sql`delete from agent_search where id = (select id from agent_search order by seq limit 1) returning id`,
    );
    await t.db.database.rows(sql`update agent_search set search_doc = ''::tsvector, facet_ids = '{}'`);
    await t.db.database.rows(sql`alter table agents disable trigger agent_search_updated`);
    await t.db.database.rows(
      sql`update agents set deleted_at = now(), status = 'deleted' where id = ${lost!.id}`,
    );
    await t.db.database.rows(sql`alter table agents enable trigger agent_search_updated`);
    await t.db.database.rows(sql`insert into agent_search (id, seq, visibility, owner, status, health, streaming,
      signature, provider, name, facet_ids, search_doc)
      select id, seq, visibility, owner, 'active', health, streaming, signature, provider, lower(name), '{}',
        to_tsvector('simple', 'quokkas') from agents where id = ${lost!.id}`);
    expect(await found()).toBe(1);

    const result = await runCli(["reindex"], env());
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^reindexed 2 agents into postgres in [\d.]+s$/m);
    expect(result.stderr).toContain("100% 2/2 agents");
    expect(await found()).toBe(2);
    const tagged = await json<{ total: number; facets: { tags: { value: string; count: number }[] } }>(
      await t.request("/v1/search?tag=t&consistent=true"),
    );
    expect(tagged.total).toBe(2);
    expect(tagged.facets.tags).toEqual([{ value: "t", count: 2 }]);
    const rows = await t.db.database.rows<{ n: number }>(sql`select count(*)::int as n from agent_search`);
    expect(Number(rows[0]!.n)).toBe(2);
  });
});
