import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  type AgentRecordValue,
  createRegistryClient,
  type RegistryClient,
  RegistryError,
  ROUTES,
} from "../src/client";
import { createTestApp, type TestApp } from "./support/app";
import * as cards from "./support/compat-cards";
import { fixture } from "./support/compat-cards";
import { BACKENDS } from "./support/db";

const cardWith = (overrides: Record<string, unknown> = {}) => cards.cardWith("Client Agent", overrides);

/** Compile-time checks: the client's inputs are the server's schemas (never called). */
function typeChecks(client: RegistryClient) {
  // @ts-expect-error status is "active" | "deprecated"
  void client.agents.patch("id", { status: "retired" });
  // @ts-expect-error visibility is "public" | "private"
  void client.agents.publish({ card: {}, visibility: "secret" });
  // @ts-expect-error scopes are the three known ones
  void client.clients.create({ name: "x", scopes: ["everything"] });
  // @ts-expect-error the feed's since is a number
  void client.changes({ since: "0" });
  const record: Promise<AgentRecordValue> = client.agents.get("id");
  void record;
}
void typeChecks;

const expectError = async (promise: Promise<unknown>, status: number, code: string) => {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(RegistryError);
  expect((error as RegistryError).status).toBe(status);
  expect((error as RegistryError).code).toBe(code);
  return error as RegistryError;
};

for (const backend of BACKENDS) {
  describe(`typed client [${backend}]`, () => {
    let t: TestApp;
    let base: string;
    let admin: RegistryClient;
    let writer: RegistryClient;
    let anonymous: RegistryClient;
    let writerId: string;

    beforeAll(async () => {
      t = await createTestApp(backend);
      t.app.listen({ port: 0, hostname: "127.0.0.1" });
      base = `http://127.0.0.1:${t.app.server!.port}`;
      const inProcess = { baseUrl: "http://localhost", fetch: (r: Request) => t.app.handle(r) };
      const bootstrap = await t.app.services.auth.createClient({ name: "client admin", scopes: ["admin"] });
      admin = createRegistryClient(inProcess);
      await admin.authenticate({ clientId: bootstrap.client_id, clientSecret: bootstrap.client_secret });
      const created = await admin.clients.create({ name: "client writer", scopes: ["agents:write"] });
      writerId = created.client_id;
      writer = createRegistryClient(inProcess);
      const token = await writer.authenticate({
        clientId: created.client_id,
        clientSecret: created.client_secret,
      });
      expect(token).toMatchObject({ token_type: "Bearer", scope: "agents:write" });
      anonymous = createRegistryClient(inProcess);
    });
    afterAll(() => t.close());

    test("every client route exists in the server's OpenAPI document (/docs/json)", async () => {
      const doc = (await (await fetch(`${base}/docs/json`)).json()) as {
        paths: Record<string, Record<string, unknown>>;
      };
      const missing = Object.entries(ROUTES)
        .filter(([, [method, path]]) => !doc.paths[path]?.[method.toLowerCase()])
        .map(([name, [method, path]]) => `${name}: ${method} ${path}`);
      expect(missing).toEqual([]);
    });

    test("agents: publish, read, card bytes, update, patch, versions, list pages, entitlements, delete", async () => {
      const card = cardWith();
      const published = await writer.agents.publish({ card });
      expect(published).toMatchObject({
        name: card.name,
        owner: writerId,
        visibility: "public",
        version: "1.4.2",
      });
      expect((await anonymous.agents.get(published.id)).id).toBe(published.id);
      const served = await anonymous.agents.card(published.id);
      expect(served.card).toEqual(card);
      expect(served.text).toBe(JSON.stringify(card));
      expect(served.etag).toMatch(/^"/);
      const updated = await writer.agents.update(published.id, { card: { ...card, version: "1.5.0" } });
      expect(updated.version).toBe("1.5.0");
      expect((await writer.agents.versions(published.id)).items.map((v) => v.version)).toEqual([
        "1.5.0",
        "1.4.2",
      ]);
      expect((await writer.agents.version(published.id, "1.4.2")).card).toEqual(card);
      const patched = await writer.agents.patch(published.id, {
        visibility: "private",
        statusMessage: "beta",
      });
      expect(patched).toMatchObject({ visibility: "private", statusMessage: "beta" });
      await expectError(anonymous.agents.get(published.id), 404, "NOT_FOUND");
      const reader = await admin.clients.create({ name: "client reader", scopes: ["agents:read"] });
      await writer.agents.grant(published.id, reader.client_id);
      expect((await writer.agents.entitlements(published.id)).items.map((e) => e.clientId)).toEqual([
        reader.client_id,
      ]);
      await writer.agents.revoke(published.id, reader.client_id);
      expect((await writer.agents.entitlements(published.id)).items).toEqual([]);

      for (let i = 0; i < 3; i++) await writer.agents.publish({ card: cardWith() });
      const seen: string[] = [];
      for await (const page of writer.agents.pages({ limit: 2 })) seen.push(...page.items.map((a) => a.id));
      expect(seen).toContain(published.id);
      expect(new Set(seen).size).toBe(seen.length);
      expect(seen.length).toBeGreaterThanOrEqual(4);

      await writer.agents.heartbeat(published.id);
      expect((await writer.agents.get(published.id)).health).toBe("up");
      await writer.agents.remove(published.id);
      await expectError(writer.agents.get(published.id), 404, "NOT_FOUND");
    });

    test("search, its pages, the change feed and its pages", async () => {
      const marker = `cl${Date.now().toString(36)}`;
      const ids: string[] = [];
      for (let i = 0; i < 3; i++)
        ids.push((await writer.agents.publish({ card: cardWith({ name: `${marker} ${i}` }) })).id);
      const results = await anonymous.search({ q: marker, consistent: true });
      expect(results.total).toBe(3);
      const paged: string[] = [];
      for await (const page of anonymous.searchPages({ q: marker, limit: 1 }))
        paged.push(...page.items.map((i) => i.agent.id));
      expect(paged.sort()).toEqual([...ids].sort());

      const first = await writer.changes({ since: 0, limit: 1 });
      expect(first.changes).toHaveLength(1);
      expect(first.hasMore).toBe(true);
      const fed: string[] = [];
      for await (const page of writer.changesPages({ limit: 2 }))
        for (const change of page.changes) if (change.op === "upsert") fed.push(change.agent!.id);
      for (const id of ids) expect(fed).toContain(id);
      await expectError(anonymous.changes(), 401, "UNAUTHORIZED");
    });

    test("clients, webhooks, audit, stats, health and the discovery documents", async () => {
      const listed = await admin.clients.list();
      expect(listed.items.map((c) => c.client_id)).toContain(writerId);
      const spare = await admin.clients.create({ name: "spare", scopes: ["agents:read"] });
      await admin.clients.revoke(spare.client_id);
      expect((await admin.clients.list()).items.find((c) => c.client_id === spare.client_id)?.disabled).toBe(
        true,
      );

      const hook = await writer.webhooks.create({
        url: "http://127.0.0.1:9/hook",
        events: ["agent.published"],
      });
      expect(hook.secret.length).toBeGreaterThan(10);
      expect((await writer.webhooks.get(hook.id)).url).toBe("http://127.0.0.1:9/hook");
      expect((await writer.webhooks.list()).items.map((w) => w.id)).toContain(hook.id);
      expect((await writer.webhooks.deliveries(hook.id)).items).toBeArray();
      await writer.webhooks.remove(hook.id);
      await expectError(writer.webhooks.get(hook.id), 404, "NOT_FOUND");

      expect((await admin.audit({ action: "client.created" })).items.length).toBeGreaterThan(0);
      expect((await anonymous.stats()).total).toBeGreaterThanOrEqual(0);
      expect(await anonymous.health()).toEqual({ status: "ok" });
      expect((await anonymous.ready()).status).toBe("ready");
      expect((await anonymous.registryCard()).name).toBe(t.config.appName);
      expect((await anonymous.agentsIndex({ limit: 5 })).registry_name).toBe(t.config.appName);
      expect((await anonymous.aiCatalog()).specVersion).toBe("1.0");
    });

    test("compat: the older registry's routes through the same client", async () => {
      const published = await writer.compat.publish({ card: cardWith(), public: true });
      expect(published).toMatchObject({ public: true, signatureValid: false, protocolVersion: "0.3.0" });
      expect((await anonymous.compat.card(published.agentId)).card).toMatchObject({ version: "1.4.2" });
      const list = await anonymous.compat.publicAgents({ top: 100 });
      expect(list.items.map((i) => i.id)).toContain(published.agentId);
      const found = await anonymous.compat.search({ q: "Client Agent", top: 100 });
      expect(found.items.map((i) => i.agentId)).toContain(published.agentId);
      // GET /agents/:id is answered by the compat route on a served app (see test/compat.test.ts)
      const served = createRegistryClient({ baseUrl: base });
      expect((await served.compat.agent(published.agentId)).agentId).toBe(published.agentId);
    });

    test("peers: add a real peer registry, read, rename, sync now, history, remove", async () => {
      const peerApp = await createTestApp(backend);
      try {
        peerApp.app.listen({ port: 0, hostname: "127.0.0.1" });
        const puller = await peerApp.app.services.auth.createClient({
          name: "puller",
          scopes: ["agents:read"],
        });
        const peer = await admin.peers.add({
          name: "peer one",
          baseUrl: `http://127.0.0.1:${peerApp.app.server!.port}`,
          clientId: puller.client_id,
          clientSecret: puller.client_secret,
        });
        expect(peer).toMatchObject({ name: "peer one", enabled: true, lastStatus: "never" });
        expect(JSON.stringify(peer)).not.toContain(puller.client_secret);
        expect((await admin.peers.get(peer.id)).id).toBe(peer.id);
        expect((await admin.peers.list()).items.map((p) => p.id)).toContain(peer.id);
        expect((await admin.peers.update(peer.id, { name: "peer renamed" })).name).toBe("peer renamed");
        expect(await admin.peers.sync(peer.id)).toEqual({ status: "accepted", peer: peer.id });
        expect((await admin.peers.syncs(peer.id, 10)).items).toBeArray();
        await admin.peers.remove(peer.id);
        await expectError(admin.peers.get(peer.id), 404, "NOT_FOUND");
        await expectError(writer.peers.list(), 403, "FORBIDDEN");
      } finally {
        await peerApp.close();
      }
    });

    test("errors: problem details become RegistryError (code, detail, field errors, request id)", async () => {
      const invalid = await expectError(
        writer.agents.publish({ card: fixture("invalid", "missing-skills.json") }),
        422,
        "INVALID_AGENT_CARD",
      );
      expect(invalid.errors.length).toBeGreaterThan(0);
      expect(invalid.requestId).toBeTruthy();
      expect(invalid.route).toBe("publishAgent");
      expect(invalid.message).toContain("POST /v1/agents: 422 INVALID_AGENT_CARD");
      await expectError(anonymous.agents.publish({ card: cardWith() }), 401, "UNAUTHORIZED");
      await expectError(writer.clients.list(), 403, "FORBIDDEN");
      // the token endpoint's RFC 6749 errors are mapped too
      const stranger = createRegistryClient({ baseUrl: "http://localhost", fetch: (r) => t.app.handle(r) });
      await expectError(
        stranger.authenticate({ clientId: "cli_nobody", clientSecret: "wrong" }),
        401,
        "invalid_client",
      );
      expect(stranger.token).toBeUndefined();
      // path parameters are encoded, never spliced into the path
      await expectError(anonymous.agents.get("../../v1/clients"), 404, "NOT_FOUND");
    });

    test("over a real listener with the global fetch", async () => {
      const client = createRegistryClient({ baseUrl: `${base}/`, token: writer.token });
      expect(client.baseUrl).toBe(base);
      const agent = await client.agents.publish({ card: cardWith() });
      expect((await client.agents.get(agent.id)).id).toBe(agent.id);
      client.setToken(undefined);
      await expectError(client.agents.remove(agent.id), 401, "UNAUTHORIZED");
    });
  });

  describe(`typed client: 429 carries Retry-After [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      const generous = { limit: 1_000_000, periodMs: 1000 };
      t = await createTestApp(backend, {
        config: {
          rateLimits: {
            token: generous,
            admin: generous,
            write: generous,
            search: generous,
            read: { limit: 2, periodMs: 60_000 },
          },
        },
      });
    });
    afterAll(() => t.close());

    test("RATE_LIMITED with retryAfter in seconds", async () => {
      const client = createRegistryClient({ baseUrl: "http://localhost", fetch: (r) => t.app.handle(r) });
      await client.agents.list();
      await client.agents.list();
      const error = await expectError(client.agents.list(), 429, "RATE_LIMITED");
      expect(error.retryAfter).toBeGreaterThanOrEqual(1);
    });
  });
}
