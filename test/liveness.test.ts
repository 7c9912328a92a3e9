import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { type Config, testConfig } from "../src/config";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { freePort } from "./support/redis";

/**
 * Liveness probes, heartbeats, self-preservation and drift against real local agent servers. Rounds
 * are run by the test (`prober.runOnce`), not by timers, so each step is deterministic.
 */

type AgentServer = {
  origin: string;
  /** false: every path answers 503, as a failing agent would. */
  up: boolean;
  /** The card served at /card.json (and at /.well-known/agent-card.json). */
  card: Record<string, unknown>;
  stop(): void;
};

function startAgentServer(name: string): AgentServer {
  const state: AgentServer = {
    origin: "",
    up: true,
    card: {},
    stop: () => server.stop(true),
  };
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(request) {
      if (!state.up) return new Response("unavailable", { status: 503 });
      const path = new URL(request.url).pathname;
      if (path === "/card.json" || path === "/.well-known/agent-card.json") return Response.json(state.card);
      if (path === "/a2a") return new Response("use POST", { status: 405 });
      return new Response("not found", { status: 404 });
    },
  });
  state.origin = `http://127.0.0.1:${server.port}`;
  state.card = cardFor(name, state.origin, "1.0.0");
  return state;
}

function cardFor(name: string, origin: string, version: string, extra: Record<string, unknown> = {}) {
  return {
    protocolVersion: "0.3.0",
    name,
    description: `${name} for liveness tests.`,
    url: `${origin}/a2a`,
    version,
    capabilities: {},
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [{ id: "ping", name: "Ping", description: "Answers", tags: ["liveness"] }],
    ...extra,
  };
}

type Record_ = {
  id: string;
  version: string;
  health: string;
  healthError: string | null;
  checkedAt: string | null;
  drift: { detectedAt: string; reason: string } | null;
};

const probeConfig = (overrides: Partial<Config["probe"]>): Partial<Config> => ({
  debug: true,
  probe: {
    ...testConfig().probe,
    timeoutMs: 1000,
    downAfterSeconds: 0,
    selfPreservationMinProbes: 1000,
    ...overrides,
  },
});

for (const backend of BACKENDS) {
  describe(`liveness [${backend}]`, () => {
    let t: TestApp;
    let owner: { clientId: string; token: string };
    let other: { token: string };
    let server: AgentServer;

    const publish = async (body: unknown, token = owner.token) => {
      const res = await t.request("/v1/agents", { method: "POST", token, json: body });
      if (res.status !== 201) throw new Error(`publish ${res.status}: ${await res.text()}`);
      return json<Record_>(res);
    };
    const read = async (id: string) => json<Record_>(await t.request(`/v1/agents/${id}`));
    const round = () => t.app.services.prober.runOnce({ dueOnly: false });

    beforeAll(async () => {
      server = startAgentServer("Flaky Agent");
      t = await createTestApp(backend, { config: probeConfig({}) });
      [owner, other] = await Promise.all([
        t.client(["agents:write"], "owner"),
        t.client(["agents:write"], "other"),
      ]);
    });
    afterAll(async () => {
      server.stop();
      await t.close();
    });

    describe("happy", () => {
      test("an agent that answers is up; when it fails it goes down with the error; back up when it returns", async () => {
        const agent = await publish({ card: server.card });
        expect(agent.health).toBe("unknown");

        await round();
        const up = await read(agent.id);
        expect(up.health).toBe("up");
        expect(up.checkedAt).not.toBeNull();
        expect((await json<{ total: number }>(await t.request("/v1/search?health=up&q=flaky"))).total).toBe(
          1,
        );

        server.up = false;
        await round();
        const down = await read(agent.id);
        expect(down.health).toBe("down");
        expect(down.healthError).toContain("HTTP 503");
        expect((await json<{ total: number }>(await t.request("/v1/search?health=up&q=flaky"))).total).toBe(
          0,
        );
        const listed = await json<{ items: { id: string }[] }>(await t.request("/v1/agents?health=down"));
        expect(listed.items.map((i) => i.id)).toContain(agent.id);

        server.up = true;
        await round();
        const back = await read(agent.id);
        expect(back.health).toBe("up");
        expect(back.healthError).toBeNull();

        const metrics = await (await t.request("/metrics")).text();
        expect(metrics).toMatch(/a2a_registry_probes_total\{result="failed"\} [1-9]/);
        expect(metrics).toMatch(/a2a_registry_health_transitions_total\{to="down"\} [1-9]/);
        expect(metrics).toMatch(/a2a_registry_health_transitions_total\{to="up"\} [2-9]/);
        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: owner.token });
      });

      test("an unreachable host (connection refused) is down too", async () => {
        const agent = await publish({
          card: cardFor("Gone Agent", `http://127.0.0.1:${freePort()}`, "1.0.0"),
        });
        await round();
        const down = await read(agent.id);
        expect(down.health).toBe("down");
        expect(down.healthError).toMatch(/agent card endpoint: .*; interface: /);
        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: owner.token });
      });

      test("a heartbeat keeps an agent up without probes until its TTL runs out", async () => {
        const agent = await publish({
          card: cardFor("Heartbeat Agent", `http://127.0.0.1:${freePort()}`, "1.0.0"),
        });
        const beat = await t.request(`/v1/agents/${agent.id}/heartbeat`, {
          method: "POST",
          token: owner.token,
        });
        expect(beat.status).toBe(204);
        expect((await read(agent.id)).health).toBe("up");
        await round(); // the host is unreachable, but the heartbeat stands
        expect((await read(agent.id)).health).toBe("up");

        await t.db.database.rows(
          sql`update agents set heartbeat_expires_at = now() - interval '1 second' where id = ${agent.id}`,
        );
        await round();
        const expired = await read(agent.id);
        expect(expired.health).toBe("down");
        expect(expired.healthError).toContain("no heartbeat");
        expect(
          (await t.request(`/v1/agents/${agent.id}/heartbeat`, { method: "POST", token: owner.token }))
            .status,
        ).toBe(204);
        expect((await read(agent.id)).health).toBe("up");
        await t.request(`/v1/agents/${agent.id}`, { method: "DELETE", token: owner.token });
      });

      test("a card published by URL that changes validly becomes a new version on the probe schedule", async () => {
        const host = startAgentServer("Drifting Agent");
        try {
          const agent = await publish({ cardUrl: `${host.origin}/card.json` });
          host.card = { ...host.card, version: "1.1.0", description: "Now with more skills." };
          await round();
          const updated = await read(agent.id);
          expect(updated.version).toBe("1.1.0");
          expect(updated.drift).toBeNull();
          const versions = await json<{ items: { version: string }[] }>(
            await t.request(`/v1/agents/${agent.id}/versions`),
          );
          expect(versions.items.map((v) => v.version)).toEqual(["1.1.0", "1.0.0"]);
          const audit = await t.db.database.rows<{ actor: string }>(
            sql`select actor from audit_log where target = ${agent.id} and action = 'agent.updated'`,
          );
          expect(audit.map((a) => a.actor)).toEqual(["system:drift"]);
        } finally {
          host.stop();
        }
      });

      test("drift that cannot become a version is recorded, the stored card untouched; refresh shows the diff", async () => {
        const host = startAgentServer("Broken Drift Agent");
        try {
          const agent = await publish({ cardUrl: `${host.origin}/card.json` });
          const storedCard = await (await t.request(`/v1/agents/${agent.id}/card`)).text();

          host.card = { ...host.card, version: "2.0.0", skills: "not a list" };
          await round();
          const drifted = await read(agent.id);
          expect(drifted.version).toBe("1.0.0");
          expect(drifted.drift?.reason).toContain("no longer validates");
          expect(await (await t.request(`/v1/agents/${agent.id}/card`)).text()).toBe(storedCard);

          // same version, different content: refused as drift too
          host.card = {
            ...cardFor("Broken Drift Agent", host.origin, "1.0.0"),
            description: "Silently changed.",
          };
          const refresh = await t.request(`/v1/agents/${agent.id}/refresh`, {
            method: "POST",
            token: owner.token,
          });
          expect(refresh.status).toBe(200);
          const diff = await json<{
            outcome: string;
            changes: { changed: string[] };
            drift: { reason: string };
            agent: Record_;
          }>(refresh);
          expect(diff.outcome).toBe("drift");
          expect(diff.changes.changed).toEqual(["description"]);
          expect(diff.drift.reason).toContain("kept version 1.0.0");
          expect(diff.agent.drift?.reason).toContain("kept version 1.0.0");

          // a proper new version clears the drift
          host.card = {
            ...cardFor("Broken Drift Agent", host.origin, "1.2.0"),
            skills: [
              { id: "ping", name: "Ping", description: "Answers", tags: ["liveness"] },
              { id: "pong", name: "Pong", description: "Answers back", tags: ["liveness"] },
            ],
          };
          const fixed = await json<{
            outcome: string;
            version: string;
            skills: { added: string[] };
            agent: Record_;
          }>(await t.request(`/v1/agents/${agent.id}/refresh`, { method: "POST", token: owner.token }));
          expect(fixed).toMatchObject({ outcome: "updated", version: "1.2.0", skills: { added: ["pong"] } });
          expect(fixed.agent.drift).toBeNull();
          expect(fixed.agent.version).toBe("1.2.0");

          const unchanged = await json<{ outcome: string }>(
            await t.request(`/v1/agents/${agent.id}/refresh`, { method: "POST", token: owner.token }),
          );
          expect(unchanged.outcome).toBe("unchanged");
        } finally {
          host.stop();
        }
      });
    });

    describe("errors", () => {
      test("refresh of an agent published inline is a 400 that says why", async () => {
        const agent = await publish({ card: cardFor("Inline Agent", "https://inline.example.com", "1.0.0") });
        const res = await t.request(`/v1/agents/${agent.id}/refresh`, { method: "POST", token: owner.token });
        expect(res.status).toBe(400);
        expect((await json<{ detail: string }>(res)).detail).toContain("no cardUrl");
      });

      test("refresh when the card URL fails is a 422 and changes nothing", async () => {
        const host = startAgentServer("Vanishing Agent");
        const agent = await publish({ cardUrl: `${host.origin}/card.json` });
        host.stop();
        const res = await t.request(`/v1/agents/${agent.id}/refresh`, { method: "POST", token: owner.token });
        expect(res.status).toBe(422);
        expect((await read(agent.id)).version).toBe("1.0.0");
      });

      test("heartbeat and refresh of unknown agents are 404", async () => {
        for (const action of ["heartbeat", "refresh"]) {
          const res = await t.request(`/v1/agents/00000000-0000-7000-8000-000000000000/${action}`, {
            method: "POST",
            token: owner.token,
          });
          expect(res.status).toBe(404);
        }
      });
    });

    describe("security", () => {
      test("only the owner (or an admin) may heartbeat or refresh; anonymous callers get 401", async () => {
        const agent = await publish({ card: cardFor("Owned Agent", "https://owned.example.com", "1.0.0") });
        for (const action of ["heartbeat", "refresh"]) {
          const path = `/v1/agents/${agent.id}/${action}`;
          expect((await t.request(path, { method: "POST", token: other.token })).status).toBe(403);
          expect((await t.request(path, { method: "POST" })).status).toBe(401);
        }
        const reader = await t.client(["agents:read"]);
        expect(
          (await t.request(`/v1/agents/${agent.id}/heartbeat`, { method: "POST", token: reader.token }))
            .status,
        ).toBe(403);
      });

      test("probes go through the SSRF guard: without DEBUG a loopback agent is never contacted", async () => {
        let contacted = 0;
        const guarded = Bun.serve({
          port: 0,
          hostname: "127.0.0.1",
          fetch() {
            contacted++;
            return new Response("ok");
          },
        });
        const strict = await createTestApp(backend, { config: { ...probeConfig({}), debug: false } });
        try {
          const writer = await strict.client(["agents:write"]);
          const res = await strict.request("/v1/agents", {
            method: "POST",
            token: writer.token,
            json: { card: cardFor("Loopback Agent", `http://127.0.0.1:${guarded.port}`, "1.0.0") },
          });
          const agent = await json<Record_>(res);
          await strict.app.services.prober.runOnce({ dueOnly: false });
          expect(contacted).toBe(0);
          const record = await json<Record_>(await strict.request(`/v1/agents/${agent.id}`));
          expect(record.health).toBe("down");
          expect(record.healthError).toMatch(/not allowed|refused|scheme/i);
        } finally {
          guarded.stop(true);
          await strict.close();
        }
      });
    });
  });

  describe(`self-preservation and thresholds [${backend}]`, () => {
    test("when most probes fail at once nothing is marked down; it resumes when probes succeed", async () => {
      const hosts = Array.from({ length: 4 }, (_, i) => startAgentServer(`Preserved ${i}`));
      const t = await createTestApp(backend, {
        config: probeConfig({ selfPreservationMinProbes: 4, selfPreservationPercent: 70 }),
      });
      try {
        const writer = await t.client(["agents:write"]);
        const ids: string[] = [];
        for (const host of hosts) {
          const res = await t.request("/v1/agents", {
            method: "POST",
            token: writer.token,
            json: { card: host.card },
          });
          ids.push((await json<Record_>(res)).id);
        }
        const health = async () =>
          Promise.all(
            ids.map(async (id) => (await json<Record_>(await t.request(`/v1/agents/${id}`))).health),
          );
        await t.app.services.prober.runOnce({ dueOnly: false });
        expect(await health()).toEqual(["up", "up", "up", "up"]);

        for (const host of hosts) host.up = false; // the prober's "network" fails: every probe fails
        const report = await t.app.services.prober.runOnce({ dueOnly: false });
        expect(report.selfPreservation).toBe(true);
        expect(report.markedDown).toBe(0);
        expect(await health()).toEqual(["up", "up", "up", "up"]);
        expect(await (await t.request("/metrics")).text()).toContain(
          "a2a_registry_prober_self_preservation 1",
        );

        hosts[0]!.up = true;
        hosts[1]!.up = true;
        hosts[2]!.up = true; // one of four failing: a real outage of that agent
        const after = await t.app.services.prober.runOnce({ dueOnly: false });
        expect(after.selfPreservation).toBe(false);
        expect(await health()).toEqual(["up", "up", "up", "down"]);
        expect(await (await t.request("/metrics")).text()).toContain(
          "a2a_registry_prober_self_preservation 0",
        );
      } finally {
        for (const host of hosts) host.stop();
        await t.close();
      }
    });

    test("an agent is declared down only after failing for HEALTH_DOWN_AFTER_SECONDS", async () => {
      const host = startAgentServer("Patient Agent");
      const t = await createTestApp(backend, { config: probeConfig({ downAfterSeconds: 3600 }) });
      try {
        const writer = await t.client(["agents:write"]);
        const agent = await json<Record_>(
          await t.request("/v1/agents", { method: "POST", token: writer.token, json: { card: host.card } }),
        );
        await t.app.services.prober.runOnce({ dueOnly: false });
        host.up = false;
        await t.app.services.prober.runOnce({ dueOnly: false });
        expect((await json<Record_>(await t.request(`/v1/agents/${agent.id}`))).health).toBe("up");
        // an hour of failures later
        await t.db.database.rows(
          sql`update agents set failing_since = now() - interval '2 hours' where id = ${agent.id}`,
        );
        await t.app.services.prober.runOnce({ dueOnly: false });
        expect((await json<Record_>(await t.request(`/v1/agents/${agent.id}`))).health).toBe("down");
      } finally {
        host.stop();
        await t.close();
      }
    });

    test("the schedule spreads probes: a probed agent is not due again within the interval", async () => {
      const host = startAgentServer("Scheduled Agent");
      const t = await createTestApp(backend, { config: probeConfig({ intervalSeconds: 300 }) });
      try {
        const writer = await t.client(["agents:write"]);
        await t.request("/v1/agents", { method: "POST", token: writer.token, json: { card: host.card } });
        expect((await t.app.services.prober.runOnce()).probed).toBe(1);
        expect((await t.app.services.prober.runOnce()).probed).toBe(0);
        const [row] = await t.db.database.rows<{ secs: number }>(
          sql`select extract(epoch from next_probe_at - now())::float8 as secs from agents`,
        );
        expect(row!.secs).toBeGreaterThan(300 * 0.8 - 5);
        expect(row!.secs).toBeLessThan(300 * 1.2 + 5);
      } finally {
        host.stop();
        await t.close();
      }
    });
  });
}
