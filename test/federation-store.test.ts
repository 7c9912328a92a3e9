/**
 * The sync store's page write on its own (no peer, no HTTP): copies keep the cards' exact texts
 * whatever they hold, a page whose card text could not be told apart from the next one is refused
 * whole, records Postgres could not store as text are skipped without holding up the page, and
 * planner statistics follow what the sync writes (narrow passes during it, a full one
 * after runs that wrote 1,000 copies).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { testConfig } from "../src/config";
import { analyzeCard, cardHash } from "../src/modules/agents/card";
import { facetKeysOf } from "../src/modules/agents/repo";
import {
  type CopyColumns,
  copyId,
  FeedFormatError,
  type PreparedPage,
  preparePage,
} from "../src/modules/federation/page";
import { createSyncStore, packPage, type StorePage, type SyncStore } from "../src/modules/federation/store";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";
import { cardFor } from "./support/federation";

const REGISTRY = "store-a";

/** The columns preparePage would derive from a card text. */
function columnsOf(text: string): CopyColumns {
  const card = JSON.parse(text);
  const analysis = analyzeCard(card);
  if (!analysis.ok) throw new Error(`invalid test card: ${JSON.stringify(analysis.errors)}`);
  const f = analysis.facets;
  return {
    name: analysis.name,
    description: analysis.description,
    url: analysis.primaryUrl,
    visibility: "public",
    status: "active",
    statusMessage: null,
    generation: analysis.generation,
    protocolVersion: analysis.protocolVersion,
    latestVersion: analysis.version,
    cardRaw: text,
    cardHash: cardHash(card),
    skills: f.skills,
    tags: f.tags,
    inputModes: f.inputModes,
    outputModes: f.outputModes,
    facetKeys: facetKeysOf(f),
    streaming: f.streaming,
    provider: f.provider,
    signature: "none",
    health: "unknown",
    checkedAt: null,
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-01T00:00:00.000Z",
  };
}

for (const backend of BACKENDS) {
  describe(`sync store page writes [${backend}]`, () => {
    let db: TestDatabase;
    let store: SyncStore;
    let peerId: string;
    let syncId: number;
    let cursor = 0;

    const page = (texts: string[], hasMore = true): PreparedPage => ({
      since: cursor,
      nextSince: cursor + texts.length,
      hasMore,
      registry: REGISTRY,
      upserts: texts.map((text, i) => ({
        seq: cursor + i + 1,
        originId: crypto.randomUUID(),
        columns: columnsOf(text),
      })),
      deletes: [],
      skipped: [],
      changes: texts.length,
    });
    const apply = async (prepared: StorePage) => {
      const result = await store.applyPage(peerId, syncId, prepared);
      cursor = prepared.nextSince;
      return result;
    };
    const statsOf = async (column: string, table = "agents") =>
      (
        await db.database.rows<{ n: number }>(
          sql`select count(*)::int as n from pg_stats where tablename = ${table} and attname = ${column}`,
        )
      )[0]!.n;

    beforeAll(async () => {
      db = await createTestDatabase(backend);
      store = createSyncStore({ config: testConfig(), database: db.database, lockUrl: db.url });
      peerId = crypto.randomUUID();
      await db.database.rows(sql`insert into peers (id, name, base_url, client_id, client_secret_enc, registry_id)
        values (${peerId}, 'a', 'http://127.0.0.1:1', 'c', 'x', ${REGISTRY})`);
      const [sync] = await db.database.rows<{ id: number }>(
        sql`insert into peer_syncs (peer_id, status, from_seq, instance)
            values (${peerId}, 'running', 0, 'test') returning id`,
      );
      syncId = Number(sync!.id);
    });
    afterAll(async () => {
      await store.close();
      await db.drop();
    });

    test("each copy keeps its card's exact text, escapes, spacing and all", async () => {
      const texts = [
        JSON.stringify(cardFor("Plain")),
        // Escapes Postgres's JSON parser would have turned into characters, a separator among them.
        JSON.stringify(cardFor("Escaped", { description: 'tab\t, "quotes", \\ slash, \u001e record' })),
        `{\n\t"name" : "Spaced \u{1F600}",${JSON.stringify(cardFor("x"))
          .slice(1)
          .replace(/"name":"[^"]*",/, "")}`,
        JSON.stringify(cardFor("Unicode \u00e9\u4e2d"), null, 3),
      ];
      const prepared = page(texts);
      const result = await apply(prepared);
      expect(result.added).toBe(texts.length);
      for (const [i, upsert] of prepared.upserts.entries()) {
        const id = copyId(REGISTRY, upsert.originId);
        const [row] = await db.database.rows<{ card_raw: string; version: string }>(
          sql`select a.card_raw, v.card_raw as version from agents a join agent_versions v on v.agent_id = a.id
              where a.id = ${id}`,
        );
        expect(row).toEqual({ card_raw: texts[i]!, version: texts[i]! });
      }
    });

    test("a page packed in the worker for the main thread (embedded) writes the same copies", async () => {
      const texts = [JSON.stringify(cardFor("Packed one")), JSON.stringify(cardFor("Packed two"), null, 2)];
      const prepared = page(texts);
      const packed = packPage(prepared);
      expect(packed.params?.registry).toBe(REGISTRY);
      for (const upsert of packed.upserts) expect(upsert.columns).toBeUndefined();
      // What crosses to the other thread is two strings, not the copies' columns.
      expect(structuredClone(packed)).toEqual(packed);
      expect((await apply(packed)).added).toBe(2);
      for (const [i, upsert] of prepared.upserts.entries()) {
        const [row] = await db.database.rows<{
          card_raw: string;
          name: string;
          doc: boolean;
          versions: number;
        }>(
          sql`select card_raw, name, exists (select 1 from agent_search s where s.id = a.id) as doc,
                (select count(*)::int from agent_versions v where v.agent_id = a.id) as versions
              from agents a where a.id = ${copyId(REGISTRY, upsert.originId)}`,
        );
        expect(row).toEqual({ card_raw: texts[i]!, name: upsert.columns.name, doc: true, versions: 1 });
      }
    });

    test("a card text holding the separator is refused whole: nothing written, the cursor stays", async () => {
      const good = JSON.stringify(cardFor("Good"));
      const prepared = page([good, good]);
      // Not JSON text (a raw control character): preparePage never yields it, the store checks anyway.
      prepared.upserts[1]!.columns.cardRaw = `${good.slice(0, -1)}\u001e}`;
      const [before] = await db.database.rows<{ n: number }>(sql`select count(*)::int as n from agents`);
      await expect(store.applyPage(peerId, syncId, prepared)).rejects.toBeInstanceOf(FeedFormatError);
      const [after] = await db.database.rows<{ n: number }>(sql`select count(*)::int as n from agents`);
      expect(after!.n).toBe(before!.n);
      const [peer] = await db.database.rows<{ last_seq: number }>(
        sql`select last_seq from peers where id = ${peerId}`,
      );
      expect(Number(peer!.last_seq)).toBe(cursor);
    });

    test("a page holding what Postgres cannot store as text applies: those records are skipped", async () => {
      const agent = (id: string, card: object, statusMessage: string | null = null) => ({
        id,
        visibility: "public",
        status: "active",
        statusMessage,
        source: { registry: REGISTRY, originId: id, federated: false },
        card,
      });
      const changes = [
        { op: "upsert", id: "nul", agent: agent("nul", cardFor("Nul", { description: "a \u0000 b" })) },
        {
          op: "upsert",
          id: "status",
          agent: agent("status", cardFor("Status"), `${"s".repeat(499)}\u{1F600}`),
        },
        { op: "delete", id: "gone\u0000" },
        { op: "upsert", id: "fine", agent: agent("fine", cardFor("Fine")) },
      ].map((change, i) => ({ seq: cursor + i + 1, ...change }));
      const text = JSON.stringify({ changes, nextSince: cursor + changes.length, hasMore: true });
      const prepared = preparePage(text, cursor, "store-b");
      expect(prepared.skipped.map((s) => s.originId).sort()).toEqual(["gone\u0000", "nul"]);
      const result = await apply(prepared);
      expect(result.added).toBe(2);
      const rows = await db.database.rows<{ origin_id: string; status_message: string | null }>(
        sql`select origin_id, status_message from agents where origin_id in ('nul', 'status', 'fine')
            order by origin_id`,
      );
      expect(rows.map((r) => r.origin_id)).toEqual(["fine", "status"]);
      expect(rows[1]!.status_message).toBe("s".repeat(499));
    });

    test("statistics: the sync's lookup columns while it writes, the rest after runs wrote 1,000 copies", async () => {
      const text = (i: number) => JSON.stringify(cardFor(`Stat ${i}`));
      // Past 1,000 copies written: the narrow analysis ran, the other columns are not analysed yet.
      for (let done = 0; done < 1000; done += 250)
        await apply(page(Array.from({ length: 250 }, (_, i) => text(done + i))));
      expect(await statsOf("origin_id")).toBe(1);
      expect(await statsOf("name")).toBe(0);
      await store.finishRun({
        peerId,
        syncId,
        status: "success",
        error: null,
        lagChanges: 0,
        nextSyncInMs: 1000,
        previousStatus: "running",
      });
      // The full analysis runs in the background after the run is recorded, one table after the other.
      const deadline = Date.now() + 20_000;
      while (
        ((await statsOf("name")) === 0 || (await statsOf("seq", "agent_search")) === 0) &&
        Date.now() < deadline
      )
        await Bun.sleep(50);
      expect(await statsOf("name")).toBe(1);
      expect(await statsOf("seq", "agent_search")).toBe(1);
      expect(await statsOf("card_raw")).toBe(1);
    }, 60_000);
  });
}
