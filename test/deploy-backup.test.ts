import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, utimesSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import {
  databasesLike,
  databaseUrl,
  describeWithTools,
  POSTGRES_ADMIN_URL,
  postgresReachable,
  psql,
  type Registry,
  ROOT,
  run,
  scratchDatabase,
  startRegistry,
  tempDir,
} from "./support/deploy";

const BACKUP = join(ROOT, "ops/scripts/backup.sh");
const RESTORE = join(ROOT, "ops/scripts/restore.sh");
const CARD = JSON.parse(
  readFileSync(join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
);
const ADMIN = { id: "backup-admin", secret: "backup-admin-secret-0123456789" };

/**
 * What a database holds, computed independently of the scripts: per table the row count and the md5
 * of every row's text in byte order; per sequence its last value.
 */
async function snapshot(url: string) {
  const tables = (
    await psql(
      url,
      `select format('%I.%I', table_schema, table_name) from information_schema.tables
       where table_type = 'BASE TABLE' and table_schema not in ('pg_catalog', 'information_schema') order by 1;`,
    )
  ).split("\n");
  const state: Record<string, string> = {};
  for (const table of tables)
    state[table] = await psql(
      url,
      `set timezone = 'UTC'; select count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\\n' order by t::text collate "C")), '-') from ${table} t;`,
    );
  for (const line of (
    await psql(
      url,
      "select schemaname || '.' || sequencename || ' ' || coalesce(last_value::text, 'unset') from pg_sequences;",
    )
  ).split("\n"))
    state[`sequence ${line.split(" ")[0]}`] = line.split(" ")[1]!;
  return state;
}

/** A copy of a backup archive with its members changed by `edit` (given the unpacked directory). */
async function editedArchive(archive: string, edit: (dir: string) => void) {
  const work = tempDir("a2a-archive-");
  await run(["tar", "-xzf", archive, "-C", work.path]);
  edit(work.path);
  const path = join(work.path, "backup_edited.tar.gz");
  await run(["tar", "-czf", path, "-C", work.path, "manifest.json", "registry.dump"]);
  return { path, cleanup: work.cleanup };
}

function scriptEnv(databaseUrl: string, extra: Record<string, string> = {}) {
  return { PATH: process.env.PATH, HOME: process.env.HOME, DATABASE_URL: databaseUrl, TZ: "UTC", ...extra };
}

describeWithTools(
  "backup.sh and restore.sh against real Postgres",
  ["psql", "pg_dump", "pg_restore", "tar", "sha256sum"],
  () => {
    let reachable = false;
    let database: Awaited<ReturnType<typeof scratchDatabase>>;
    let backups: ReturnType<typeof tempDir>;
    let registry: Registry | undefined;
    let before: Record<string, string>;
    let archive: string;
    let agentIds: string[] = [];

    beforeAll(async () => {
      reachable = await postgresReachable();
      if (!reachable) {
        if (process.env.CI) throw new Error(`Postgres is not reachable at ${POSTGRES_ADMIN_URL}`);
        console.warn(`[skip] backup/restore: no Postgres at ${POSTGRES_ADMIN_URL}`);
        return;
      }
      backups = tempDir("a2a-backups-");
      database = await scratchDatabase("backup");
      const migrate = await run(["bun", "src/cli.ts", "migrate"], {
        env: { ...process.env, DATABASE_URL: database.url },
      });
      expect(migrate.code).toBe(0);

      // Data written by the registry itself: clients, agents with versions, a private one, a deletion, audit.
      registry = await startRegistry({
        DATABASE_URL: database.url,
        ADMIN_CLIENT_ID: ADMIN.id,
        ADMIN_CLIENT_SECRET: ADMIN.secret,
        RATE_LIMIT_WRITE: "100000/1s",
      });
      const token = (
        (await (
          await fetch(`${registry.base}/oauth/token`, {
            method: "POST",
            headers: { authorization: `Basic ${btoa(`${ADMIN.id}:${ADMIN.secret}`)}` },
            body: new URLSearchParams({ grant_type: "client_credentials" }),
          })
        ).json()) as { access_token: string }
      ).access_token;
      const api = (path: string, method: string, body?: unknown) =>
        fetch(`${registry!.base}${path}`, {
          method,
          headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
        });
      expect((await api("/v1/clients", "POST", { name: "publisher", scopes: ["agents:write"] })).status).toBe(
        201,
      );
      for (let i = 0; i < 5; i++) {
        const url = `https://backup-${i}-${Date.now()}.example.com/a2a`;
        const created = await api("/v1/agents", "POST", {
          card: { ...CARD, url, name: `Backup agent ${i} – ünïcode`, version: "1.0.0" },
          visibility: i === 4 ? "private" : "public",
        });
        expect(created.status).toBe(201);
        const { id } = (await created.json()) as { id: string };
        agentIds.push(id);
        if (i < 2)
          expect(
            (await api(`/v1/agents/${id}`, "PUT", { card: { ...CARD, url, version: "1.1.0" } })).status,
          ).toBe(200);
      }
      expect((await api(`/v1/agents/${agentIds[3]}`, "DELETE")).status).toBe(204);
      agentIds = agentIds.slice(0, 3);
      await registry.stop();
      registry = undefined;
      // And rows the API would not write: awkward text, nulls, JSON with newlines and quotes.
      await psql(
        database.url,
        `insert into audit_log (actor, action, target, outcome, details)
       values ('sql', 'test.raw', null, 'success', '{"text": "line1\\nline2 \\"quoted\\" \\\\ tab\\t", "n": null}');`,
      );
      before = await snapshot(database.url);
    }, 120_000);

    /** The target still holds the canary row written before a refused restore, and no work database is left. */
    const expectTargetUntouched = async () => {
      expect(await psql(database.url, "select count(*) from audit_log where action = 'canary';")).toBe("1");
      expect(await databasesLike(`${database.name.slice(0, 36)}_`)).toEqual([]);
    };

    afterAll(async () => {
      await registry?.stop();
      if (!reachable) return;
      await database?.drop();
      for (const name of await databasesLike(`${database.name.slice(0, 36)}_`))
        await psql(POSTGRES_ADMIN_URL, `drop database if exists "${name}" with (force);`);
      backups?.cleanup();
    });

    test("the fixture holds real data in every table the registry writes", () => {
      if (!reachable) return;
      const rows = (table: string) => Number(before[table]!.split(" ")[0]);
      expect(rows("public.agents")).toBe(5);
      expect(rows("public.agent_versions")).toBe(7);
      expect(rows("public.clients")).toBe(2);
      expect(rows("public.audit_log")).toBeGreaterThanOrEqual(9);
      expect(rows("drizzle.__drizzle_migrations")).toBeGreaterThan(0);
    });

    test("backup.sh writes a timestamped archive: custom-format dump + manifest with counts and sha256", async () => {
      if (!reachable) return;
      const result = await run([BACKUP, "--dir", backups.path], { env: scriptEnv(database.url) });
      expect(result.stderr).toContain("wrote");
      expect(result.code).toBe(0);
      archive = result.stdout.trim();
      expect(archive).toMatch(new RegExp(`^${backups.path}/backup_\\d{8}_\\d{6}\\.tar\\.gz$`));
      const name = basename(archive);
      expect(readdirSync(backups.path).sort()).toEqual([name, `${name}.sha256`]);
      const members = await run(["tar", "-tzf", archive]);
      expect(members.stdout.trim().split("\n").sort()).toEqual(["manifest.json", "registry.dump"]);

      const manifest = JSON.parse((await run(["tar", "-xzOf", archive, "manifest.json"])).stdout) as {
        format: string;
        database: string;
        dump_sha256: string;
        dump_bytes: number;
        tables: { table: string; rows: number; digest: string }[];
        sequences: { sequence: string; last_value: string }[];
      };
      expect(manifest.format).toBe("a2a-registry-backup/1");
      expect(manifest.database).toBe(database.name);
      const dump = (
        await run(["sh", "-c", `tar -xzOf '${archive}' registry.dump | sha256sum | cut -d' ' -f1`])
      ).stdout.trim();
      expect(manifest.dump_sha256).toBe(dump);
      expect(manifest.dump_bytes).toBeGreaterThan(1000);
      // Counts equal what the database held (computed independently above).
      const tableNames = Object.keys(before).filter((k) => !k.startsWith("sequence "));
      expect(manifest.tables.map((t) => t.table).sort()).toEqual(tableNames.sort());
      for (const entry of manifest.tables)
        expect(entry.rows).toBe(Number(before[entry.table]!.split(" ")[0]));
      expect(manifest.sequences.find((s) => s.sequence === "public.agent_seq")?.last_value).toBe(
        before["sequence public.agent_seq"]!,
      );
      // The dump is a pg_dump custom-format archive pg_restore can read.
      const list = await run(["sh", "-c", `tar -xzOf '${archive}' registry.dump | pg_restore --list`]);
      expect(list.code).toBe(0);
      expect(list.stdout).toContain("TABLE DATA public agents");
    });

    test("drop the database, restore.sh: every table's row count and content hash, and every sequence, are back", async () => {
      if (!reachable) return;
      await database.drop();
      expect(await databasesLike(database.name)).toEqual([]);
      const result = await run([RESTORE, "--yes", archive], { env: scriptEnv(database.url) });
      expect(result.stderr).toContain("verified: every table's row count and digest");
      expect(result.code).toBe(0);
      expect(await snapshot(database.url)).toEqual(before);
      // Nothing left behind: no scratch database, no renamed copy (there was nothing to replace).
      expect(await databasesLike(`${database.name.slice(0, 36)}_`)).toEqual([]);
    });

    test("the registry serves the restored data: agents, private visibility, tombstone, credentials", async () => {
      if (!reachable) return;
      registry = await startRegistry({ DATABASE_URL: database.url });
      try {
        for (const id of agentIds) expect((await fetch(`${registry.base}/v1/agents/${id}`)).status).toBe(200);
        const list = (await (await fetch(`${registry.base}/v1/agents?limit=100`)).json()) as {
          items: unknown[];
        };
        expect(list.items).toHaveLength(3); // 5 published, one private, one deleted
        const token = await fetch(`${registry.base}/oauth/token`, {
          method: "POST",
          headers: { authorization: `Basic ${btoa(`${ADMIN.id}:${ADMIN.secret}`)}` },
          body: new URLSearchParams({ grant_type: "client_credentials" }),
        });
        expect(token.status).toBe(200);
      } finally {
        await registry.stop();
        registry = undefined;
      }
      // Back to the backed-up state for the tests below (the boot above wrote an audit row).
      expect(
        (await run([RESTORE, "--yes", "--drop-old", archive], { env: scriptEnv(database.url) })).code,
      ).toBe(0);
    });

    test("restoring over a live database keeps the replaced one aside unless --drop-old", async () => {
      if (!reachable) return;
      await psql(
        database.url,
        "insert into audit_log (actor, action, outcome) values ('sql', 'after.backup', 'success');",
      );
      const result = await run([RESTORE, "--yes", archive], { env: scriptEnv(database.url) });
      expect(result.code).toBe(0);
      expect(await snapshot(database.url)).toEqual(before);
      const kept = await databasesLike(`${database.name.slice(0, 36)}_pre_restore_`);
      expect(kept).toHaveLength(1);
      expect(result.stderr).toContain(`kept as ${kept[0]}`);
      expect(
        await psql(databaseUrl(kept[0]!), "select count(*) from audit_log where action = 'after.backup';"),
      ).toBe("1");
      await psql(POSTGRES_ADMIN_URL, `drop database "${kept[0]}";`);
    });

    test("a tampered dump is refused before anything is touched", async () => {
      if (!reachable) return;
      const tampered = await editedArchive(archive, (dir) => {
        const dump = join(dir, "registry.dump");
        const bytes = readFileSync(dump);
        bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0xff;
        writeFileSync(dump, bytes);
      });
      try {
        await psql(
          database.url,
          "insert into audit_log (actor, action, outcome) values ('sql', 'canary', 'success');",
        );
        const result = await run([RESTORE, "--yes", tampered.path], { env: scriptEnv(database.url) });
        expect(result.code).not.toBe(0);
        expect(result.stderr).toContain("dump checksum mismatch");
        await expectTargetUntouched();
      } finally {
        tampered.cleanup();
      }
    });

    test("a manifest the restored data does not match fails verification; the target stays as it was", async () => {
      if (!reachable) return;
      const bad = await editedArchive(archive, (dir) => {
        const manifestPath = join(dir, "manifest.json");
        const manifest = readFileSync(manifestPath, "utf8");
        const changed = manifest.replace(/("table": "public\.agents", "rows": )5,/, "$16,");
        expect(changed).not.toBe(manifest);
        writeFileSync(manifestPath, changed);
      });
      try {
        const result = await run([RESTORE, "--yes", bad.path], { env: scriptEnv(database.url) });
        expect(result.code).not.toBe(0);
        expect(result.stderr).toContain("does not match the manifest");
        expect(result.stderr).toContain("public.agents|6|");
        expect(result.stderr).toContain("was not touched");
        await expectTargetUntouched();
      } finally {
        bad.cleanup();
      }
    });

    test("--verify-only proves an archive restorable without touching the target; no --yes without a terminal", async () => {
      if (!reachable) return;
      const verify = await run([RESTORE, "--verify-only", archive], { env: scriptEnv(database.url) });
      expect(verify.code).toBe(0);
      expect(verify.stderr).toContain("untouched");
      const unconfirmed = await run([RESTORE, archive], { env: scriptEnv(database.url) });
      expect(unconfirmed.code).not.toBe(0);
      expect(unconfirmed.stderr).toContain("--yes");
      await expectTargetUntouched();
    });

    test("a backup taken while rows are written still matches its dump exactly (one snapshot)", async () => {
      if (!reachable) return;
      const dir = tempDir("a2a-backup-live-");
      let writing = true;
      const writer = (async () => {
        while (writing)
          await psql(
            database.url,
            "insert into audit_log (actor, action, outcome) select 'writer', 'live.write', 'success' from generate_series(1, 50);",
          );
      })();
      try {
        await Bun.sleep(200);
        const backup = await run([BACKUP, "--dir", dir.path], { env: scriptEnv(database.url) });
        writing = false;
        await writer;
        expect(backup.code).toBe(0);
        // Restoring checks the dump against the manifest's counts and digests: they must agree exactly.
        const verify = await run([RESTORE, "--verify-only", backup.stdout.trim()], {
          env: scriptEnv(database.url),
        });
        expect(verify.stderr).toContain("verified");
        if (verify.code !== 0) console.error(verify.stderr);
        expect(verify.code).toBe(0);
      } finally {
        writing = false;
        await writer;
        dir.cleanup();
      }
    });

    test("retention removes only archives older than --keep-days, after a successful backup", async () => {
      if (!reachable) return;
      const dir = tempDir("a2a-retention-");
      try {
        const old = join(dir.path, "backup_20000101_020000.tar.gz");
        const recent = join(dir.path, "backup_20000102_020000.tar.gz");
        const unrelated = join(dir.path, "notes.txt");
        for (const file of [old, `${old}.sha256`, recent, unrelated]) writeFileSync(file, "x");
        const days = (n: number) => new Date(Date.now() - n * 86_400_000);
        for (const file of [old, `${old}.sha256`, unrelated]) utimesSync(file, days(10), days(10));
        utimesSync(recent, days(6), days(6));
        const result = await run([BACKUP, "--dir", dir.path, "--keep-days", "7"], {
          env: scriptEnv(database.url),
        });
        expect(result.code).toBe(0);
        expect(result.stderr).toContain(`retention: removed ${old}`);
        expect(existsSync(old)).toBe(false);
        expect(existsSync(`${old}.sha256`)).toBe(false);
        expect(existsSync(recent)).toBe(true);
        expect(existsSync(unrelated)).toBe(true);
        expect(existsSync(result.stdout.trim())).toBe(true);
      } finally {
        dir.cleanup();
      }
    });

    test("any failure exits non-zero and leaves no archive or temp files", async () => {
      if (!reachable) return;
      const dir = tempDir("a2a-backup-fail-");
      try {
        const old = join(dir.path, "backup_20000101_020000.tar.gz");
        writeFileSync(old, "x");
        utimesSync(old, new Date(0), new Date(0));
        const missing = await run([BACKUP, "--dir", dir.path, "--keep-days", "1"], {
          env: scriptEnv(databaseUrl("a2a_test_no_such_database")),
        });
        expect(missing.code).not.toBe(0);
        expect(missing.stderr).toContain("could not open a snapshot");
        // Nothing new, nothing half-written, and retention did not run.
        expect(readdirSync(dir.path)).toEqual(["backup_20000101_020000.tar.gz"]);
        const badArgs = await run([BACKUP, "--keep-days", "soon"], { env: scriptEnv(database.url) });
        expect(badArgs.code).not.toBe(0);
        const notAnArchive = join(dir.path, "backup_20000101_020000.tar.gz");
        const restore = await run([RESTORE, "--yes", notAnArchive], { env: scriptEnv(database.url) });
        expect(restore.code).not.toBe(0);
        await expectTargetUntouched();
      } finally {
        dir.cleanup();
      }
    });
  },
);
