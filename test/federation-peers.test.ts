import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { createLogger } from "../src/infra/logger";
import { decryptSecret } from "../src/modules/federation/crypto";
import { createSyncEngine, type SyncEngine } from "../src/modules/federation/engine";
import { createSyncStore, type SyncStore } from "../src/modules/federation/store";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase, type TestDatabase } from "./support/db";
import { cardFor } from "./support/federation";
import { eventually } from "./support/redis";

const cardWith = (overrides: Record<string, unknown> = {}) => cardFor("Peer agent", overrides);

type Peer = {
  id: string;
  name: string;
  baseUrl: string;
  registryId: string | null;
  enabled: boolean;
  intervalSeconds: number;
  lastSeq: number;
  lastStatus: string;
  lastError: string | null;
  agentsSynced: number;
  lagChanges: number;
  lagSeconds: number | null;
};
type Agent = {
  id: string;
  name: string;
  version: string;
  status: string;
  visibility: string;
  source: { registry: string; originId: string; federated: boolean };
};

/** A stand-in for a peer registry whose answers each test decides. */
function fakePeer(handlers: Partial<Record<"token" | "card" | "changes", (req: Request) => Response>>) {
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(req) {
      const path = new URL(req.url).pathname;
      if (path === "/oauth/token")
        return (
          handlers.token?.(req) ??
          Response.json({
            access_token: "fake-token",
            token_type: "Bearer",
            expires_in: 600,
            scope: "agents:read",
          })
        );
      if (path === "/.well-known/agent-card.json")
        return handlers.card?.(req) ?? Response.json({ name: "Fake" });
      if (path === "/v1/changes")
        return handlers.changes?.(req) ?? Response.json({ changes: [], nextSince: 0, hasMore: false });
      return new Response("not found", { status: 404 });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) };
}

for (const backend of BACKENDS) {
  describe(`/v1/peers [${backend}]`, () => {
    let a: TestApp; // the peer registry, served on a loopback port
    let b: TestApp; // the registry that pulls from it
    let bDb: TestDatabase;
    let aBase: string;
    let aWriter: { clientId: string; token: string };
    let puller: { clientId: string; clientSecret: string };
    let admin: { clientId: string; token: string };
    let bWriter: { clientId: string; token: string };
    let store: SyncStore;
    let engine: SyncEngine;

    const addBody = (overrides: Record<string, unknown> = {}) => ({
      name: "registry A",
      baseUrl: aBase,
      clientId: puller.clientId,
      clientSecret: puller.clientSecret,
      ...overrides,
    });
    const addPeer = (body: unknown, token = admin.token) =>
      b.request("/v1/peers", { method: "POST", json: body, token });
    const publishOnA = async (card: unknown, visibility = "public") => {
      const res = await a.request("/v1/agents", {
        method: "POST",
        json: { card, visibility },
        token: aWriter.token,
      });
      expect(res.status).toBe(201);
      return json<Agent>(res);
    };
    /** One sync of the peer now, through the same engine and store the worker uses. */
    const syncNow = async (peerId: string) => {
      expect(
        (await b.request(`/v1/peers/${peerId}/sync`, { method: "POST", token: admin.token })).status,
      ).toBe(202);
      await engine.runOnce(peerId);
      return json<Peer>(await b.request(`/v1/peers/${peerId}`, { token: admin.token }));
    };
    const copies = async () => {
      const res = await b.request("/v1/agents?limit=100", { token: admin.token });
      return (await json<{ items: Agent[] }>(res)).items.filter((x) => x.source.federated);
    };

    beforeAll(async () => {
      a = await createTestApp(backend, { config: { registryId: "peer-a" } });
      a.app.listen({ port: 0, hostname: "127.0.0.1" });
      aBase = `http://127.0.0.1:${a.app.server!.port}`;
      // B knows its database URL, so on Postgres its worker thread opens the database itself ("direct").
      bDb = await createTestDatabase(backend);
      b = await createTestApp(backend, { db: bDb, config: { registryId: "reg-b", databaseUrl: bDb.url } });
      aWriter = await a.client(["agents:write"], "a writer");
      const created = await a.app.services.auth.createClient({ name: "b puller", scopes: ["agents:read"] });
      puller = { clientId: created.client_id, clientSecret: created.client_secret };
      [admin, bWriter] = await Promise.all([
        b.client(["admin"], "b admin"),
        b.client(["agents:write"], "b writer"),
      ]);
      store = createSyncStore({ config: b.config, database: b.db.database, lockUrl: b.db.url });
      engine = createSyncEngine({
        config: b.config,
        store,
        logger: createLogger("silent"),
        instance: "test",
        hooks: { changed: (ids) => b.app.services.agents.changedElsewhere(ids), report: () => {} },
      });
    }, 120_000);
    afterAll(async () => {
      await store?.close();
      await b?.close();
      await bDb?.drop();
      await a?.close();
    });

    describe("security", () => {
      test("anonymous callers get 401 and non-admins 403 on every peers route", async () => {
        const routes: Array<[string, string]> = [
          ["POST", "/v1/peers"],
          ["GET", "/v1/peers"],
          ["GET", `/v1/peers/${crypto.randomUUID()}`],
          ["PATCH", `/v1/peers/${crypto.randomUUID()}`],
          ["DELETE", `/v1/peers/${crypto.randomUUID()}`],
          ["POST", `/v1/peers/${crypto.randomUUID()}/sync`],
          ["GET", `/v1/peers/${crypto.randomUUID()}/syncs`],
        ];
        for (const [method, path] of routes) {
          const body = method === "POST" || method === "PATCH" ? { json: addBody() } : {};
          const anonymous = await b.request(path, { method, ...body, token: null });
          expect(anonymous.status).toBe(401);
          const writer = await b.request(path, { method, ...body, token: bWriter.token });
          expect(writer.status).toBe(403);
          expect((await json(writer)).code).toBe("FORBIDDEN");
        }
      });

      test("outside DEBUG, plain http and private or loopback addresses are refused", async () => {
        const strict = await createTestApp(backend, { config: { debug: false } });
        try {
          const strictAdmin = await strict.client(["admin"]);
          for (const baseUrl of [aBase, "https://127.0.0.1:1", "https://10.1.2.3", "https://[::1]:8443"]) {
            const res = await strict.request("/v1/peers", {
              method: "POST",
              json: addBody({ baseUrl }),
              token: strictAdmin.token,
            });
            expect(res.status).toBe(400);
            const problem = await json<{ code: string; errors: Array<{ path: string }> }>(res);
            expect(problem.code).toBe("VALIDATION_FAILED");
            expect(problem.errors[0]!.path).toBe("/baseUrl");
          }
        } finally {
          await strict.close();
        }
      });
    });

    describe("validation", () => {
      test("malformed bodies are 400 VALIDATION_FAILED", async () => {
        for (const body of [
          {},
          addBody({ name: "" }),
          addBody({ clientSecret: undefined }),
          addBody({ intervalSeconds: 0 }),
          addBody({ extra: true }),
          addBody({ baseUrl: "not a url" }),
          addBody({ baseUrl: "ftp://example.com" }),
        ]) {
          const res = await addPeer(body);
          expect(res.status).toBe(400);
          expect((await json(res)).code).toBe("VALIDATION_FAILED");
        }
      });

      test("a peer is checked before it is stored: credentials, card, feed, reachability, not itself", async () => {
        const refusing = fakePeer({
          token: () => Response.json({ error: "invalid_client" }, { status: 401 }),
        });
        const noCard = fakePeer({ card: () => new Response("nope", { status: 404 }) });
        const forbidden = fakePeer({ changes: () => new Response("{}", { status: 403 }) });
        const garbage = fakePeer({ changes: () => new Response("<html>hello</html>") });
        const closed = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
        const closedUrl = `http://127.0.0.1:${closed.port}`;
        closed.stop(true);
        try {
          const cases: Array<[string, string, RegExp]> = [
            [refusing.url, "/clientSecret", /refused the client credentials/],
            [noCard.url, "/baseUrl", /agent card/],
            [forbidden.url, "/clientId", /refused the feed/],
            [garbage.url, "/baseUrl", /malformed change feed/],
            [closedUrl, "/baseUrl", /could not/],
            [b.config.registryBaseUrl, "/baseUrl", /this registry itself/],
          ];
          for (const [baseUrl, path, detail] of cases) {
            const res = await addPeer(addBody({ baseUrl }));
            const problem = await json<{ code: string; detail: string; errors: Array<{ path: string }> }>(
              res,
            );
            expect([res.status, problem.code, problem.errors[0]!.path]).toEqual([
              400,
              "VALIDATION_FAILED",
              path,
            ]);
            expect(problem.detail).toMatch(detail);
          }
          const list = await json<{ items: Peer[] }>(await b.request("/v1/peers", { token: admin.token }));
          expect(list.items).toHaveLength(0);
        } finally {
          for (const fake of [refusing, noCard, forbidden, garbage]) fake.stop();
        }
      });
    });

    describe("lifecycle", () => {
      let peer: Peer;
      let first: Agent;

      test("POST adds the peer: 201 with Location; the secret is stored encrypted and never returned", async () => {
        first = await publishOnA(cardWith({ name: "Alpha weather" }));
        const res = await addPeer(addBody({ intervalSeconds: 60 }));
        expect(res.status).toBe(201);
        const text = await res.text();
        expect(text).not.toContain(puller.clientSecret);
        peer = JSON.parse(text) as Peer;
        expect(res.headers.get("location")).toBe(`/v1/peers/${peer.id}`);
        expect(peer).toMatchObject({
          name: "registry A",
          baseUrl: aBase,
          registryId: "peer-a",
          enabled: true,
          intervalSeconds: 60,
          lastSeq: 0,
          lastStatus: "never",
          lastError: null,
          agentsSynced: 0,
          lagSeconds: null,
        });
        expect(Object.keys(peer)).not.toContain("clientSecret");
        for (const path of ["/v1/peers", `/v1/peers/${peer.id}`]) {
          const read = await (await b.request(path, { token: admin.token })).text();
          expect(read).not.toContain(puller.clientSecret);
        }
        const [row] = await b.db.database.rows<{ client_secret_enc: string }>(
          sql`select client_secret_enc from peers where id = ${peer.id}`,
        );
        expect(row!.client_secret_enc).not.toContain(puller.clientSecret);
        expect(row!.client_secret_enc).toMatch(/^v1\./);
        expect(await decryptSecret(b.config.secretKey, peer.id, row!.client_secret_enc)).toBe(
          puller.clientSecret,
        );
        const audit = await b.request("/v1/audit?action=peer.added", { token: admin.token });
        const auditText = await audit.text();
        expect(auditText).toContain(peer.id);
        expect(auditText).not.toContain(puller.clientSecret);
        // The same base URL (or the same registry) cannot be added twice.
        const again = await addPeer(addBody());
        expect(again.status).toBe(400);
      });

      test("GET lists and reads peers; unknown ids are 404", async () => {
        const list = await json<{ items: Peer[] }>(await b.request("/v1/peers", { token: admin.token }));
        expect(list.items.map((p) => p.id)).toEqual([peer.id]);
        for (const id of [crypto.randomUUID(), "not-a-uuid"]) {
          const res = await b.request(`/v1/peers/${id}`, { token: admin.token });
          expect(res.status).toBe(404);
          expect((await json(res)).code).toBe("NOT_FOUND");
        }
      });

      test("a sync copies the peer's agents: read-only, searchable, the card byte for byte", async () => {
        const synced = await syncNow(peer.id);
        expect(synced).toMatchObject({
          lastStatus: "success",
          lastError: null,
          agentsSynced: 1,
          lagChanges: 0,
        });
        expect(synced.lastSeq).toBeGreaterThan(0);
        const [copy] = await copies();
        expect(copy).toMatchObject({
          name: "Alpha weather",
          source: { registry: "peer-a", originId: first.id, federated: true },
        });
        expect(copy!.id).not.toBe(first.id);
        const originCard = await (await a.request(`/v1/agents/${first.id}/card`)).text();
        const copyCard = await (await b.request(`/v1/agents/${copy!.id}/card`)).text();
        expect(copyCard).toBe(originCard);
        // Anyone may read a public copy, and find it.
        expect((await b.request(`/v1/agents/${copy!.id}`, { token: null })).status).toBe(200);
        const search = await json<{ items: Array<{ agent: Agent }> }>(
          await b.request("/v1/search?q=Alpha", { token: null }),
        );
        expect(search.items.map((i) => i.agent.id)).toContain(copy!.id);
        // Writes to a copy are refused, even for an admin, saying why.
        for (const [method, body] of [
          ["PUT", { card: cardWith() }],
          ["PATCH", { status: "deprecated" }],
          ["DELETE", undefined],
        ] as const) {
          const res = await b.request(`/v1/agents/${copy!.id}`, { method, json: body, token: admin.token });
          expect(res.status).toBe(403);
          const problem = await json<{ code: string; detail: string }>(res);
          expect(problem.code).toBe("FORBIDDEN");
          expect(problem.detail).toContain("federated copy");
        }
        const history = await json<{ items: Array<{ status: string; added: number; instance: string }> }>(
          await b.request(`/v1/peers/${peer.id}/syncs`, { token: admin.token }),
        );
        expect(history.items[0]).toMatchObject({ status: "success", added: 1, instance: "test" });
      });

      test("updates, status changes and deletions on the peer reach the copies", async () => {
        const second = await publishOnA(cardWith({ name: "Beta weather" }));
        await a.request(`/v1/agents/${first.id}`, {
          method: "PUT",
          json: { card: cardWith({ name: "Alpha weather", version: "9.0.0" }) },
          token: aWriter.token,
        });
        await syncNow(peer.id);
        let held = await copies();
        expect(held.map((c) => [c.name, c.version]).sort()).toEqual([
          ["Alpha weather", "9.0.0"],
          ["Beta weather", "1.4.2"],
        ]);
        await a.request(`/v1/agents/${second.id}`, {
          method: "PATCH",
          json: { status: "deprecated" },
          token: aWriter.token,
        });
        await a.request(`/v1/agents/${first.id}`, { method: "DELETE", token: aWriter.token });
        const synced = await syncNow(peer.id);
        held = await copies();
        expect(held.map((c) => [c.name, c.status])).toEqual([["Beta weather", "deprecated"]]);
        expect(synced.agentsSynced).toBe(1);
      });

      test("a private agent reaches the puller only while its client is entitled", async () => {
        const hidden = await publishOnA(cardWith({ name: "Private weather" }), "private");
        await syncNow(peer.id);
        expect((await copies()).some((c) => c.source.originId === hidden.id)).toBe(false);
        await a.request(`/v1/agents/${hidden.id}/entitlements/${puller.clientId}`, {
          method: "PUT",
          token: aWriter.token,
        });
        await syncNow(peer.id);
        const copy = (await copies()).find((c) => c.source.originId === hidden.id);
        expect(copy).toMatchObject({ visibility: "private", name: "Private weather" });
        // Private on B too: only B's admins see it.
        expect((await b.request(`/v1/agents/${copy!.id}`, { token: null })).status).toBe(404);
        expect((await b.request(`/v1/agents/${copy!.id}`, { token: bWriter.token })).status).toBe(404);
        await a.request(`/v1/agents/${hidden.id}/entitlements/${puller.clientId}`, {
          method: "DELETE",
          token: aWriter.token,
        });
        await syncNow(peer.id);
        expect((await copies()).some((c) => c.source.originId === hidden.id)).toBe(false);
      });

      test("PATCH changes settings; new credentials are checked first; sync now needs an enabled peer", async () => {
        const wrong = await b.request(`/v1/peers/${peer.id}`, {
          method: "PATCH",
          json: { clientSecret: "sec_wrong" },
          token: admin.token,
        });
        expect(wrong.status).toBe(400);
        const disabled = await b.request(`/v1/peers/${peer.id}`, {
          method: "PATCH",
          json: { enabled: false, intervalSeconds: 5, name: "A (paused)" },
          token: admin.token,
        });
        expect(await json(disabled)).toMatchObject({
          enabled: false,
          intervalSeconds: 5,
          name: "A (paused)",
        });
        const refused = await b.request(`/v1/peers/${peer.id}/sync`, { method: "POST", token: admin.token });
        expect(refused.status).toBe(400);
        const enabled = await b.request(`/v1/peers/${peer.id}`, {
          method: "PATCH",
          json: { enabled: true, clientSecret: puller.clientSecret },
          token: admin.token,
        });
        expect(await json(enabled)).toMatchObject({ enabled: true });
        expect(
          (await b.request(`/v1/peers/${crypto.randomUUID()}/sync`, { method: "POST", token: admin.token }))
            .status,
        ).toBe(404);
      });

      test("DELETE removes the peer and every copy of its agents", async () => {
        const held = await copies();
        expect(held.length).toBeGreaterThan(0);
        const res = await b.request(`/v1/peers/${peer.id}`, { method: "DELETE", token: admin.token });
        expect(res.status).toBe(204);
        expect(await copies()).toEqual([]);
        for (const copy of held)
          expect((await b.request(`/v1/agents/${copy.id}`, { token: admin.token })).status).toBe(404);
        expect((await b.request(`/v1/peers/${peer.id}`, { token: admin.token })).status).toBe(404);
        expect(
          (await b.request(`/v1/peers/${peer.id}`, { method: "DELETE", token: admin.token })).status,
        ).toBe(404);
        const audit = await json<{ items: Array<{ target: string; details: { copiesRemoved: number } }> }>(
          await b.request("/v1/audit?action=peer.removed", { token: admin.token }),
        );
        expect(audit.items[0]).toMatchObject({ target: peer.id, details: { copiesRemoved: held.length } });
      });
    });

    test("the worker thread syncs on its own and readiness reports it; stop() ends it", async () => {
      const federation = b.app.services.federation;
      const before = await json<{ checks: { federationWorker: { status: string } } }>(
        await b.request("/health/ready"),
      );
      expect(before.checks.federationWorker.status).toBe("disabled");
      federation.start({ worker: true });
      try {
        expect(await eventually(() => federation.workerState() === "running", 10_000)).toBe(true);
        const ready = await json<{ checks: { federationWorker: { status: string } } }>(
          await b.request("/health/ready"),
        );
        expect(ready.checks.federationWorker.status).toBe("ok");
        const agent = await publishOnA(cardWith({ name: "Worker weather" }));
        const res = await addPeer(addBody({ name: "A again" }));
        expect(res.status).toBe(201);
        expect(
          await eventually(
            async () => (await copies()).some((c) => c.source.originId === agent.id),
            15_000,
            100,
          ),
        ).toBe(true);
      } finally {
        await federation.stop();
      }
      expect(federation.workerState()).toBe("off");
    });
  });
}
