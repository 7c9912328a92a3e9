/**
 * The Postgres search backend reads agent_search, one narrow row per live agent kept by triggers on
 * agents (migration 0008). These tests make every kind of write and check, after each, that the search
 * rows are exactly what a rebuild from agents would write (and that searches see the change at once):
 * publish, card update, status and visibility changes, health changes, entitlements, deletes, the
 * federation store's writes (copy inserted, updated, tombstoned, revived, purged), a rebuild, and the
 * prober's bookkeeping, which must not rewrite anything.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { createPostgresSearch } from "../src/infra/search/pg";
import { ANONYMOUS } from "../src/modules/auth/model";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { cardOf, skill } from "./support/search-contract";

type Drift = {
  missing: number;
  stale: number;
  differing: number;
  unnumbered: number;
  /** Lexemes of live search documents missing from search_lexemes (a prefix would not find them). */
  unlisted: number;
  live: number;
};

for (const backend of BACKENDS)
  describe(`search rows follow every write [${backend}]`, () => {
    let t: TestApp;
    let writer: Awaited<ReturnType<TestApp["client"]>>;
    let admin: Awaited<ReturnType<TestApp["client"]>>;
    const salt = Date.now().toString(36);

    /**
     * Live agents without a search row, search rows without a live agent, rows that differ (the facet
     * value numbers compared as sets, with the numbers of the agent's facet keys and provider), and live
     * agents with a facet key or provider that has no number.
     */
    async function drift(): Promise<Drift> {
      const [row] = await t.db.database.rows<Drift>(sql`
        select count(*) filter (where s.id is null)::int as missing,
          count(*) filter (where a.id is null)::int as stale,
          count(*) filter (where s.id is not null and a.id is not null and
            (s.seq, s.visibility, s.owner, s.status, s.health, s.streaming, s.signature, s.provider, s.name,
              s.search_doc, (select array_agg(n order by n) from unnest(s.facet_ids) n))
            is distinct from
            (a.seq, a.visibility, a.owner, a.status, a.health, a.streaming, a.signature, a.provider, lower(a.name),
              agent_search_document(a.name, a.description, a.skills, a.tags),
              (select array_agg(v.id order by v.id) from facet_values v
                where v.key = any(a.facet_keys || ('provider:' || a.provider)))))::int as differing,
          count(*) filter (where a.id is not null and exists (
            select 1 from unnest(a.facet_keys || ('provider:' || a.provider)) k
            where k is not null and not exists (select 1 from facet_values v where v.key = k)))::int as unnumbered,
          (select count(*) from (select distinct unnest(tsvector_to_array(d.search_doc)) l from agent_search d) u
            where not exists (select 1 from search_lexemes x where x.lexeme = u.l))::int as unlisted,
          count(a.id)::int as live
        from (select * from agents where deleted_at is null) a full join agent_search s on s.id = a.id`);
      return row!;
    }

    async function expectInStep(live: number) {
      expect(await drift()).toEqual({ missing: 0, stale: 0, differing: 0, unnumbered: 0, unlisted: 0, live });
    }

    const names = async (query: string, token?: string) =>
      (
        await json<{ items: Array<{ agent: { name: string } }> }>(
          await t.request(`/v1/search?${query}&consistent=true`, token ? { token } : {}),
        )
      ).items.map((item) => item.agent.name);

    const cardFor = (key: string, name: string, description: string) =>
      cardOf({ key, name, description, skills: [skill("row", ["rows"])] }, salt);

    async function publish(key: string, name: string, description: string, visibility: "public" | "private") {
      const res = await t.request("/v1/agents", {
        method: "POST",
        token: writer.token,
        json: { card: cardFor(key, name, description), visibility },
      });
      expect(res.status).toBe(201);
      return (await json<{ id: string }>(res)).id;
    }

    beforeAll(async () => {
      t = await createTestApp(backend);
      writer = await t.client(["agents:write"], "rows writer");
      admin = await t.client(["admin"], "rows admin");
    }, 60_000);
    afterAll(() => t.close());

    let lamp: string;
    let vault: string;

    test("a publish writes its search row, public or private", async () => {
      lamp = await publish("lamp", "Lamp Lighter", "Lights quaint lanterns.", "public");
      vault = await publish("vault", "Vault Keeper", "Guards quaint treasures.", "private");
      await expectInStep(2);
      expect(await names("q=quaint")).toEqual(["Lamp Lighter"]);
      expect((await names("q=quaint", writer.token)).sort()).toEqual(["Lamp Lighter", "Vault Keeper"]);
    });

    test("a card update rewrites the document: new words found, old ones gone", async () => {
      const res = await t.request(`/v1/agents/${lamp}`, {
        method: "PUT",
        token: writer.token,
        json: { card: { ...cardFor("lamp", "Lamp Lighter", "Lights zircon beacons."), version: "2.0.0" } },
      });
      expect(res.status).toBe(200);
      await expectInStep(2);
      expect(await names("q=zircon")).toEqual(["Lamp Lighter"]);
      expect(await names("q=lanterns")).toEqual([]);
    });

    test("facet values first met after others were counted are numbered and named at once", async () => {
      type Facets = { facets: Record<"tags" | "providers", { value: string; count: number }[]> };
      const facets = async () =>
        (await json<Facets>(await t.request("/v1/search?q=zircon&consistent=true"))).facets;
      // Counted once first: the backend now holds the texts of the numbers it met.
      expect((await facets()).tags).toEqual([{ value: "rows", count: 1 }]);
      const glow = `glowworm-${salt}`;
      // A value no agent has has no number yet: nothing passes its filter, and that is not remembered.
      expect(await names(`tag=${glow}`)).toEqual([]);
      const card = {
        ...cardOf(
          {
            key: "lamp",
            name: "Lamp Lighter",
            description: "Lights zircon beacons.",
            skills: [skill("row", ["rows", glow])],
          },
          salt,
        ),
        provider: { organization: `Ember ${salt}`, url: "https://example.com" },
        version: "3.0.0",
      };
      const res = await t.request(`/v1/agents/${lamp}`, {
        method: "PUT",
        token: writer.token,
        json: { card },
      });
      expect(res.status).toBe(200);
      await expectInStep(2);
      const after = await facets();
      expect(after.tags).toEqual([
        { value: glow, count: 1 },
        { value: "rows", count: 1 },
      ]);
      expect(after.providers).toEqual([{ value: `Ember ${salt}`, count: 1 }]);
      expect(await names(`tag=${glow.toUpperCase()}`)).toEqual(["Lamp Lighter"]);
      expect(await names(`q=zircon&tag=${glow}&skill=row&outputMode=TEXT/plain`)).toEqual(["Lamp Lighter"]);
    });

    test("status, visibility and health changes follow", async () => {
      const patched = await t.request(`/v1/agents/${lamp}`, {
        method: "PATCH",
        token: writer.token,
        json: { status: "deprecated", visibility: "private" },
      });
      expect(patched.status).toBe(200);
      await expectInStep(2);
      expect(await names("q=zircon")).toEqual([]);
      expect(await names("q=zircon&status=deprecated", writer.token)).toEqual(["Lamp Lighter"]);
      await t.app.services.agents.setHealth(vault, "down", "refused");
      await expectInStep(2);
      expect(await names("health=down", writer.token)).toEqual(["Vault Keeper"]);
      const back = await t.request(`/v1/agents/${lamp}`, {
        method: "PATCH",
        token: writer.token,
        json: { status: "active", visibility: "public" },
      });
      expect(back.status).toBe(200);
      await expectInStep(2);
      expect(await names("q=zircon")).toEqual(["Lamp Lighter"]);
    });

    test("an entitlement shows a private agent to its client without touching other rows", async () => {
      const reader = await t.client(["agents:read"], "rows reader");
      expect(await names("q=quaint", reader.token)).toEqual([]);
      const granted = await t.request(`/v1/agents/${vault}/entitlements/${reader.clientId}`, {
        method: "PUT",
        token: writer.token,
      });
      expect(granted.status).toBeLessThan(300);
      await expectInStep(2);
      expect(await names("q=quaint", reader.token)).toEqual(["Vault Keeper"]);
    });

    test("the prober's bookkeeping rewrites no search row", async () => {
      const before = await t.db.database.rows<{ xmin: string }>(
        sql`select xmin::text as xmin from agent_search where id = ${vault}`,
      );
      await t.db.database.rows(sql`update agents set next_probe_at = now() + interval '1 hour',
        failing_since = now(), heartbeat_expires_at = now() where id = ${vault}`);
      const after = await t.db.database.rows<{ xmin: string }>(
        sql`select xmin::text as xmin from agent_search where id = ${vault}`,
      );
      expect(after).toEqual(before);
      await expectInStep(2);
    });

    test("a delete removes the search row", async () => {
      const removed = await t.request(`/v1/agents/${vault}`, { method: "DELETE", token: writer.token });
      expect(removed.status).toBe(204);
      await expectInStep(1);
      expect(await names("q=quaint", admin.token)).toEqual([]);
    });

    test("the federation store's writes: a copy inserted, updated, tombstoned, revived and purged", async () => {
      // The statements the store sends (src/modules/federation/store.ts): an upsert keyed by origin that
      // takes a new seq, a tombstone, and the purge of old tombstones.
      const copy = crypto.randomUUID();
      const upsert = (description: string, deleted: boolean) =>
        t.db.database.rows(sql`
          insert into agents (id, name, description, url, visibility, status, generation, latest_version,
            card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys, streaming, provider,
            origin_registry, origin_id, seq, deleted_at)
          values (${copy}, 'Copied Courier', ${description}, 'https://copy.example.com/a2a', 'public',
            ${deleted ? "deleted" : "active"}, '0.3', '1.0.0', '{}', 'hash', array['carry'], array['post'],
            array['text/plain'], array['text/plain'],
            array['skill:carry', 'tag:post', 'in:text/plain', 'out:text/plain'], false, 'Peer Co',
            'peer-registry', 'origin-1', nextval('agent_seq'), ${deleted ? sql`now()` : null})
          on conflict (origin_registry, origin_id) where origin_registry is not null do update set
            description = excluded.description, status = excluded.status, deleted_at = excluded.deleted_at,
            seq = excluded.seq`);
      await upsert("Carries velvet parcels.", false);
      await expectInStep(2);
      expect(await names("q=velvet")).toEqual(["Copied Courier"]);
      await upsert("Carries satin parcels.", false);
      await expectInStep(2);
      expect(await names("q=satin")).toEqual(["Copied Courier"]);
      await upsert("Carries satin parcels.", true);
      await expectInStep(1);
      expect(await names("q=satin")).toEqual([]);
      await upsert("Carries linen parcels.", false);
      await expectInStep(2);
      expect(await names("q=linen&provider=peer%20co")).toEqual(["Copied Courier"]);
      await upsert("Carries linen parcels.", true);
      await t.db.database.rows(sql`delete from agents where deleted_at is not null`);
      await expectInStep(1);
    });

    test("a rebuild restores damaged rows and drops rows of agents that are gone", async () => {
      await t.db.database.rows(
        sql`update agent_search set search_doc = ''::tsvector, health = 'down', facet_ids = '{}'`,
      );
      await t.db.database.rows(sql`insert into agent_search (id, seq, visibility, status, health, streaming,
        signature, name, facet_ids, search_doc)
        values (${crypto.randomUUID()}, 0, 'public', 'active', 'up', false, 'none', 'ghost', '{}', ''::tsvector)`);
      expect((await drift()).differing).toBe(1);
      const result = await createPostgresSearch(t.db.database).reindexAll();
      expect(result).toEqual({ indexed: 1 });
      await expectInStep(1);
      const page = await createPostgresSearch(t.db.database).search({
        text: "zircon",
        filters: {},
        caller: ANONYMOUS,
        limit: 20,
        withFacets: true,
        consistent: true,
      });
      expect(page.hits.map((hit) => hit.row?.name)).toEqual(["Lamp Lighter"]);
    });

    test("a prefix as whole words matches exactly what the prefix matches", async () => {
      await publish(
        "prefixes",
        "Café Crème 2049",
        "Running runners ran the thé and data dashboards.",
        "public",
      );
      await expectInStep(2);
      // Every prefix of every listed lexeme, and words the dictionaries treat apart: stop words, one
      // letter, digits, accents, a prefix of nothing, a stem shorter than the word.
      const lexemes = (
        await t.db.database.rows<{ lexeme: string }>(sql`select lexeme from search_lexemes`)
      ).map((row) => row.lexeme);
      const tokens = new Set([
        ...["the", "a", "r", "2", "20", "caf", "café", "crè", "runn", "running", "zzqx", "blorping"],
      ]);
      for (const lexeme of lexemes)
        for (let end = 1; end <= lexeme.length; end++)
          if (/^[\p{L}\p{N}]+$/u.test(lexeme.slice(0, end))) tokens.add(lexeme.slice(0, end));
      // Stemmed, on the documents (what full text matches); not, on the names' words (the name part).
      type Counted = { token: string; prefix: number; words: number; listed: boolean; form: string };
      const tokenArray = `{${[...tokens].map((token) => `"${token}"`).join(",")}}`;
      const documents = await t.db.database.rows<Counted>(sql`
        select t as token,
          (select count(*) from agent_search d
            where d.search_doc @@ (to_tsquery('simple', t || ':*') || to_tsquery('english', t || ':*')))::int as prefix,
          (select count(*) from agent_search d where d.search_doc @@ agent_search_prefix(t, true))::int as words,
          agent_search_prefix(t, true)::text not like '%:*%' as listed,
          agent_search_prefix(t, true)::text as form
        from unnest(${tokenArray}::text[]) t`);
      const names = await t.db.database.rows<Counted>(sql`
        select t as token,
          (select count(*) from agent_search d
            where to_tsvector('simple', d.name) @@ to_tsquery('simple', t || ':*'))::int as prefix,
          (select count(*) from agent_search d
            where to_tsvector('simple', d.name) @@ agent_search_prefix(t, false))::int as words,
          agent_search_prefix(t, false)::text not like '%:*%' as listed,
          agent_search_prefix(t, false)::text as form
        from unnest(${tokenArray}::text[]) t`);
      for (const rows of [documents, names]) {
        expect(rows.length).toBe(tokens.size);
        for (const row of rows)
          expect({ token: row.token, matches: row.words }).toEqual({ token: row.token, matches: row.prefix });
        // Most prefixes became words (else this compared the prefix form with itself).
        expect(rows.filter((row) => row.listed).length).toBeGreaterThan(rows.length / 2);
      }
      // "runn" starts "running" and "runners" (simple) and "runner" (english): words, one agent.
      expect(documents.find((row) => row.token === "runn")).toMatchObject({ listed: true, words: 1 });
      expect(names.find((row) => row.token === "caf")).toMatchObject({ listed: true, words: 1 });
      // Starting no word, a prefix stays one: given once, not once per dictionary that kept it, and not
      // beside the stem that covers it.
      expect(documents.find((row) => row.token === "zzqx")?.form).toBe("'zzqx':*");
      expect(documents.find((row) => row.token === "blorping")?.form).toBe("'blorp':*");
      expect(names.find((row) => row.token === "blorping")?.form).toBe("'blorping':*");
    });

    test("every GIN index of the search rows merges its pending entries every 128 kB", async () => {
      // Each search reads every entry not merged yet: the default 4 MB slowed searches while agents changed.
      const indexes = await t.db.database.rows<{ name: string; options: string[] | null }>(sql`
        select c.relname as name, c.reloptions as options
        from pg_index i join pg_class c on c.oid = i.indexrelid join pg_am a on a.oid = c.relam
        where i.indrelid = 'agent_search'::regclass and a.amname = 'gin' order by 1`);
      expect(indexes.map((index) => index.name)).toEqual([
        "agent_search_doc_gin",
        "agent_search_facet_ids_gin",
        "agent_search_name_trgm",
        "agent_search_name_words",
      ]);
      for (const index of indexes) expect(index.options).toEqual(["gin_pending_list_limit=128"]);
    });

    test("a similar-name search leaves the session's trigram threshold as it was", async () => {
      await t.db.database.db.transaction(async (tx) => {
        const found = await t.db.database.rows<{ n: number }>(
          sql`select count(*)::int as n from agent_search_similar_names('lamp lightr', 0.75)`,
          tx,
        );
        expect(found[0]!.n).toBe(1);
        const after = await t.db.database.rows<{ threshold: string }>(
          sql`select current_setting('pg_trgm.word_similarity_threshold') as threshold`,
          tx,
        );
        expect(after[0]!.threshold).toBe("0.6");
      });
    });
  });
