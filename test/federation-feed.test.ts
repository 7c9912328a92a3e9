import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import postgres from "postgres";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { cardFor } from "./support/federation";

const cardWith = (overrides: Record<string, unknown> = {}) => cardFor("Feed agent", overrides);

type Change = { seq: number; op: "upsert" | "delete"; id: string; agent?: Record<string, unknown> };
type Page = { changes: Change[]; nextSince: number; hasMore: boolean };
type Client = { clientId: string; token: string };

for (const backend of BACKENDS) {
  describe(`GET /v1/changes [${backend}]`, () => {
    let t: TestApp;
    let writer: Client;
    let reader: Client;
    let admin: Client;
    let entitled: Client;

    const publish = async (card: unknown, token = writer.token, visibility = "public") => {
      const res = await t.request("/v1/agents", { method: "POST", json: { card, visibility }, token });
      expect(res.status).toBe(201);
      return json<{ id: string; name: string }>(res);
    };
    const feed = async (token: string | null, since = 0, limit = 1000) => {
      const res = await t.request(`/v1/changes?since=${since}&limit=${limit}`, { token });
      const text = await res.text();
      return { res, text, page: res.status === 200 ? (JSON.parse(text) as Page) : undefined };
    };
    /** The whole feed as the caller sees it, page by page. */
    const readAll = async (token: string, since = 0, limit = 1000) => {
      const changes: Change[] = [];
      let cursor = since;
      for (;;) {
        const { page } = await feed(token, cursor, limit);
        changes.push(...page!.changes);
        cursor = page!.nextSince;
        if (!page!.hasMore) return { changes, cursor };
      }
    };

    beforeAll(async () => {
      t = await createTestApp(backend);
      [writer, reader, admin, entitled] = await Promise.all([
        t.client(["agents:write"], "writer"),
        t.client(["agents:read"], "reader"),
        t.client(["admin"], "admin"),
        t.client(["agents:read"], "entitled"),
      ]);
    });
    afterAll(() => t.close());

    describe("security", () => {
      test("needs a bearer token: 401 anonymous or with a bad token, as problem+json", async () => {
        for (const token of [null, "not-a-token"]) {
          const { res, text } = await feed(token);
          expect(res.status).toBe(401);
          expect(res.headers.get("content-type")).toContain("application/problem+json");
          expect(JSON.parse(text).code).toBe("UNAUTHORIZED");
        }
      });

      test("malformed since and limit are 400 VALIDATION_FAILED", async () => {
        for (const query of ["since=-1", "since=abc", "limit=0", "limit=1001", "since=1.5"]) {
          const res = await t.request(`/v1/changes?${query}`, { token: reader.token });
          expect(res.status).toBe(400);
          expect((await json(res)).code).toBe("VALIDATION_FAILED");
        }
      });
    });

    describe("happy", () => {
      test("every local agent once, in seq order, at its latest change, with the record GET returns", async () => {
        const before = (await readAll(reader.token)).cursor;
        const first = await publish(cardWith());
        const second = await publish(cardWith());
        const third = await publish(cardWith());
        // A new version of the first one moves it to the end of the feed, once.
        const put = await t.request(`/v1/agents/${first.id}`, {
          method: "PUT",
          json: { card: cardWith({ version: "2.0.0" }) },
          token: writer.token,
        });
        expect(put.status).toBe(200);
        const { changes, cursor } = await readAll(reader.token, before);
        expect(changes.map((c) => c.id)).toEqual([second.id, third.id, first.id]);
        expect(changes.every((c) => c.op === "upsert")).toBe(true);
        const seqs = changes.map((c) => c.seq);
        expect([...seqs].sort((a, b) => a - b)).toEqual(seqs);
        expect(cursor).toBeGreaterThanOrEqual(seqs.at(-1)!);
        // The agent in the feed is the record a read returns, byte for byte the same JSON.
        for (const change of changes) {
          const read = await t.request(`/v1/agents/${change.id}`, { token: reader.token });
          expect(change.agent).toEqual(await json(read));
        }
        expect(changes.at(-1)!.agent!.version).toBe("2.0.0");
        // Nothing new: the same cursor comes back and the page is empty.
        const { page } = await feed(reader.token, cursor);
        expect(page).toEqual({ changes: [], nextSince: cursor, hasMore: false });
      });

      test("pages: limit, nextSince and hasMore walk the feed without gaps or repeats", async () => {
        const before = (await readAll(reader.token)).cursor;
        const ids: string[] = [];
        for (let i = 0; i < 5; i++) ids.push((await publish(cardWith())).id);
        const seen: string[] = [];
        let since = before;
        let pages = 0;
        for (;;) {
          const { page } = await feed(reader.token, since, 2);
          pages++;
          seen.push(...page!.changes.map((c) => c.id));
          if (page!.hasMore) expect(page!.nextSince).toBe(page!.changes.at(-1)!.seq);
          since = page!.nextSince;
          if (!page!.hasMore) break;
        }
        expect(seen).toEqual(ids);
        expect(pages).toBe(3);
      });

      test("deletes are tombstones in the feed: op delete, the id, no record", async () => {
        const agent = await publish(cardWith());
        const since = (await readAll(reader.token)).cursor;
        const del = await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: writer.token });
        expect(del.status).toBe(204);
        const { changes } = await readAll(reader.token, since);
        expect(changes).toEqual([{ seq: expect.any(Number), op: "delete", id: agent.id }]);
        // Read from the start, the agent is there once, as a delete.
        const all = await readAll(reader.token);
        expect(all.changes.filter((c) => c.id === agent.id).map((c) => c.op)).toEqual(["delete"]);
      });

      test("status changes move the agent and carry the new status", async () => {
        const agent = await publish(cardWith());
        const since = (await readAll(reader.token)).cursor;
        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          json: { status: "deprecated", statusMessage: "use v2" },
          token: writer.token,
        });
        const { changes } = await readAll(reader.token, since);
        expect(changes).toHaveLength(1);
        expect(changes[0]!.agent).toMatchObject({ status: "deprecated", statusMessage: "use v2" });
      });

      test("federated copies are never in the feed (no re-export, no loops)", async () => {
        const local = await publish(cardWith());
        const copyId = crypto.randomUUID();
        await t.db.database.rows(sql`
          insert into agents (id, owner, name, description, url, visibility, status, generation, protocol_version,
            latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys,
            streaming, provider, origin_registry, origin_id, seq)
          select ${copyId}, null, name || ' copy', description, url, visibility, status, generation, protocol_version,
            latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys,
            streaming, provider, 'other-registry', ${crypto.randomUUID()}, nextval('agent_seq')
          from agents where id = ${local.id}`);
        for (const token of [reader.token, admin.token]) {
          const { changes } = await readAll(token);
          expect(changes.some((c) => c.id === copyId)).toBe(false);
          expect(changes.some((c) => c.id === local.id)).toBe(true);
        }
        // The copy itself is readable as federated.
        const copy = await json<{ source: Record<string, unknown> }>(
          await t.request(`/v1/agents/${copyId}`, { token: admin.token }),
        );
        expect(copy.source).toMatchObject({ registry: "other-registry", federated: true });
      });
    });

    describe("private agents", () => {
      test("a private agent is invisible to everyone not entitled: not even its id, in any page", async () => {
        const secret = await publish(cardWith({ name: "Hidden private agent" }), writer.token, "private");
        for (const limit of [1, 1000]) {
          const { text: rawWhole } = await feed(reader.token, 0, limit);
          expect(rawWhole).not.toContain(secret.id);
          expect(rawWhole).not.toContain("Hidden private agent");
        }
        const everything = await readAll(reader.token, 0, 1);
        expect(everything.changes.some((c) => c.id === secret.id)).toBe(false);
        // Owner and admin see it as an upsert.
        for (const token of [writer.token, admin.token]) {
          const { changes } = await readAll(token);
          expect(changes.find((c) => c.id === secret.id)?.op).toBe("upsert");
        }
        // Deleted while never public: still nothing for the reader, a delete for the owner.
        await t.request(`/v1/agents/${secret.id}`, { method: "DELETE", token: writer.token });
        const { text } = await feed(reader.token);
        expect(text).not.toContain(secret.id);
        const owner = await readAll(writer.token);
        expect(owner.changes.find((c) => c.id === secret.id)?.op).toBe("delete");
      });

      test("entitlement granted: upsert for that client; withdrawn: a delete for it, nothing for others", async () => {
        const agent = await publish(cardWith({ name: "Entitled private agent" }), writer.token, "private");
        const start = (await readAll(entitled.token)).cursor;
        expect((await feed(entitled.token)).text).not.toContain(agent.id);
        const grant = await t.request(`/v1/agents/${agent.id}/entitlements/${entitled.clientId}`, {
          method: "PUT",
          token: writer.token,
        });
        expect(grant.status).toBe(204);
        const granted = await readAll(entitled.token, start);
        expect(granted.changes).toEqual([expect.objectContaining({ id: agent.id, op: "upsert" })]);
        expect(granted.changes[0]!.agent).toMatchObject({
          visibility: "private",
          name: "Entitled private agent",
        });
        const revoke = await t.request(`/v1/agents/${agent.id}/entitlements/${entitled.clientId}`, {
          method: "DELETE",
          token: writer.token,
        });
        expect(revoke.status).toBe(204);
        const revoked = await readAll(entitled.token, granted.cursor);
        expect(revoked.changes).toEqual([{ seq: expect.any(Number), op: "delete", id: agent.id }]);
        // The reader never was entitled: nothing about it, before or after.
        expect((await feed(reader.token)).text).not.toContain(agent.id);
      });

      test("public made private: a delete for those who saw it; public again: an upsert", async () => {
        const agent = await publish(cardWith());
        const since = (await readAll(reader.token)).cursor;
        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          json: { visibility: "private" },
          token: writer.token,
        });
        const hidden = await readAll(reader.token, since);
        expect(hidden.changes).toEqual([{ seq: expect.any(Number), op: "delete", id: agent.id }]);
        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          json: { visibility: "public" },
          token: writer.token,
        });
        const shown = await readAll(reader.token, hidden.cursor);
        expect(shown.changes.map((c) => [c.id, c.op])).toEqual([[agent.id, "upsert"]]);
      });
    });

    describe("retention", () => {
      test("tombstones past retention are purged: 410 CURSOR_EXPIRED below the horizon, since=0 still works", async () => {
        const agent = await publish(cardWith());
        const oldCursor = (await readAll(reader.token)).cursor;
        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: writer.token });
        const after = await publish(cardWith());
        // Nothing purged while within retention.
        expect((await t.app.services.federation.feed.maintain())?.purged).toBe(0);
        // Past retention (the clock moved on 200 hours): the tombstone goes, the horizon rises.
        const purged = await t.app.services.federation.feed.maintain(Date.now() + 200 * 3_600_000);
        expect(purged?.purged).toBeGreaterThanOrEqual(1);
        const expired = await t.request(`/v1/changes?since=${oldCursor}`, { token: reader.token });
        expect(expired.status).toBe(410);
        expect(expired.headers.get("content-type")).toContain("application/problem+json");
        expect((await json(expired)).code).toBe("CURSOR_EXPIRED");
        // A full read works and no longer mentions the purged agent.
        const all = await readAll(reader.token);
        expect(all.changes.some((c) => c.id === agent.id)).toBe(false);
        expect(all.changes.some((c) => c.id === after.id)).toBe(true);
        // A cursor at or past the horizon is fine.
        expect((await feed(reader.token, purged!.horizon)).res.status).toBe(200);
      });

      test("a cursor ahead of the feed (restored registry) is 410 too", async () => {
        const res = await t.request(`/v1/changes?since=${Number.MAX_SAFE_INTEGER}`, { token: reader.token });
        expect(res.status).toBe(410);
        expect((await json(res)).code).toBe("CURSOR_EXPIRED");
      });
    });

    if (backend === "postgres")
      test("a change that commits late is never skipped: the feed waits for seqs still in flight", async () => {
        const since = (await readAll(reader.token)).cursor;
        // A transaction takes a seq (inserting an agent) and stays open...
        const other = postgres(t.db.url!, { max: 1, onnotice: () => {} });
        const slowId = crypto.randomUUID();
        let commit!: () => void;
        const committed = new Promise<void>((resolve) => {
          commit = resolve;
        });
        const slow = other.begin(async (tx) => {
          await tx.unsafe(
            `insert into agents (id, owner, name, description, url, visibility, status, generation, protocol_version,
               latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys,
               streaming, provider, seq)
             select $1, owner, 'Slow agent', description, url || '/slow', visibility, status, generation,
               protocol_version, latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes,
               facet_keys, streaming, provider, nextval('agent_seq')
             from agents where owner = $2 and deleted_at is null limit 1`,
            [slowId, writer.clientId],
          );
          await committed;
        });
        await Bun.sleep(100);
        // ...while a later one commits first with a higher seq.
        const fast = await publish(cardWith());
        const reading = readAll(reader.token, since);
        await Bun.sleep(300);
        commit();
        await slow;
        await other.end();
        const { changes } = await reading;
        expect(changes.map((c) => c.id)).toEqual([slowId, fast.id]);
      });
  });
}
