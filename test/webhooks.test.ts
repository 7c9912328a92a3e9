import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import { type Config, testConfig } from "../src/config";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase } from "./support/db";

/** A receiver that records what it gets and can be told to fail the next N requests. */
function startReceiver() {
  const received: { headers: Headers; body: string }[] = [];
  const state = { failNext: 0 };
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    async fetch(request) {
      const body = await request.text();
      if (state.failNext > 0) {
        state.failNext--;
        return new Response("boom", { status: 500 });
      }
      received.push({ headers: request.headers, body });
      return new Response(null, { status: 204 });
    },
  });
  return { url: `http://127.0.0.1:${server.port}/hook`, received, state, stop: () => server.stop(true) };
}

/** What a receiver does with X-A2A-Signature: recompute the HMAC over `${t}.${body}`. */
function verifySignature(header: string | null, body: string, secret: string) {
  const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (!match) return false;
  const expected = createHmac("sha256", secret).update(`${match[1]}.${body}`).digest("hex");
  return expected === match[2] && Math.abs(Date.now() / 1000 - Number(match[1])) < 300;
}

let unique = 0;
const card = (name: string) => {
  unique++;
  return {
    protocolVersion: "0.3.0",
    name,
    description: "Webhook test agent.",
    url: `https://hook-${unique}-${Date.now()}.example.com/a2a`,
    version: "1.0.0",
    capabilities: {},
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [{ id: "s", name: "S", description: "S", tags: ["t"] }],
  };
};

type Created = { id: string; url: string; events: string[]; secret: string; owner: string };
type Delivery = {
  id: number;
  event: string;
  status: string;
  attempts: number;
  lastStatusCode: number | null;
  lastError: string | null;
};

const hookConfig = (overrides: Partial<Config["webhooks"]> = {}): Partial<Config> => ({
  debug: true,
  webhooks: { ...testConfig().webhooks, timeoutMs: 1000, ...overrides },
});

for (const backend of BACKENDS) {
  describe(`webhooks [${backend}]`, () => {
    let t: TestApp;
    let receiver: ReturnType<typeof startReceiver>;
    let owner: { clientId: string; token: string };
    let other: { clientId: string; token: string };
    let admin: { token: string };

    const subscribe = async (events: string[], token = owner.token, url = receiver.url) => {
      const res = await t.request("/v1/webhooks", { method: "POST", token, json: { url, events } });
      if (res.status !== 201) throw new Error(`subscribe ${res.status}: ${await res.text()}`);
      return json<Created>(res);
    };
    const publish = async (name: string, token = owner.token) => {
      const res = await t.request("/v1/agents", { method: "POST", token, json: { card: card(name) } });
      if (res.status !== 201) throw new Error(`publish ${res.status}`);
      return json<{ id: string }>(res);
    };
    const deliveries = async (id: string, token = owner.token) =>
      (await json<{ items: Delivery[] }>(await t.request(`/v1/webhooks/${id}/deliveries`, { token }))).items;
    const retryNow = () => t.db.database.rows(sql`update webhook_deliveries set next_attempt_at = now()`);
    const drainAll = async () => {
      await t.app.services.webhooks.deliverDue();
    };

    beforeAll(async () => {
      receiver = startReceiver();
      t = await createTestApp(backend, { config: hookConfig({ maxAttempts: 4 }) });
      [owner, other, admin] = await Promise.all([
        t.client(["agents:write"], "owner"),
        t.client(["agents:write"], "other"),
        t.client(["admin"], "admin"),
      ]);
    });
    afterAll(async () => {
      receiver.stop();
      await t.close();
    });

    describe("happy", () => {
      test("subscribe, publish, receive a signed delivery; the log records it", async () => {
        const hook = await subscribe([
          "agent.published",
          "agent.updated",
          "agent.status_changed",
          "agent.deleted",
        ]);
        expect(hook.secret).toMatch(/^whsec_/);
        expect(hook.owner).toBe(owner.clientId);
        const agent = await publish("Hooked Agent");
        await drainAll();
        const got = receiver.received.at(-1)!;
        expect(got.headers.get("x-a2a-event")).toBe("agent.published");
        expect(got.headers.get("content-type")).toBe("application/json");
        expect(verifySignature(got.headers.get("x-a2a-signature"), got.body, hook.secret)).toBe(true);
        expect(verifySignature(got.headers.get("x-a2a-signature"), got.body, "whsec_wrong")).toBe(false);
        const payload = JSON.parse(got.body);
        expect(payload).toMatchObject({
          event: "agent.published",
          agent: { id: agent.id, name: "Hooked Agent", status: "active" },
        });
        expect(typeof payload.agent.seq).toBe("number");
        const log = await deliveries(hook.id);
        expect(log[0]).toMatchObject({
          event: "agent.published",
          status: "delivered",
          attempts: 1,
          lastStatusCode: 204,
        });
        expect(String(log[0]!.id)).toBe(got.headers.get("x-a2a-delivery")!);

        await t.request(`/v1/agents/${agent.id}`, {
          method: "PATCH",
          token: owner.token,
          json: { status: "deprecated" },
        });
        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: owner.token });
        await drainAll();
        expect(receiver.received.slice(-2).map((r) => r.headers.get("x-a2a-event"))).toEqual([
          "agent.status_changed",
          "agent.deleted",
        ]);
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });

      test("a receiver failing twice gets the delivery on the third attempt, with backoff between", async () => {
        const hook = await subscribe(["agent.published"]);
        receiver.state.failNext = 2;
        const before = receiver.received.length;
        await publish("Retried Agent");
        await drainAll();
        let log = await deliveries(hook.id);
        expect(log[0]).toMatchObject({ status: "pending", attempts: 1, lastStatusCode: 500 });
        expect(log[0]!.lastError).toContain("HTTP 500");
        await drainAll(); // not due yet: backoff
        expect((await deliveries(hook.id))[0]!.attempts).toBe(1);
        await retryNow();
        await drainAll();
        await retryNow();
        await drainAll();
        log = await deliveries(hook.id);
        expect(log[0]).toMatchObject({
          status: "delivered",
          attempts: 3,
          lastStatusCode: 204,
          lastError: null,
        });
        expect(receiver.received.length).toBe(before + 1);
        const metrics = await (await t.request("/metrics")).text();
        expect(metrics).toMatch(/a2a_registry_webhook_deliveries_total\{result="retry"\} [2-9]/);
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });

      test("after WEBHOOK_MAX_ATTEMPTS a delivery is marked failed and left alone", async () => {
        const hook = await subscribe(["agent.published"]);
        receiver.state.failNext = 100;
        await publish("Doomed Agent");
        for (let i = 0; i < 6; i++) {
          await retryNow();
          await drainAll();
        }
        receiver.state.failNext = 0;
        const [last] = await deliveries(hook.id);
        expect(last).toMatchObject({ status: "failed", attempts: 4, lastStatusCode: 500 });
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });

      test("events filter: a webhook gets only what it subscribed to; health changes are events", async () => {
        const hook = await subscribe(["agent.health_changed"]);
        const agent = await publish("Health Hook Agent");
        await t.app.services.agents.setHealth(agent.id, "down", "probe failed");
        await drainAll();
        const log = await deliveries(hook.id);
        expect(log.map((d) => d.event)).toEqual(["agent.health_changed"]);
        const body = JSON.parse(receiver.received.at(-1)!.body);
        expect(body).toMatchObject({
          event: "agent.health_changed",
          agent: { id: agent.id, health: "down" },
        });
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });

      test("an admin's webhook hears about every owner's agents; an owner's only about its own", async () => {
        const adminHook = await subscribe(["agent.published"], admin.token);
        const ownerHook = await subscribe(["agent.published"], owner.token);
        await publish("Someone Else's Agent", other.token);
        await drainAll();
        expect((await deliveries(adminHook.id, admin.token)).length).toBe(1);
        expect((await deliveries(ownerHook.id)).length).toBe(0);
        await t.request(`/v1/webhooks/${adminHook.id}`, { method: "DELETE", token: admin.token });
        await t.request(`/v1/webhooks/${ownerHook.id}`, { method: "DELETE", token: owner.token });
      });

      test("a burst of publishes by two owners (batched): one delivery per agent per subscribed webhook", async () => {
        const adminHook = await subscribe(["agent.published"], admin.token);
        const ownerHook = await subscribe(["agent.published"], owner.token);
        const otherHook = await subscribe(["agent.updated"], other.token);
        const published = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            publish(`Burst Hook Agent ${i}`, i % 3 === 0 ? other.token : owner.token),
          ),
        );
        const ownersAgents = published.filter((_, i) => i % 3 !== 0).map((a) => a.id);
        const payloads = async (hookId: string, token: string) => {
          const ids = (await deliveries(hookId, token)).map((d) => d.id);
          const rows = await t.db.database.rows<{ payload: string }>(
            sql`select payload from webhook_deliveries where id = any(${`{${ids.join(",")}}`}::bigint[]) order by id`,
          );
          return rows.map(
            (row) => JSON.parse(row.payload) as { event: string; agent: { id: string; seq: number } },
          );
        };
        const toAdmin = await payloads(adminHook.id, admin.token);
        expect(toAdmin.map((p) => p.agent.id).sort()).toEqual(published.map((a) => a.id).sort());
        expect(new Set(toAdmin.map((p) => p.agent.seq)).size).toBe(12);
        expect(toAdmin.every((p) => p.event === "agent.published")).toBe(true);
        const toOwner = await payloads(ownerHook.id, owner.token);
        expect(toOwner.map((p) => p.agent.id).sort()).toEqual(ownersAgents.sort());
        expect((await deliveries(otherHook.id, other.token)).length).toBe(0);
        // Each payload states the seq the agent row has.
        const seqs = await t.db.database.rows<{ id: string; seq: number }>(
          sql`select id::text as id, seq::float8 as seq from agents where id = any(${`{${published.map((a) => a.id).join(",")}}`}::uuid[])`,
        );
        const seqOf = new Map(seqs.map((row) => [row.id, Number(row.seq)]));
        for (const p of toAdmin) expect(p.agent.seq).toBe(seqOf.get(p.agent.id)!);
        await drainAll();
        await t.request(`/v1/webhooks/${adminHook.id}`, { method: "DELETE", token: admin.token });
        await t.request(`/v1/webhooks/${ownerHook.id}`, { method: "DELETE", token: owner.token });
        await t.request(`/v1/webhooks/${otherHook.id}`, { method: "DELETE", token: other.token });
      });

      test("list and get show webhooks without their secret", async () => {
        const hook = await subscribe(["agent.updated"]);
        const list = await json<{ items: Created[] }>(
          await t.request("/v1/webhooks", { token: owner.token }),
        );
        expect(list.items.map((h) => h.id)).toContain(hook.id);
        const one = await json<Created>(await t.request(`/v1/webhooks/${hook.id}`, { token: owner.token }));
        expect(one).toMatchObject({ id: hook.id, events: ["agent.updated"] });
        expect(JSON.stringify(list)).not.toContain(hook.secret);
        expect(JSON.stringify(one)).not.toContain(hook.secret);
        const stored = await t.db.database.rows<{ secret_enc: string }>(sql`select secret_enc from webhooks`);
        expect(JSON.stringify(stored)).not.toContain(hook.secret);
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });
    });

    describe("errors", () => {
      for (const [label, body] of [
        ["not a URL", { url: "not a url", events: ["agent.published"] }],
        ["no events", { url: "https://hooks.example.com/x", events: [] }],
        ["unknown event", { url: "https://hooks.example.com/x", events: ["agent.exploded"] }],
        [
          "duplicate events",
          { url: "https://hooks.example.com/x", events: ["agent.updated", "agent.updated"] },
        ],
        ["credentials in the URL", { url: "https://user:pw@hooks.example.com/x", events: ["agent.updated"] }],
        ["unknown field", { url: "https://hooks.example.com/x", events: ["agent.updated"], extra: 1 }],
      ] as const) {
        test(`400 for ${label}`, async () => {
          const res = await t.request("/v1/webhooks", { method: "POST", token: owner.token, json: body });
          expect(res.status).toBe(400);
          expect((await json<{ code: string }>(res)).code).toBe("VALIDATION_FAILED");
        });
      }

      test("a malformed deliveries cursor is a 400; unknown webhooks are 404", async () => {
        const hook = await subscribe(["agent.updated"]);
        expect(
          (await t.request(`/v1/webhooks/${hook.id}/deliveries?cursor=abc`, { token: owner.token })).status,
        ).toBe(400);
        expect(
          (await t.request("/v1/webhooks/00000000-0000-7000-8000-000000000000", { token: owner.token }))
            .status,
        ).toBe(404);
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });
    });

    describe("security", () => {
      test("anonymous callers get 401, read-only clients 403", async () => {
        expect((await t.request("/v1/webhooks")).status).toBe(401);
        const reader = await t.client(["agents:read"]);
        const res = await t.request("/v1/webhooks", {
          method: "POST",
          token: reader.token,
          json: { url: "https://hooks.example.com/x", events: ["agent.updated"] },
        });
        expect(res.status).toBe(403);
      });

      test("another client cannot see, read the log of, or delete someone's webhook", async () => {
        const hook = await subscribe(["agent.updated"]);
        expect((await t.request(`/v1/webhooks/${hook.id}`, { token: other.token })).status).toBe(404);
        expect((await t.request(`/v1/webhooks/${hook.id}/deliveries`, { token: other.token })).status).toBe(
          404,
        );
        expect(
          (await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: other.token })).status,
        ).toBe(404);
        const list = await json<{ items: Created[] }>(
          await t.request("/v1/webhooks", { token: other.token }),
        );
        expect(list.items.map((h) => h.id)).not.toContain(hook.id);
        expect((await t.request(`/v1/webhooks/${hook.id}`, { token: admin.token })).status).toBe(200);
        await t.request(`/v1/webhooks/${hook.id}`, { method: "DELETE", token: owner.token });
      });

      test("without DEBUG: http URLs are refused, and private targets are never contacted", async () => {
        const strict = await createTestApp(backend, { config: { ...hookConfig(), debug: false } });
        try {
          const writer = await strict.client(["agents:write"]);
          const insecure = await strict.request("/v1/webhooks", {
            method: "POST",
            token: writer.token,
            json: { url: receiver.url, events: ["agent.published"] },
          });
          expect(insecure.status).toBe(400);
          const hook = await json<Created>(
            await strict.request("/v1/webhooks", {
              method: "POST",
              token: writer.token,
              json: { url: "https://127.0.0.1:9/hook", events: ["agent.published"] },
            }),
          );
          await strict.request("/v1/agents", {
            method: "POST",
            token: writer.token,
            json: { card: card("Guarded") },
          });
          await strict.app.services.webhooks.deliverDue();
          const [delivery] = (
            await json<{ items: Delivery[] }>(
              await strict.request(`/v1/webhooks/${hook.id}/deliveries`, { token: writer.token }),
            )
          ).items;
          expect(delivery).toMatchObject({ status: "pending", attempts: 1, lastStatusCode: null });
          expect(delivery!.lastError).toMatch(/non-public|not allowed/i);
        } finally {
          await strict.close();
        }
      });
    });
  });

  describe(`webhooks survive a restart [${backend}]`, () => {
    test("a change committed before a restart is delivered after it (at least once)", async () => {
      const receiver = startReceiver();
      const dataDir = backend === "pglite" ? mkdtempSync(join(tmpdir(), "a2a-hooks-")) : undefined;
      const db = await createTestDatabase(backend, { dataDir });
      try {
        const first = await createTestApp(backend, { db, config: hookConfig() });
        const writer = await first.client(["agents:write"]);
        const hook = await json<Created>(
          await first.request("/v1/webhooks", {
            method: "POST",
            token: writer.token,
            json: { url: receiver.url, events: ["agent.published"] },
          }),
        );
        const published = await json<{ id: string }>(
          await first.request("/v1/agents", {
            method: "POST",
            token: writer.token,
            json: { card: card("Restart Agent") },
          }),
        );
        // the registry stops before any delivery was attempted
        await first.close();
        if (backend === "pglite") await db.database.close();

        const reopened = backend === "pglite" ? await createTestDatabase("pglite", { dataDir }) : db;
        const second = await createTestApp(backend, { db: reopened, config: hookConfig() });
        try {
          expect(receiver.received.length).toBe(0);
          await second.app.services.webhooks.deliverDue();
          expect(receiver.received.length).toBe(1);
          const payload = JSON.parse(receiver.received[0]!.body);
          expect(payload.agent.id).toBe(published.id);
          expect(receiver.received[0]!.headers.get("x-a2a-event")).toBe("agent.published");
          const rows = await reopened.database.rows<{ status: string }>(
            sql`select status from webhook_deliveries where webhook_id = ${hook.id}`,
          );
          expect(rows.map((r) => r.status)).toEqual(["delivered"]);
        } finally {
          await second.close();
          if (backend === "pglite") await reopened.drop();
        }
      } finally {
        receiver.stop();
        if (backend === "postgres") await db.drop();
        if (dataDir) rmSync(dataDir, { recursive: true, force: true });
      }
    });
  });
}
