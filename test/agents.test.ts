import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { createLogger } from "../src/infra/logger";
import { createMetrics } from "../src/infra/metrics";
import { createAgentsService } from "../src/modules/agents/service";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { eventually } from "./support/redis";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures/agent-cards");
const fixtureText = (dir: string, name: string) => readFileSync(join(FIXTURES, dir, name), "utf8");
const fixture = (dir: string, name: string) => JSON.parse(fixtureText(dir, name)) as Record<string, unknown>;
const jsonFiles = (dir: string) =>
  readdirSync(join(FIXTURES, dir))
    .filter((f) => f.endsWith(".json"))
    .sort();

let unique = 0;
/** A valid 0.3 card with its own url, so tests never collide on the live-url uniqueness rule. */
function cardWith(overrides: Record<string, unknown> = {}) {
  unique++;
  return {
    ...fixture("valid", "weather-0.3.json"),
    name: `Agent ${unique}`,
    url: `https://agent-${unique}-${Date.now()}.example.com/a2a`,
    ...overrides,
  };
}

type Record_ = {
  id: string;
  name: string;
  url: string;
  visibility: string;
  status: string;
  statusMessage: string | null;
  version: string;
  generation: string;
  card: Record<string, unknown>;
  owner: string | null;
  source: { registry: string; originId: string; federated: boolean };
};

for (const backend of BACKENDS) {
  describe(`agents [${backend}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let other: { clientId: string; token: string };
    let reader: { clientId: string; token: string };
    let admin: { clientId: string; token: string };

    const publish = async (card: unknown, token = writer.token, extra: Record<string, unknown> = {}) => {
      const res = await t.request("/v1/agents", { method: "POST", json: { card, ...extra }, token });
      return res;
    };
    const publishOk = async (card: unknown, token = writer.token, extra: Record<string, unknown> = {}) => {
      const res = await publish(card, token, extra);
      if (res.status !== 201) throw new Error(`publish failed ${res.status}: ${await res.text()}`);
      return json<Record_>(res);
    };

    beforeAll(async () => {
      t = await createTestApp(backend, { config: { maxAgentsPerClient: 1000 } });
      [writer, other, reader, admin] = await Promise.all([
        t.client(["agents:write"], "writer"),
        t.client(["agents:write"], "other writer"),
        t.client(["agents:read"], "reader"),
        t.client(["admin"], "admin"),
      ]);
    });
    afterAll(() => t.close());

    describe("POST /v1/agents", () => {
      describe("happy", () => {
        test("publishes a card and returns the record with Location", async () => {
          const card = cardWith();
          const res = await publish(card);
          expect(res.status).toBe(201);
          const body = await json<Record_>(res);
          expect(res.headers.get("location")).toBe(`/v1/agents/${body.id}`);
          expect(res.headers.get("etag")).toMatch(/^"[0-9a-f]+"$/);
          expect(body.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
          expect(body).toMatchObject({
            name: card.name,
            url: card.url,
            visibility: "public",
            status: "active",
            statusMessage: null,
            version: "1.4.2",
            generation: "0.3",
            owner: writer.clientId,
            signature: "none",
            health: "unknown",
            source: { federated: false, originId: body.id },
          });
          expect(body.card).toEqual(card);
          // what the publish answered is byte for byte what a read from the database serialises
          t.app.services.agentCache.clearLocal();
          const read = await t.request(`/v1/agents/${body.id}`);
          expect(read.headers.get("etag")).toBe(res.headers.get("etag"));
          expect(await read.json()).toEqual(body);
        });

        for (const name of jsonFiles("valid")) {
          test(`accepts valid fixture ${name}`, async () => {
            const card = fixture("valid", name);
            const body = await publishOk(card);
            expect(body.generation).toBe(name.includes("1.0") ? "1.0" : "0.3");
            const del = await t.request(`/v1/agents/${body.id}`, { method: "DELETE", token: writer.token });
            expect(del.status).toBe(204);
          });
        }

        test("every real-world card is accepted and /card returns it byte for byte", async () => {
          for (const name of jsonFiles("real")) {
            const text = fixtureText("real", name).trim();
            // The body carries the file's own bytes as the card, so /card must give back exactly those.
            const res = await t.request("/v1/agents", {
              method: "POST",
              body: `{"visibility":"public","card":${text}}`,
              headers: { "content-type": "application/json" },
              token: writer.token,
            });
            expect({ name, status: res.status }).toEqual({ name, status: 201 });
            const record = await json<Record_>(res);
            const card = await t.request(`/v1/agents/${record.id}/card`);
            expect(card.status).toBe(200);
            expect(await card.text()).toBe(text);
            // the record embeds the same card, key order preserved
            const full = await (await t.request(`/v1/agents/${record.id}`)).text();
            expect(full).toContain(`"card":${text}`);
            expect(
              (await t.request(`/v1/agents/${record.id}`, { method: "DELETE", token: writer.token })).status,
            ).toBe(204);
          }
        });

        test("unknown card fields are kept verbatim, key order included", async () => {
          const card = { zeta: { nested: [1, 2.5, "x"] }, ...cardWith(), "x-vendor": true, alpha: null };
          const text = JSON.stringify(card, null, 1).replace("2.5", "2.50");
          const res = await t.request("/v1/agents", {
            method: "POST",
            body: `{"card":${text}}`,
            headers: { "content-type": "application/json" },
            token: writer.token,
          });
          expect(res.status).toBe(201);
          const { id } = await json<Record_>(res);
          expect(await (await t.request(`/v1/agents/${id}/card`)).text()).toBe(text);
        });

        test("the last of duplicated card keys wins, as JSON.parse decides", async () => {
          const first = cardWith();
          const second = cardWith();
          const res = await t.request("/v1/agents", {
            method: "POST",
            body: `{"card":${JSON.stringify(first)},"card":${JSON.stringify(second)}}`,
            headers: { "content-type": "application/json" },
            token: writer.token,
          });
          expect(res.status).toBe(201);
          const body = await json<Record_>(res);
          expect(body.url).toBe(second.url as string);
          expect(await (await t.request(`/v1/agents/${body.id}/card`)).text()).toBe(JSON.stringify(second));
        });

        test("a 1.0 card's primary url is its first interface", async () => {
          const card = {
            ...fixture("valid", "translator-1.0.json"),
            supportedInterfaces: [
              {
                url: `https://t-${Date.now()}.example.org/a2a`,
                protocolBinding: "JSONRPC",
                protocolVersion: "1.0",
              },
              { url: "https://t.example.org/grpc", protocolBinding: "GRPC", protocolVersion: "1.0" },
            ],
          };
          const body = await publishOk(card);
          expect(body.generation).toBe("1.0");
          expect(body.url).toBe(card.supportedInterfaces[0]!.url);
        });

        test("a private agent is published as private", async () => {
          const body = await publishOk(cardWith(), writer.token, { visibility: "private" });
          expect(body.visibility).toBe("private");
        });
      });

      describe("errors", () => {
        const expectedPaths: Record<string, string[]> = {
          "bad-url.json": ["/url"],
          "missing-skills.json": ["/skills"],
          "skill-without-id.json": ["/skills/0/id"],
          "wrong-types.json": ["/name", "/description", "/capabilities/streaming", "/defaultInputModes"],
        };
        for (const name of jsonFiles("invalid")) {
          test(`rejects invalid fixture ${name} with 422 and paths`, async () => {
            const res = await publish(fixture("invalid", name));
            expect(res.status).toBe(422);
            expect(res.headers.get("content-type")).toContain("application/problem+json");
            const body = await json<{ code: string; errors: { path: string; message: string }[] }>(res);
            expect(body.code).toBe("INVALID_AGENT_CARD");
            const paths = body.errors.map((e) => e.path);
            for (const path of expectedPaths[name] ?? []) expect(paths).toContain(path);
            for (const e of body.errors) expect(e.message.length).toBeGreaterThan(0);
          });
        }

        test("a card that is not an object is 422", async () => {
          for (const card of ["a string", 42, [1, 2], null]) {
            const res = await publish(card);
            expect(res.status).toBe(422);
            expect((await json(res)).code).toBe("INVALID_AGENT_CARD");
          }
        });

        test("neither or both of card and cardUrl is 400", async () => {
          const neither = await t.request("/v1/agents", { method: "POST", json: {}, token: writer.token });
          expect(neither.status).toBe(400);
          expect((await json(neither)).code).toBe("VALIDATION_FAILED");
          const both = await publish(cardWith(), writer.token, {
            cardUrl: "https://x.example.com/card.json",
          });
          expect(both.status).toBe(400);
        });

        test("unknown body fields and bad visibility are 400", async () => {
          expect((await publish(cardWith(), writer.token, { owner: "someone-else" })).status).toBe(400);
          expect((await publish(cardWith(), writer.token, { visibility: "secret" })).status).toBe(400);
        });

        test("a second live agent with the same url is 409 AGENT_EXISTS, also for another client", async () => {
          const card = cardWith();
          await publishOk(card);
          const again = await publish({ ...card, name: "Other name" });
          expect(again.status).toBe(409);
          expect((await json(again)).code).toBe("AGENT_EXISTS");
          const byOther = await publish(card, other.token);
          expect(byOther.status).toBe(409);
        });

        test("after delete the url can be published again", async () => {
          const card = cardWith();
          const first = await publishOk(card);
          await t.request(`/v1/agents/${first.id}`, { method: "DELETE", token: writer.token });
          const second = await publishOk(card);
          expect(second.id).not.toBe(first.id);
        });

        test("malformed JSON body is 400", async () => {
          const res = await t.request("/v1/agents", {
            method: "POST",
            body: '{"card": {',
            headers: { "content-type": "application/json" },
            token: writer.token,
          });
          expect(res.status).toBe(400);
          expect((await json(res)).code).toBe("VALIDATION_FAILED");
        });
      });

      describe("security", () => {
        test("anonymous is 401, agents:read is 403", async () => {
          const anon = await t.request("/v1/agents", { method: "POST", json: { card: cardWith() } });
          expect(anon.status).toBe(401);
          expect(anon.headers.get("www-authenticate")).toContain("Bearer");
          const res = await publish(cardWith(), reader.token);
          expect(res.status).toBe(403);
          expect((await json(res)).code).toBe("FORBIDDEN");
        });

        test("concurrent publishes of one url create exactly one agent", async () => {
          const card = cardWith();
          const results = await Promise.all(Array.from({ length: 12 }, () => publish(card)));
          const statuses = results.map((r) => r.status).sort();
          expect(statuses.filter((s) => s === 201)).toHaveLength(1);
          expect(statuses.filter((s) => s === 409)).toHaveLength(11);
          const rows = await t.db.database.rows<{ n: number }>(
            sql`select count(*)::int as n from agents where url = ${card.url as string} and deleted_at is null`,
          );
          expect(Number(rows[0]!.n)).toBe(1);
        });

        test("a burst of publishes (written together) gives each its own row, version, audit row and seq", async () => {
          const cards = Array.from({ length: 16 }, () => cardWith());
          // Four more of the first url, from another client: exactly one of the five may win.
          const burst = [
            ...cards.map((card) => publish(card)),
            ...Array.from({ length: 4 }, () => publish(cards[0], other.token)),
          ];
          const results = await Promise.all(burst);
          const created = results.filter((r) => r.status === 201);
          const refused = results.filter((r) => r.status === 409);
          expect(created).toHaveLength(16);
          expect(refused).toHaveLength(4);
          for (const r of refused) expect((await json(r)).code).toBe("AGENT_EXISTS");
          const records = await Promise.all(created.map((r) => json<Record_ & { seq?: number }>(r)));
          expect(new Set(records.map((r) => r.url)).size).toBe(16);
          for (const [i, record] of records.entries()) {
            // What the publish answered is what a read (from the database, not the cache) returns.
            const etag = created[i]!.headers.get("etag");
            t.app.services.agentCache.clearLocal();
            const read = await t.request(`/v1/agents/${record.id}`);
            expect(read.headers.get("etag")).toBe(etag);
            const versions = await json<{ items: Array<{ version: string }> }>(
              await t.request(`/v1/agents/${record.id}/versions`),
            );
            expect(versions.items.map((v) => v.version)).toEqual([record.version]);
          }
          const ids = records.map((r) => r.id);
          const audit = await t.db.database.rows<{ target: string; actor: string }>(
            sql`select target, actor from audit_log where action = 'agent.created' and target = any(string_to_array(${ids.join(",")}, ','))`,
          );
          expect(audit.map((a) => a.target).sort()).toEqual([...ids].sort());
          const seqs = await t.db.database.rows<{ seq: string }>(
            sql`select seq::text as seq from agents where id::text = any(string_to_array(${ids.join(",")}, ','))`,
          );
          expect(new Set(seqs.map((r) => r.seq)).size).toBe(16);
        });

        test("the owner is the caller, not anything in the body or card", async () => {
          const body = await publishOk({ ...cardWith(), owner: admin.clientId });
          expect(body.owner).toBe(writer.clientId);
        });
      });
    });

    describe("quota", () => {
      test("MAX_AGENTS_PER_CLIENT is enforced, also under concurrency, and freed by delete", async () => {
        const q = await createTestApp(backend, { config: { maxAgentsPerClient: 3 }, db: t.db });
        const c = await q.client(["agents:write"], "quota");
        const results = await Promise.all(
          Array.from({ length: 8 }, () =>
            q.request("/v1/agents", { method: "POST", json: { card: cardWith() }, token: c.token }),
          ),
        );
        const created = results.filter((r) => r.status === 201);
        const refused = results.filter((r) => r.status === 403);
        expect(created).toHaveLength(3);
        expect(refused).toHaveLength(5);
        expect((await json(refused[0]!)).code).toBe("QUOTA_EXCEEDED");
        const { id } = await json<Record_>(created[0]!);
        expect((await q.request(`/v1/agents/${id}`, { method: "DELETE", token: c.token })).status).toBe(204);
        const again = await q.request("/v1/agents", {
          method: "POST",
          json: { card: cardWith() },
          token: c.token,
        });
        expect(again.status).toBe(201);
      });
    });

    describe("GET /v1/agents/:id and /card", () => {
      test("happy: record and card with strong ETag, 304 on If-None-Match", async () => {
        const card = cardWith();
        const { id } = await publishOk(card);
        const res = await t.request(`/v1/agents/${id}`);
        expect(res.status).toBe(200);
        const etag = res.headers.get("etag")!;
        expect(etag).toMatch(/^"[^"]+"$/);
        expect(res.headers.get("cache-control")).toContain("public");
        const notModified = await t.request(`/v1/agents/${id}`, { headers: { "if-none-match": etag } });
        expect(notModified.status).toBe(304);
        expect(notModified.headers.get("etag")).toBe(etag);
        expect(await notModified.text()).toBe("");
        const listed = await t.request(`/v1/agents/${id}`, {
          headers: { "if-none-match": `"nope", W/${etag}` },
        });
        expect(listed.status).toBe(304);
        const stale = await t.request(`/v1/agents/${id}`, { headers: { "if-none-match": '"other"' } });
        expect(stale.status).toBe(200);

        const cardRes = await t.request(`/v1/agents/${id}/card`);
        expect(cardRes.status).toBe(200);
        expect(await cardRes.json()).toEqual(card);
        const cardEtag = cardRes.headers.get("etag")!;
        expect(
          (await t.request(`/v1/agents/${id}/card`, { headers: { "if-none-match": cardEtag } })).status,
        ).toBe(304);
      });

      test("the ETag changes when the status changes", async () => {
        const { id } = await publishOk(cardWith());
        const before = (await t.request(`/v1/agents/${id}`)).headers.get("etag");
        const cardBefore = (await t.request(`/v1/agents/${id}/card`)).headers.get("etag");
        await t.request(`/v1/agents/${id}`, {
          method: "PATCH",
          json: { status: "deprecated" },
          token: writer.token,
        });
        const after = await t.request(`/v1/agents/${id}`, { headers: { "if-none-match": before! } });
        expect(after.status).toBe(200);
        expect(after.headers.get("etag")).not.toBe(before);
        expect((await t.request(`/v1/agents/${id}/card`)).headers.get("etag")).not.toBe(cardBefore);
      });

      test("errors: unknown, malformed and deleted ids are 404 problem+json", async () => {
        for (const id of ["01a21292-d244-762b-a5fd-3363054f0a64", "not-a-uuid", "' or 1=1 --"]) {
          const res = await t.request(`/v1/agents/${encodeURIComponent(id)}`);
          expect(res.status).toBe(404);
          expect((await json(res)).code).toBe("NOT_FOUND");
          expect((await t.request(`/v1/agents/${encodeURIComponent(id)}/card`)).status).toBe(404);
        }
      });
    });

    describe("PUT /v1/agents/:id (new version)", () => {
      test("happy: a new version becomes latest; versions list newest first; old version still readable", async () => {
        const card = cardWith({ version: "1.0.0" });
        const { id } = await publishOk(card);
        const v2 = { ...card, version: "2.0.0", description: "Second version" };
        const res = await t.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card: v2 },
          token: writer.token,
        });
        expect(res.status).toBe(200);
        const record = await json<Record_>(res);
        expect(record.version).toBe("2.0.0");
        expect(record.card).toEqual(v2);
        const versions = await json<{ items: { version: string; cardHash: string }[] }>(
          await t.request(`/v1/agents/${id}/versions`),
        );
        expect(versions.items.map((v) => v.version)).toEqual(["2.0.0", "1.0.0"]);
        const old = await t.request(`/v1/agents/${id}/versions/1.0.0`);
        expect(old.status).toBe(200);
        expect(await old.json()).toEqual(card);
        expect((await t.request(`/v1/agents/${id}/versions/9.9.9`)).status).toBe(404);
        expect(await (await t.request(`/v1/agents/${id}/card`)).json()).toEqual(v2);
      });

      test("re-sending the same version with the same content changes nothing", async () => {
        const card = cardWith({ version: "1.0.0" });
        const { id } = await publishOk(card);
        const res = await t.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card },
          token: writer.token,
        });
        expect(res.status).toBe(200);
        const versions = await json<{ items: unknown[] }>(await t.request(`/v1/agents/${id}/versions`));
        expect(versions.items).toHaveLength(1);
      });

      test("errors: same version with different content is 409 VERSION_EXISTS; invalid card 422", async () => {
        const card = cardWith({ version: "1.0.0" });
        const { id } = await publishOk(card);
        const res = await t.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card: { ...card, description: "changed" } },
          token: writer.token,
        });
        expect(res.status).toBe(409);
        expect((await json(res)).code).toBe("VERSION_EXISTS");
        const bad = await t.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card: { ...card, version: "2.0.0", url: "nope" } },
          token: writer.token,
        });
        expect(bad.status).toBe(422);
      });

      test("errors: moving to another live agent's url is 409", async () => {
        const a = cardWith();
        const b = cardWith();
        await publishOk(a);
        const { id } = await publishOk(b);
        const res = await t.request(`/v1/agents/${id}`, {
          method: "PUT",
          json: { card: { ...b, url: a.url, version: "9.0.0" } },
          token: writer.token,
        });
        expect(res.status).toBe(409);
        expect((await json(res)).code).toBe("AGENT_EXISTS");
      });

      test("security: only owner or admin; others get 403 (public) or 404 (private)", async () => {
        const card = cardWith({ version: "1.0.0" });
        const { id } = await publishOk(card);
        const next = { ...card, version: "1.1.0" };
        expect(
          (await t.request(`/v1/agents/${id}`, { method: "PUT", json: { card: next }, token: other.token }))
            .status,
        ).toBe(403);
        expect((await t.request(`/v1/agents/${id}`, { method: "PUT", json: { card: next } })).status).toBe(
          401,
        );
        expect(
          (await t.request(`/v1/agents/${id}`, { method: "PUT", json: { card: next }, token: reader.token }))
            .status,
        ).toBe(403);
        expect(
          (await t.request(`/v1/agents/${id}`, { method: "PUT", json: { card: next }, token: admin.token }))
            .status,
        ).toBe(200);
        const priv = await publishOk(cardWith(), writer.token, { visibility: "private" });
        const res = await t.request(`/v1/agents/${priv.id}`, {
          method: "PUT",
          json: { card: next },
          token: other.token,
        });
        expect(res.status).toBe(404);
      });
    });

    describe("PATCH /v1/agents/:id", () => {
      test("happy: status, message and visibility", async () => {
        const { id } = await publishOk(cardWith());
        const res = await t.request(`/v1/agents/${id}`, {
          method: "PATCH",
          json: { status: "deprecated", statusMessage: "Use v2" },
          token: writer.token,
        });
        expect(res.status).toBe(200);
        expect(await json(res)).toMatchObject({ status: "deprecated", statusMessage: "Use v2" });
        const vis = await json(
          await t.request(`/v1/agents/${id}`, {
            method: "PATCH",
            json: { visibility: "private" },
            token: writer.token,
          }),
        );
        expect(vis.visibility).toBe("private");
        expect((await t.request(`/v1/agents/${id}`)).status).toBe(404);
      });

      test("errors: empty body, status deleted, unknown fields are 400", async () => {
        const { id } = await publishOk(cardWith());
        for (const body of [
          {},
          { status: "deleted" },
          { status: "active", owner: "x" },
          { statusMessage: 5 },
        ]) {
          const res = await t.request(`/v1/agents/${id}`, {
            method: "PATCH",
            json: body,
            token: writer.token,
          });
          expect(res.status).toBe(400);
          expect((await json(res)).code).toBe("VALIDATION_FAILED");
        }
      });

      test("security: non-owner 403, anonymous 401, reader 403, admin ok", async () => {
        const { id } = await publishOk(cardWith());
        const patch = { json: { status: "deprecated" }, method: "PATCH" };
        expect((await t.request(`/v1/agents/${id}`, { ...patch, token: other.token })).status).toBe(403);
        expect((await t.request(`/v1/agents/${id}`, patch)).status).toBe(401);
        expect((await t.request(`/v1/agents/${id}`, { ...patch, token: reader.token })).status).toBe(403);
        expect((await t.request(`/v1/agents/${id}`, { ...patch, token: admin.token })).status).toBe(200);
      });
    });

    describe("DELETE /v1/agents/:id", () => {
      test("happy: 204, then 404 everywhere; a tombstone row stays with a higher seq", async () => {
        const { id } = await publishOk(cardWith());
        const [before] = await t.db.database.rows<{ seq: string }>(
          sql`select seq::text as seq from agents where id = ${id}`,
        );
        const res = await t.request(`/v1/agents/${id}`, { method: "DELETE", token: writer.token });
        expect(res.status).toBe(204);
        for (const path of [`/v1/agents/${id}`, `/v1/agents/${id}/card`, `/v1/agents/${id}/versions`])
          expect((await t.request(path)).status).toBe(404);
        const [after] = await t.db.database.rows<{ seq: string; status: string; deleted: boolean }>(
          sql`select seq::text as seq, status, deleted_at is not null as deleted from agents where id = ${id}`,
        );
        expect(after!.status).toBe("deleted");
        expect(after!.deleted).toBe(true);
        expect(BigInt(after!.seq)).toBeGreaterThan(BigInt(before!.seq));
        expect((await t.request(`/v1/agents/${id}`, { method: "DELETE", token: writer.token })).status).toBe(
          404,
        );
      });

      test("security: non-owner 403, anonymous 401, admin 204; a federated copy is read-only", async () => {
        const { id } = await publishOk(cardWith());
        expect((await t.request(`/v1/agents/${id}`, { method: "DELETE", token: other.token })).status).toBe(
          403,
        );
        expect((await t.request(`/v1/agents/${id}`, { method: "DELETE" })).status).toBe(401);
        expect((await t.request(`/v1/agents/${id}`, { method: "DELETE", token: admin.token })).status).toBe(
          204,
        );

        const copy = await publishOk(cardWith());
        await t.db.database.rows(
          sql`update agents set origin_registry = 'peer.example', origin_id = 'remote-1', owner = null where id = ${copy.id}`,
        );
        // written behind the cache's back, as only the federation worker may; drop the stale copy
        t.app.services.agentCache.clearLocal();
        const res = await t.request(`/v1/agents/${copy.id}`, { method: "DELETE", token: admin.token });
        expect(res.status).toBe(403);
        expect((await json(res)).detail).toContain("federated copy");
        const record = await json<Record_>(await t.request(`/v1/agents/${copy.id}`));
        expect(record.source).toEqual({ registry: "peer.example", originId: "remote-1", federated: true });
      });
    });

    describe("private agents", () => {
      test("invisible to anonymous and other clients on get, card, versions, list and index; visible to owner, entitled and admin", async () => {
        const card = cardWith({
          skills: [{ id: "secret-skill", name: "Secret", description: "s", tags: ["hidden-tag"] }],
        });
        const { id } = await publishOk(card, writer.token, { visibility: "private" });
        const paths = [
          `/v1/agents/${id}`,
          `/v1/agents/${id}/card`,
          `/v1/agents/${id}/versions`,
          `/v1/agents/${id}/versions/1.4.2`,
        ];
        for (const token of [undefined, other.token, reader.token]) {
          for (const path of paths) {
            const res = await t.request(path, { token });
            expect({ path, status: res.status }).toEqual({ path, status: 404 });
            expect(await res.text()).not.toContain(card.name as string);
          }
          const list = await (await t.request("/v1/agents?tag=hidden-tag&limit=100", { token })).text();
          expect(list).not.toContain(id);
          const all = await (await t.request("/v1/agents?limit=100", { token })).text();
          expect(all).not.toContain(id);
        }
        const index = await (await t.request("/.well-known/agents/index.json?limit=500")).text();
        expect(index).not.toContain(id);

        for (const token of [writer.token, admin.token])
          for (const path of paths) expect((await t.request(path, { token })).status).toBe(200);
        const ownList = await json<{ items: { id: string }[] }>(
          await t.request("/v1/agents?tag=hidden-tag", { token: writer.token }),
        );
        expect(ownList.items.map((i) => i.id)).toEqual([id]);

        // entitlement: other writer sees it while entitled
        const grant = await t.request(`/v1/agents/${id}/entitlements/${reader.clientId}`, {
          method: "PUT",
          token: writer.token,
        });
        expect(grant.status).toBe(204);
        expect((await t.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(200);
        const readerList = await json<{ items: { id: string }[] }>(
          await t.request("/v1/agents?tag=hidden-tag", { token: reader.token }),
        );
        expect(readerList.items.map((i) => i.id)).toEqual([id]);
        const ents = await json<{ items: { clientId: string }[] }>(
          await t.request(`/v1/agents/${id}/entitlements`, { token: writer.token }),
        );
        expect(ents.items.map((e) => e.clientId)).toEqual([reader.clientId]);
        // an entitled reader still cannot write
        expect((await t.request(`/v1/agents/${id}`, { method: "DELETE", token: reader.token })).status).toBe(
          403,
        );
        const revoke = await t.request(`/v1/agents/${id}/entitlements/${reader.clientId}`, {
          method: "DELETE",
          token: writer.token,
        });
        expect(revoke.status).toBe(204);
        expect((await t.request(`/v1/agents/${id}`, { token: reader.token })).status).toBe(404);
      });

      test("entitlement routes: errors and security", async () => {
        const { id } = await publishOk(cardWith(), writer.token, { visibility: "private" });
        expect(
          (
            await t.request(`/v1/agents/${id}/entitlements/cli_unknown`, {
              method: "PUT",
              token: writer.token,
            })
          ).status,
        ).toBe(404);
        expect(
          (
            await t.request(`/v1/agents/${id}/entitlements/${other.clientId}`, {
              method: "DELETE",
              token: writer.token,
            })
          ).status,
        ).toBe(404);
        expect(
          (
            await t.request(`/v1/agents/${id}/entitlements/${other.clientId}`, {
              method: "PUT",
              token: other.token,
            })
          ).status,
        ).toBe(404);
        expect((await t.request(`/v1/agents/${id}/entitlements`, { token: other.token })).status).toBe(404);
        expect((await t.request(`/v1/agents/${id}/entitlements`)).status).toBe(401);
        expect(
          (
            await t.request(`/v1/agents/${id}/entitlements/${other.clientId}`, {
              method: "PUT",
              token: admin.token,
            })
          ).status,
        ).toBe(204);
      });
    });

    describe("GET /v1/agents (list)", () => {
      let ids: { alpha: string; beta: string; gamma: string };
      const tag = `tag-${Date.now()}`;
      beforeAll(async () => {
        const mk = (name: string, extra: Record<string, unknown>) =>
          cardWith({
            name,
            skills: [
              { id: `${name}-skill`, name: `${name} skill`, description: "d", tags: [tag, `${name}-only`] },
            ],
            ...extra,
          });
        const alpha = (
          await publishOk(
            mk("alpha", {
              capabilities: { streaming: true },
              provider: { organization: "Acme Corp", url: "https://acme.example" },
            }),
          )
        ).id;
        const beta = (
          await publishOk(
            mk("beta", { capabilities: { streaming: false }, defaultInputModes: ["image/png"] }),
          )
        ).id;
        const gamma = (await publishOk(mk("gamma", { capabilities: {}, defaultOutputModes: ["audio/wav"] })))
          .id;
        ids = { alpha, beta, gamma };
        await t.request(`/v1/agents/${ids.gamma}`, {
          method: "PATCH",
          json: { status: "deprecated" },
          token: writer.token,
        });
      });
      const listIds = async (query: string, token?: string) => {
        const res = await t.request(`/v1/agents?${query}`, { token });
        expect(res.status).toBe(200);
        const body = await json<{ items: { id: string }[]; nextCursor: string | null }>(res);
        return body.items.map((i) => i.id);
      };

      test("happy: filters", async () => {
        expect((await listIds(`tag=${tag}`)).sort()).toEqual([ids.alpha, ids.beta, ids.gamma].sort());
        expect(await listIds(`tag=${tag.toUpperCase()}`)).toHaveLength(3);
        expect(await listIds("skill=alpha-skill")).toEqual([ids.alpha]);
        expect(await listIds("skill=Beta%20Skill")).toEqual([ids.beta]);
        expect(await listIds(`tag=${tag}&streaming=true`)).toEqual([ids.alpha]);
        expect((await listIds(`tag=${tag}&streaming=false`)).sort()).toEqual([ids.beta, ids.gamma].sort());
        expect(await listIds(`tag=${tag}&provider=acme%20corp`)).toEqual([ids.alpha]);
        expect(await listIds(`tag=${tag}&inputMode=image/png`)).toEqual([ids.beta]);
        expect(await listIds(`tag=${tag}&outputMode=audio/wav`)).toEqual([ids.gamma]);
        expect(await listIds(`tag=${tag}&status=deprecated`)).toEqual([ids.gamma]);
        expect(await listIds(`tag=${tag}&health=unknown`)).toHaveLength(3);
        expect(await listIds(`tag=${tag}&health=up`)).toHaveLength(0);
        expect(
          await listIds(
            `tag=${tag}&updatedSince=${encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString())}`,
          ),
        ).toHaveLength(0);
        expect(await listIds(`tag=${tag}&updatedSince=2000-01-01T00:00:00Z`)).toHaveLength(3);
      });

      test("happy: keyset pagination visits every agent exactly once, newest change first", async () => {
        const seen: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const res = await t.request(`/v1/agents?limit=2${cursor ? `&cursor=${cursor}` : ""}`, {
            token: admin.token,
          });
          const body = await json<{ items: { id: string }[]; nextCursor: string | null }>(res);
          expect(body.items.length).toBeLessThanOrEqual(2);
          seen.push(...body.items.map((i) => i.id));
          cursor = body.nextCursor;
          pages++;
        } while (cursor && pages < 500);
        expect(new Set(seen).size).toBe(seen.length);
        const [row] = await t.db.database.rows<{ n: number }>(
          sql`select count(*)::int as n from agents where deleted_at is null`,
        );
        expect(seen).toHaveLength(Number(row!.n));
        expect(seen.indexOf(ids.gamma)).toBeLessThan(seen.indexOf(ids.alpha));
      });

      test("errors: bad limit, cursor, status, dates are 400", async () => {
        for (const q of [
          "limit=0",
          "limit=101",
          "limit=abc",
          "cursor=zzz",
          "status=deleted",
          "health=sideways",
          "updatedSince=yesterday",
          "streaming=maybe",
        ]) {
          const res = await t.request(`/v1/agents?${q}`);
          expect({ q, status: res.status }).toEqual({ q, status: 400 });
          expect((await json(res)).code).toBe("VALIDATION_FAILED");
        }
      });
    });
  });
}

for (const backend of BACKENDS) {
  describe(`planner statistics [${backend}]`, () => {
    test("ANALYZE after analyzeEvery writes, then when the writes reach half the rows last counted", async () => {
      const t = await createTestApp(backend);
      try {
        const agents = createAgentsService({
          config: t.config,
          database: t.db.database,
          cache: t.app.services.agentCache,
          audit: t.app.services.audit,
          metrics: createMetrics({ collectProcessMetrics: false }),
          logger: createLogger("silent"),
          analyzeEvery: 4,
        });
        const ctx = {
          caller: { kind: "client" as const, clientId: "stats", scopes: [], admin: true, tokenId: "" },
          requestId: "stats",
          ip: null,
        };
        const publish = async (count: number) => {
          for (let i = 0; i < count; i++) await agents.publish(ctx, { card: cardWith() }, undefined);
        };
        const counted = async () =>
          Number(
            (
              await t.db.database.rows<{ n: number }>(
                sql`select reltuples::float8 as n from pg_class where oid = 'agents'::regclass`,
              )
            )[0]!.n,
          );
        const countedBecomes = async (rows: number) => {
          expect(await eventually(async () => (await counted()) === rows)).toBe(true);
          // The service reads the count right after its ANALYZE: let it set the next threshold.
          await Bun.sleep(100);
        };
        const before = await counted();
        await publish(3);
        await Bun.sleep(200);
        expect(await counted()).toBe(before);
        await publish(1);
        await countedBecomes(4);
        // The search rows are analysed with the agents.
        const [search] = await t.db.database.rows<{ n: number }>(
          sql`select reltuples::float8 as n from pg_class where oid = 'agent_search'::regclass`,
        );
        expect(Number(search!.n)).toBe(4);
        await publish(4); // the next after max(4, 4 / 2) writes
        await countedBecomes(8);
        await publish(4); // max(4, 8 / 2)
        await countedBecomes(12);
        await publish(5); // max(4, 12 / 2) = 6: not yet
        await Bun.sleep(200);
        expect(await counted()).toBe(12);
        await publish(1);
        await countedBecomes(18);
      } finally {
        await t.close();
      }
    });
  });
}
