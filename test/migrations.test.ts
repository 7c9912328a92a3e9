/**
 * Upgrading an existing database: rows written by the schema of migration 0006 (the card stored as jsonb
 * beside its exact text, in agents and agent_versions) are still served byte for byte after 0007 drops
 * the jsonb copies, and the upgraded database takes new writes. Agents written before 0008 get their
 * search rows (agent_search) from it, and search finds them as before.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import type { PgliteDatabase } from "drizzle-orm/pglite";
import { migrate as migratePglite } from "drizzle-orm/pglite/migrator";
import type { PostgresJsDatabase } from "drizzle-orm/postgres-js";
import { migrate as migratePostgres } from "drizzle-orm/postgres-js/migrator";
import { type Database, MIGRATIONS_FOLDER } from "../src/infra/db/client";
import { analyzeCard, cardHash } from "../src/modules/agents/card";
import { facetKeysOf } from "../src/modules/agents/repo";
import { copyId } from "../src/modules/federation/page";
import { createTestApp, json, type TestApp } from "./support/app";
import { type BackendName, BACKENDS, createTestDatabase } from "./support/db";
import { cardFor } from "./support/federation";

type Journal = { entries: Array<{ idx: number; tag: string }> };

/** A copy of drizzle/ holding only the migrations up to `lastIdx`, as an older release shipped it. */
function migrationsUpTo(lastIdx: number): string {
  const dir = mkdtempSync(join(tmpdir(), "a2a-migrations-"));
  mkdirSync(join(dir, "meta"));
  const journal = JSON.parse(readFileSync(join(MIGRATIONS_FOLDER, "meta/_journal.json"), "utf8")) as Journal;
  const entries = journal.entries.filter((e) => e.idx <= lastIdx);
  writeFileSync(join(dir, "meta/_journal.json"), JSON.stringify({ ...journal, entries }));
  for (const { tag } of entries) copyFileSync(join(MIGRATIONS_FOLDER, `${tag}.sql`), join(dir, `${tag}.sql`));
  return dir;
}

async function migrateWith(database: Database, folder: string) {
  if (database.kind === "pglite")
    await migratePglite(database.db as unknown as PgliteDatabase, { migrationsFolder: folder });
  else await migratePostgres(database.db as unknown as PostgresJsDatabase, { migrationsFolder: folder });
}

/** A text[] from a JS array (drizzle would spread an array into a parameter list). */
const textArray = (values: string[]) =>
  sql`array(select json_array_elements_text(${JSON.stringify(values)}::json))`;

/** The card's text as a publisher might send it: its own key order and spacing, not canonical. */
const published = (card: Record<string, unknown>) => JSON.stringify(card, null, 1);

type LegacyRow = {
  id: string;
  owner: string | null;
  visibility: "public" | "private";
  texts: string[];
  origin?: { registry: string; id: string };
  deleted?: boolean;
};

/**
 * An agent row and its versions as an older schema stored them: at 0006 the card as jsonb beside its
 * text (`jsonb`), at 0007 the text only.
 */
async function insertLegacy(database: Database, row: LegacyRow, jsonb: boolean) {
  const latest = row.texts.at(-1)!;
  const analysis = analyzeCard(JSON.parse(latest));
  if (!analysis.ok) throw new Error("fixture card is invalid");
  const f = analysis.facets;
  const card = (text: string) => (jsonb ? sql`${text}::jsonb, ` : sql``);
  const cardColumn = jsonb ? sql`card, ` : sql``;
  await database.rows(sql`
    insert into agents (id, owner, name, description, url, visibility, status, generation, protocol_version,
      latest_version, ${cardColumn}card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys,
      streaming, provider, origin_registry, origin_id, seq, deleted_at)
    values (${row.id}, ${row.owner}, ${analysis.name}, ${analysis.description}, ${analysis.primaryUrl},
      ${row.visibility}, ${row.deleted ? "deleted" : "active"}, ${analysis.generation},
      ${analysis.protocolVersion}, ${analysis.version}, ${card(latest)}${latest},
      ${cardHash(JSON.parse(latest))}, ${textArray(f.skills)}, ${textArray(f.tags)}, ${textArray(f.inputModes)},
      ${textArray(f.outputModes)}, ${textArray(facetKeysOf(f))}, ${f.streaming}, ${f.provider},
      ${row.origin?.registry ?? null}, ${row.origin?.id ?? null}, nextval('agent_seq'),
      ${row.deleted ? sql`now()` : null})`);
  for (const text of row.texts) {
    const version = (JSON.parse(text) as { version: string }).version;
    await database.rows(sql`
      insert into agent_versions (agent_id, version, ${cardColumn}card_raw, card_hash)
      values (${row.id}, ${version}, ${card(text)}${text}, ${cardHash(JSON.parse(text))})`);
  }
}

const insertAt0006 = (database: Database, row: LegacyRow) => insertLegacy(database, row, true);
const insertAt0007 = (database: Database, row: LegacyRow) => insertLegacy(database, row, false);

type LegacyAgent = { id: string; text: string };

/** Besides a plain public agent, what an upgrade must carry: a private agent, a federated copy, a tombstone. */
async function insertShapes(
  insert: (row: LegacyRow) => Promise<void>,
  owner: string,
  rows: { hidden: LegacyAgent; copy: LegacyAgent & { originId: string }; gone: LegacyAgent },
) {
  const { hidden, copy, gone } = rows;
  await insert({ id: hidden.id, owner, visibility: "private", texts: [hidden.text] });
  await insert({
    id: copy.id,
    owner: null,
    visibility: "public",
    texts: [copy.text],
    origin: { registry: "old-peer", id: copy.originId },
  });
  await insert({ id: gone.id, owner, visibility: "public", texts: [gone.text], deleted: true });
}

/**
 * The app over a database an older release left: migrated up to `lastIdx`, filled by `fill` as that
 * release wrote, then upgraded as a boot of this release does (the pending migrations applied).
 */
async function upgradedApp(
  backend: BackendName,
  lastIdx: number,
  fill: (database: Database) => Promise<void>,
) {
  const folder = migrationsUpTo(lastIdx);
  const db = await createTestDatabase(backend, { migrate: false });
  await migrateWith(db.database, folder);
  await fill(db.database);
  await db.database.migrate();
  const t = await createTestApp(backend, { db });
  const close = async () => {
    await t.close();
    await t.db.drop();
    rmSync(folder, { recursive: true, force: true });
  };
  return { t, close };
}

const columnsOf = async (database: Database, table: string) =>
  (
    await database.rows<{ column_name: string }>(
      sql`select column_name from information_schema.columns where table_name = ${table}`,
    )
  ).map((r) => r.column_name);

for (const backend of BACKENDS) {
  describe(`migration 0007: the card's text is its only copy [${backend}]`, () => {
    let t: TestApp;
    let close: () => Promise<void>;
    const ownerSecret = `owner-secret-${crypto.randomUUID()}`;
    const v1 = cardFor("Upgraded", { version: "1.0.0" });
    const v2 = { ...v1, version: "1.1.0", description: "The second version, spelt with its own spacing." };
    const local = { id: crypto.randomUUID(), texts: [published(v1), published(v2)] };
    const hidden = { id: crypto.randomUUID(), text: published(cardFor("Hidden")) };
    const originId = crypto.randomUUID();
    const copy = { id: copyId("old-peer", originId), originId, text: JSON.stringify(cardFor("Copied")) };
    const gone = { id: crypto.randomUUID(), text: published(cardFor("Retired")) };

    beforeAll(async () => {
      ({ t, close } = await upgradedApp(backend, 6, async (database) => {
        expect(await columnsOf(database, "agents")).toContain("card");
        await database.rows(sql`insert into clients (id, client_id, secret_hash, name, scopes)
        values (${crypto.randomUUID()}, 'legacy-owner', ${await Bun.password.hash(ownerSecret, { algorithm: "argon2id" })},
          'owner from before', ${textArray(["agents:write"])})`);
        await insertAt0006(database, { ...local, owner: "legacy-owner", visibility: "public" });
        await insertShapes((row) => insertAt0006(database, row), "legacy-owner", { hidden, copy, gone });
      }));
    }, 60_000);
    afterAll(() => close());

    const ownerToken = async () =>
      (
        await t.app.services.auth.issueToken({
          clientId: "legacy-owner",
          clientSecret: ownerSecret,
          scope: undefined,
        })
      ).access_token;

    test("both jsonb copies are gone and every row is still there", async () => {
      expect(await columnsOf(t.db.database, "agents")).not.toContain("card");
      expect(await columnsOf(t.db.database, "agents")).toContain("card_raw");
      expect(await columnsOf(t.db.database, "agent_versions")).not.toContain("card");
      const [counts] = await t.db.database.rows<{ agents: number; versions: number }>(
        sql`select (select count(*)::int from agents) as agents, (select count(*)::int from agent_versions) as versions`,
      );
      expect(counts).toEqual({ agents: 4, versions: 5 });
    });

    test("an agent published before the upgrade: record, card bytes, ETag and versions as before", async () => {
      const record = await t.request(`/v1/agents/${local.id}`);
      expect(record.status).toBe(200);
      const body = await json<{ card: unknown; version: string; cardHash: string }>(record);
      expect(body.card).toEqual(v2);
      expect(body.version).toBe("1.1.0");
      expect(body.cardHash).toBe(cardHash(v2));
      const card = await t.request(`/v1/agents/${local.id}/card`);
      expect(await card.text()).toBe(local.texts[1]!);
      expect(card.headers.get("etag")).toBe(`"${cardHash(v2).slice(0, 40)}-active"`);
      const versions = await json<{ items: Array<{ version: string; cardHash: string }> }>(
        await t.request(`/v1/agents/${local.id}/versions`),
      );
      expect(versions.items.map((v) => [v.version, v.cardHash])).toEqual([
        ["1.1.0", cardHash(v2)],
        ["1.0.0", cardHash(v1)],
      ]);
      const first = await t.request(`/v1/agents/${local.id}/versions/1.0.0`);
      expect(await first.text()).toBe(local.texts[0]!);
      expect(first.headers.get("etag")).toBe(`"${cardHash(v1).slice(0, 40)}"`);
    });

    test("a private agent stays hidden from others and readable by its owner", async () => {
      expect((await t.request(`/v1/agents/${hidden.id}`)).status).toBe(404);
      expect((await t.request(`/v1/agents/${hidden.id}/card`)).status).toBe(404);
      const other = await t.client(["agents:read"], "someone else");
      expect((await t.request(`/v1/agents/${hidden.id}/card`, { token: other.token })).status).toBe(404);
      const token = await ownerToken();
      const card = await t.request(`/v1/agents/${hidden.id}/card`, { token });
      expect(card.status).toBe(200);
      expect(await card.text()).toBe(hidden.text);
    });

    test("a federated copy and a tombstone from before: served and fed as before", async () => {
      const copied = await json<{ source: { registry: string; federated: boolean } }>(
        await t.request(`/v1/agents/${copy.id}`),
      );
      expect(copied.source).toMatchObject({ registry: "old-peer", federated: true });
      expect(await (await t.request(`/v1/agents/${copy.id}/card`)).text()).toBe(copy.text);
      expect((await t.request(`/v1/agents/${gone.id}`)).status).toBe(404);

      const reader = await t.client(["agents:read"], "feed reader");
      const feed = await json<{ changes: Array<{ id: string; op: string; agent?: { card: unknown } }> }>(
        await t.request("/v1/changes?since=0", { token: reader.token }),
      );
      const byId = new Map(feed.changes.map((c) => [c.id, c]));
      expect(byId.get(local.id)?.agent?.card).toEqual(v2);
      expect(byId.get(gone.id)?.op).toBe("delete");
      expect(byId.has(copy.id)).toBe(false);
      expect(byId.has(hidden.id)).toBe(false);
    });

    test("the upgraded database takes new versions and publishes, stored as their text only", async () => {
      const token = await ownerToken();
      const v3 = { ...v2, version: "1.2.0" };
      const text = published(v3);
      const updated = await t.request(`/v1/agents/${local.id}`, {
        method: "PUT",
        json: `{"card": ${text}}`,
        token,
      });
      expect(updated.status).toBe(200);
      expect(await (await t.request(`/v1/agents/${local.id}/card`)).text()).toBe(text);
      expect(await (await t.request(`/v1/agents/${local.id}/versions/1.0.0`)).text()).toBe(local.texts[0]!);
      const fresh = cardFor("After the upgrade");
      const created = await t.request("/v1/agents", { method: "POST", json: { card: fresh }, token });
      expect(created.status).toBe(201);
      const { id } = await json<{ id: string }>(created);
      expect(JSON.parse(await (await t.request(`/v1/agents/${id}/card`)).text())).toEqual(fresh);
    });
  });
}

for (const backend of BACKENDS) {
  describe(`migration 0008: agents written before get their search rows [${backend}]`, () => {
    let t: TestApp;
    let close: () => Promise<void>;
    const describeAs = (name: string, description: string) => cardFor(name, { name, description });
    const shown = {
      id: crypto.randomUUID(),
      text: published(describeAs("Upgraded Oracle", "Reads marmalade omens.")),
    };
    const hidden = {
      id: crypto.randomUUID(),
      text: published(describeAs("Hidden Oracle", "Reads marmalade runes.")),
    };
    const copy = {
      id: copyId("old-peer", "o-1"),
      originId: "o-1",
      text: JSON.stringify(describeAs("Copied Oracle", "Reads marmalade stars.")),
    };
    const gone = {
      id: crypto.randomUUID(),
      text: published(describeAs("Retired Oracle", "Reads marmalade tea.")),
    };

    beforeAll(async () => {
      ({ t, close } = await upgradedApp(backend, 7, async (database) => {
        expect(await columnsOf(database, "agents")).toContain("search_doc");
        await insertAt0007(database, {
          id: shown.id,
          owner: "someone",
          visibility: "public",
          texts: [shown.text],
        });
        await insertShapes((row) => insertAt0007(database, row), "someone", { hidden, copy, gone });
      }));
    }, 60_000);
    afterAll(() => close());

    test("every live agent has its search row, the document derived from its columns; none for the tombstone", async () => {
      expect(await columnsOf(t.db.database, "agents")).not.toContain("search_doc");
      const rows = await t.db.database.rows<{ id: string; same: boolean }>(sql`
        select s.id, s.search_doc = agent_search_document(a.name, a.description, a.skills, a.tags)
          and s.seq = a.seq and s.visibility = a.visibility and s.name = lower(a.name)
          -- 0010: every facet key and the provider numbered, and the row holding exactly those numbers.
          and cardinality(s.facet_ids) = (select count(distinct k) from unnest(a.facet_keys || ('provider:' || a.provider)) k
            where k is not null)
          and (select array_agg(n order by n) from unnest(s.facet_ids) n) is not distinct from
            (select array_agg(v.id order by v.id) from facet_values v
              where v.key = any(a.facet_keys || ('provider:' || a.provider))) as same
        from agent_search s join agents a on a.id = s.id order by a.seq`);
      expect(rows).toEqual([
        { id: shown.id, same: true },
        { id: hidden.id, same: true },
        { id: copy.id, same: true },
      ]);
      // 0013: the lexemes of the documents written before it are listed (a prefix is looked up there).
      const [lexemes] = await t.db.database.rows<{ listed: number; unlisted: number }>(sql`
        select (select count(*) from search_lexemes)::int as listed,
          (select count(*) from agent_search d, unnest(tsvector_to_array(d.search_doc)) l
            where not exists (select 1 from search_lexemes x where x.lexeme = l))::int as unlisted`);
      expect(lexemes!.unlisted).toBe(0);
      expect(lexemes!.listed).toBeGreaterThan(10);
    });

    test("search finds them as before: visibility, totals and new writes", async () => {
      const names = async (token?: string) =>
        (
          await json<{ total: number; items: Array<{ agent: { name: string } }> }>(
            await t.request("/v1/search?q=marmalade&consistent=true", token ? { token } : {}),
          )
        ).items
          .map((item) => item.agent.name)
          .sort();
      expect(await names()).toEqual(["Copied Oracle", "Upgraded Oracle"]);
      const admin = await t.client(["admin"], "upgrade admin");
      expect(await names(admin.token)).toEqual(["Copied Oracle", "Hidden Oracle", "Upgraded Oracle"]);
      const writer = await t.client(["agents:write"], "upgrade writer");
      const created = await t.request("/v1/agents", {
        method: "POST",
        token: writer.token,
        json: { card: describeAs("Fresh Oracle", "Reads marmalade clouds.") },
      });
      expect(created.status).toBe(201);
      expect(await names()).toEqual(["Copied Oracle", "Fresh Oracle", "Upgraded Oracle"]);
    });
  });

  describe(`migration 0009: card texts compressed with lz4 where the server has it [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend);
    });
    afterAll(() => t.close());

    test("new card texts are lz4 on a server built with it, the default elsewhere; both read back", async () => {
      const [settings] = await t.db.database.rows<{ lz4: boolean }>(
        sql`select 'lz4' = any(enumvals) as lz4 from pg_settings where name = 'default_toast_compression'`,
      );
      const methods = await t.db.database.rows<{ method: string }>(
        sql`select attcompression::text as method from pg_attribute
            where attrelid in ('agents'::regclass, 'agent_versions'::regclass) and attname = 'card_raw'`,
      );
      expect(methods.map((m) => m.method)).toEqual(settings!.lz4 ? ["l", "l"] : ["", ""]);
      // The embedded database has no lz4; the Postgres the suites run against here does.
      if (backend === "pglite") expect(settings!.lz4).toBe(false);

      const writer = await t.client(["agents:write"]);
      // Long enough that Postgres compresses it inline.
      const card = cardFor("Compressed", { description: "A long description. ".repeat(200) });
      const text = JSON.stringify(card, null, 2);
      const res = await t.request("/v1/agents", {
        method: "POST",
        json: `{"card": ${text}}`,
        token: writer.token,
      });
      expect(res.status).toBe(201);
      const { id } = await json<{ id: string }>(res);
      const [stored] = await t.db.database.rows<{ method: string | null }>(
        sql`select pg_column_compression(card_raw) as method from agents where id = ${id}`,
      );
      expect(stored!.method).toBe(settings!.lz4 ? "lz4" : "pglz");
      expect(await (await t.request(`/v1/agents/${id}/card`)).text()).toBe(text);
    });
  });
}
