/**
 * Federation between real registry processes (`bun src/index.ts`, embedded PGlite each, loopback
 * ports, FEDERATION_INTERVAL_SECONDS=1): propagation, chains and cycles, private agents, crashes,
 * expired cursors and broken peers.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  addPeer,
  allAgents,
  cardFor,
  cleanupAll,
  copiesFrom,
  createClient,
  freshDataDir,
  jsonOf,
  type PeerRecord,
  peerOf,
  publish,
  type Registry,
  startRegistry,
  until,
} from "./support/federation";
import { seedAgents } from "./support/federation-seed";

const SEEDED = 1200;

let A: Registry;
let B: Registry;
let C: Registry; // pulls from B (chain), from A (private agents) and from A2 (crash test)
let A2: Registry; // seeded, for the crash test
let A3: Registry; // keeps tombstones for 0 hours, for the horizon test

/** An access token on `registry` for a client's credentials. */
async function tokenFor(registry: Registry, client: { clientId: string; clientSecret: string }) {
  const res = await fetch(`${registry.base}/oauth/token`, {
    method: "POST",
    headers: { authorization: `Basic ${btoa(`${client.clientId}:${client.clientSecret}`)}` },
    body: new URLSearchParams({ grant_type: "client_credentials" }),
  });
  return ((await res.json()) as { access_token: string }).access_token;
}

/** Live local agents of `registry`, as origin id -> version. */
async function localVersions(registry: Registry) {
  const all = await allAgents(registry);
  return new Map(all.filter((a) => !a.source.federated).map((a) => [a.id, a.version]));
}

beforeAll(async () => {
  const started = Date.now();
  const seededDir = await freshDataDir();
  const copied = Date.now();
  await seedAgents({ dataDir: seededDir }, SEEDED, "Seeded");
  const seeded = Date.now();
  [A, B, C, A2, A3] = await Promise.all([
    startRegistry({ registryId: "reg-a" }),
    startRegistry({ registryId: "reg-b", env: { FEDERATION_REQUEST_TIMEOUT_MS: "3000" } }),
    startRegistry({ registryId: "reg-c", env: { FEDERATION_PAGE_SIZE: "20" } }),
    startRegistry({ registryId: "reg-a2", dataDir: seededDir }),
    startRegistry({ registryId: "reg-a3", env: { FEDERATION_TOMBSTONE_RETENTION_HOURS: "0" } }),
  ]);
  console.log(
    `setup: template ${copied - started} ms, seed ${seeded - copied} ms, 5 registries ${Date.now() - seeded} ms`,
  );
}, 240_000);

afterAll(async () => {
  await cleanupAll();
});

describe("federation between registry processes", () => {
  test("A -> B: publish, update, deprecate and delete on A reach B's read-only copies", async () => {
    const a1 = await publish(A, cardFor("Alpha"));
    const a2 = await publish(A, cardFor("Bravo"));
    const { peer } = await addPeer(B, A);
    await until("B to copy A's two agents", async () => (await copiesFrom(B, "reg-a")).length === 2);
    const copies = await copiesFrom(B, "reg-a");
    expect(copies.map((c) => c.source.originId).sort()).toEqual([a1.id, a2.id].sort());
    expect(copies.every((c) => c.source.federated && c.source.registry === "reg-a")).toBe(true);

    await A.request(`/v1/agents/${a1.id}`, {
      method: "PUT",
      json: { card: { ...a1.card, version: "2.0.0", description: "Now with hail" } },
    });
    await A.request(`/v1/agents/${a2.id}`, { method: "PATCH", json: { status: "deprecated" } });
    const a3 = await publish(A, cardFor("Charlie"));
    await until("updates to reach B", async () => {
      const held = await copiesFrom(B, "reg-a");
      const byOrigin = new Map(held.map((c) => [c.source.originId, c]));
      return (
        held.length === 3 &&
        byOrigin.get(a1.id)?.version === "2.0.0" &&
        byOrigin.get(a2.id)?.status === "deprecated" &&
        byOrigin.has(a3.id)
      );
    });
    await A.request(`/v1/agents/${a2.id}`, { method: "DELETE" });
    await until("the delete to reach B", async () => {
      const held = await copiesFrom(B, "reg-a");
      return held.length === 2 && !held.some((c) => c.source.originId === a2.id);
    });

    // Copies are read-only on B, with a message saying where to change them.
    const copy = (await copiesFrom(B, "reg-a")).find((c) => c.source.originId === a1.id)!;
    const put = await B.request(`/v1/agents/${copy.id}`, { method: "PUT", json: { card: cardFor("Nope") } });
    expect(put.status).toBe(403);
    expect(((await jsonOf(put)) as { detail: string }).detail).toContain("federated copy");

    const status = await peerOf(B, peer.id);
    expect(status).toMatchObject({ lastStatus: "success", lastError: null, agentsSynced: 2, lagChanges: 0 });
    const ready = await jsonOf<{ checks: { federationWorker: { status: string } } }>(
      await fetch(`${B.base}/health/ready`),
    );
    expect(ready.checks.federationWorker.status).toBe("ok");
    const metrics = await (await fetch(`${B.base}/metrics`)).text();
    expect(metrics).toMatch(/a2a_registry_peer_syncs_total\{peer="reg-a",status="success"\} [1-9]/);
    expect(metrics).toMatch(/a2a_registry_peer_sync_lag_seconds\{peer="reg-a"\}/);
  }, 60_000);

  test("chain A -> B -> C and the cycle A <-> B: only origins export, nothing loops or multiplies", async () => {
    const b1 = await publish(B, cardFor("Bee local"));
    await addPeer(C, B);
    await addPeer(A, B); // A <-> B is now a cycle
    const aLocal = await localVersions(A);
    const bLocal = await localVersions(B);
    await until("C to copy B's own agent", async () => (await copiesFrom(C, "reg-b")).length === bLocal.size);
    await until("A to copy B's own agent", async () => (await copiesFrom(A, "reg-b")).length === bLocal.size);
    // Let several intervals pass: a loop would show up as copies of copies.
    await Bun.sleep(3000);
    const onC = (await allAgents(C)).filter((a) => a.source.federated);
    expect(onC.map((c) => c.source.originId).sort()).toEqual([...bLocal.keys()].sort());
    expect(onC.every((c) => c.source.registry === "reg-b")).toBe(true);
    expect(onC.some((c) => c.source.originId === b1.id)).toBe(true);
    const onA = (await allAgents(A)).filter((a) => a.source.federated);
    expect(onA.every((c) => c.source.registry === "reg-b")).toBe(true);
    expect(onA.map((c) => c.source.originId).sort()).toEqual([...bLocal.keys()].sort());
    const onB = (await allAgents(B)).filter((a) => a.source.federated);
    expect(
      onB
        .filter((c) => c.source.registry === "reg-a")
        .map((c) => c.source.originId)
        .sort(),
    ).toEqual([...aLocal.keys()].sort());
    expect(onB.some((c) => c.source.registry === "reg-b")).toBe(false);
    // A's new agent reaches B, and still not C.
    const a4 = await publish(A, cardFor("Delta"));
    await until("B to copy A's new agent", async () =>
      (await copiesFrom(B, "reg-a")).some((c) => c.source.originId === a4.id),
    );
    await Bun.sleep(1500);
    expect((await allAgents(C)).some((c) => c.source.originId === a4.id)).toBe(false);
  }, 60_000);

  test("a private agent on A reaches B only while B's peer client is entitled to it", async () => {
    const puller = await createClient(A, ["agents:read"], "C private puller");
    const { peer } = await addPeer(C, A, { client: puller, name: "A for C" });
    await until("C to sync A", async () => (await peerOf(C, peer.id)).lastStatus === "success");
    const secret = await publish(A, cardFor("Secret"), { visibility: "private" });
    const pullerToken = await tokenFor(A, puller);
    await Bun.sleep(2500);
    expect((await copiesFrom(C, "reg-a")).some((c) => c.source.originId === secret.id)).toBe(false);
    const feedText = await (
      await fetch(`${A.base}/v1/changes?since=0&limit=1000`, {
        headers: { authorization: `Bearer ${pullerToken}` },
      })
    ).text();
    expect(feedText).not.toContain(secret.id);

    await A.request(`/v1/agents/${secret.id}/entitlements/${puller.clientId}`, { method: "PUT" });
    const copy = await until("the entitled private agent to reach C", async () =>
      (await copiesFrom(C, "reg-a")).find((c) => c.source.originId === secret.id),
    );
    expect(copy.visibility).toBe("private");
    // Still private on C: its admins see the copy, anonymous callers do not.
    expect((await C.request(`/v1/agents/${copy.id}`, { token: null })).status).toBe(404);
    expect((await C.request(`/v1/agents/${copy.id}`)).status).toBe(200);

    await A.request(`/v1/agents/${secret.id}/entitlements/${puller.clientId}`, { method: "DELETE" });
    await until("the revocation to remove the copy", async () =>
      (await copiesFrom(C, "reg-a")).every((c) => c.source.originId !== secret.id),
    );
    await C.request(`/v1/peers/${peer.id}`, { method: "DELETE" });
  }, 60_000);

  test("B stopped and killed mid-sync, restarted: every change arrives once, none twice, none lost", async () => {
    const { peer } = await addPeer(C, A2);
    const synced = async () => (await peerOf(C, peer.id)).agentsSynced;
    // Graceful stop while pages are being applied: exits 0 between pages.
    await until("C to be partway through", async () => (await synced()) >= 200, 30_000);
    expect(await synced()).toBeLessThan(SEEDED);
    expect(await C.stop()).toBe(0);

    // Changes on A2 while C is down: deletions, new versions, new agents.
    const before = [...(await localVersions(A2)).keys()];
    for (const id of before.slice(0, 3)) await A2.request(`/v1/agents/${id}`, { method: "DELETE" });
    for (const id of before.slice(10, 12)) {
      const record = await jsonOf<{ card: Record<string, unknown> }>(await A2.request(`/v1/agents/${id}`));
      await A2.request(`/v1/agents/${id}`, {
        method: "PUT",
        json: { card: { ...record.card, version: "7.0.0" } },
      });
    }
    await publish(A2, cardFor("Late one"));
    await publish(A2, cardFor("Late two"));

    await C.restart();
    const history = await jsonOf<{ items: Array<{ status: string }> }>(
      await C.request(`/v1/peers/${peer.id}/syncs?limit=500`),
    );
    expect(history.items.some((run) => run.status === "aborted")).toBe(true);
    // Only the restarted process's own run may be in progress: the stopped one's is closed.
    expect(history.items.filter((run) => run.status === "running").length).toBeLessThanOrEqual(1);

    // Killed outright further on: the page in flight is lost whole, never half.
    const resumed = await synced();
    await until("C to make more progress", async () => (await synced()) >= resumed + 200, 30_000);
    expect(await synced()).toBeLessThan(SEEDED);
    await C.kill();
    await C.restart();

    const expected = await localVersions(A2);
    await until(
      "C to converge on A2",
      async () => {
        const status = await peerOf(C, peer.id);
        return (
          status.lastStatus === "success" && status.lagChanges === 0 && status.agentsSynced === expected.size
        );
      },
      60_000,
    );
    const held = await copiesFrom(C, "reg-a2");
    expect(new Set(held.map((c) => c.id)).size).toBe(held.length);
    expect(held.length).toBe(expected.size);
    const heldVersions = new Map(held.map((c) => [c.source.originId, c.version]));
    expect(heldVersions).toEqual(expected);
    expect([...heldVersions.values()].filter((v) => v === "7.0.0")).toHaveLength(2);
  }, 240_000);

  test("A's feed horizon passed: B's cursor expires, B re-reads the feed and converges", async () => {
    const x = await publish(A3, cardFor("Xray"));
    const y = await publish(A3, cardFor("Yankee"));
    const puller = await createClient(A3, ["agents:read"], "B horizon puller");
    const { peer } = await addPeer(B, A3, { client: puller });
    await until("B to copy A3", async () => (await copiesFrom(B, "reg-a3")).length === 2);
    const paused = await B.request(`/v1/peers/${peer.id}`, { method: "PATCH", json: { enabled: false } });
    expect(paused.status).toBe(200);
    const cursor = (await peerOf(B, peer.id)).lastSeq;

    await A3.request(`/v1/agents/${x.id}`, { method: "DELETE" });
    const z = await publish(A3, cardFor("Zulu"));
    // A3 keeps tombstones 0 hours: its next maintenance pass purges X's and B's cursor is then too old.
    const token = await tokenFor(A3, puller);
    await until("A3 to purge the tombstone", async () => {
      const res = await fetch(`${A3.base}/v1/changes?since=${cursor}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      return res.status === 410;
    });

    await B.request(`/v1/peers/${peer.id}`, { method: "PATCH", json: { enabled: true } });
    await until("B to re-snapshot A3", async () => {
      const held = (await copiesFrom(B, "reg-a3")).map((c) => c.source.originId).sort();
      return JSON.stringify(held) === JSON.stringify([y.id, z.id].sort());
    });
    // The peer syncs every second: the next run may already be under way ("running"), so wait for a
    // run to have ended rather than read the status once.
    const status = await until("B's peer status after a finished run", async () => {
      const current = await peerOf(B, peer.id);
      return current.lastStatus !== "running" && current;
    });
    expect(status).toMatchObject({ lastStatus: "success", agentsSynced: 2 });
    const runs = await jsonOf<{ items: Array<{ status: string; removed: number; fromSeq: number }> }>(
      await B.request(`/v1/peers/${peer.id}/syncs`),
    );
    expect(runs.items.some((run) => run.status === "success" && run.removed >= 1)).toBe(true);
  }, 60_000);

  test("peers answering garbage, 500s or nothing are marked failed and backed off; A keeps syncing", async () => {
    type Mode = "ok" | "garbage" | "error" | "hang";
    const fakes = (["garbage", "error", "hang"] as const).map((failure) => {
      const state = { mode: "ok" as Mode, calls: [] as number[] };
      const server = Bun.serve({
        port: 0,
        hostname: "127.0.0.1",
        idleTimeout: 30,
        async fetch(req) {
          const path = new URL(req.url).pathname;
          if (path === "/oauth/token")
            return Response.json({
              access_token: "t",
              token_type: "Bearer",
              expires_in: 600,
              scope: "agents:read",
            });
          if (path === "/.well-known/agent-card.json") return Response.json({ name: `Broken ${failure}` });
          if (path !== "/v1/changes") return new Response("", { status: 404 });
          if (state.mode === "ok") return Response.json({ changes: [], nextSince: 0, hasMore: false });
          state.calls.push(Date.now());
          if (state.mode === "garbage") return new Response("<html>not a feed</html>");
          if (state.mode === "error") return new Response("boom", { status: 500 });
          await Bun.sleep(15_000);
          return Response.json({ changes: [], nextSince: 0, hasMore: false });
        },
      });
      return { failure, state, server, url: `http://127.0.0.1:${server.port}` };
    });
    try {
      const peers: Array<{ failure: string; peer: PeerRecord; calls: number[] }> = [];
      for (const fake of fakes) {
        const res = await B.request("/v1/peers", {
          method: "POST",
          json: { name: `broken-${fake.failure}`, baseUrl: fake.url, clientId: "x", clientSecret: "y" },
        });
        expect(res.status).toBe(201);
        peers.push({ failure: fake.failure, peer: await jsonOf<PeerRecord>(res), calls: fake.state.calls });
      }
      for (const fake of fakes) fake.state.mode = fake.failure;
      const started = Date.now();
      // Meanwhile A keeps reaching B.
      const fresh = await publish(A, cardFor("Echo"));
      await until("A's new agent to reach B despite the broken peers", async () =>
        (await copiesFrom(B, "reg-a")).some((c) => c.source.originId === fresh.id),
      );
      await Bun.sleep(Math.max(0, 10_000 - (Date.now() - started)));

      const expectedError = { garbage: /malformed feed page/, error: /HTTP 500/, hang: /timed out/ };
      for (const { failure, peer, calls } of peers) {
        // Between two attempts (a run may be in progress when we look).
        const status = await until(`broken-${failure} to be marked failed`, async () => {
          const current = await peerOf(B, peer.id);
          return current.lastStatus === "failed" ? current : undefined;
        });
        expect(status.lastError).toMatch(expectedError[failure as keyof typeof expectedError]);
        expect(status.consecutiveFailures).toBeGreaterThanOrEqual(2);
        // Backoff: a 1 s interval would have meant ~10 attempts; the gaps grow instead.
        expect(calls.length).toBeGreaterThanOrEqual(2);
        expect(calls.length).toBeLessThanOrEqual(6);
        // (No assertion on the wall-clock gaps themselves: each attempt's own duration varies with the
        // machine's load, so comparing gaps is a timing assertion; the attempt count above is not.)
      }
      const metrics = await (await fetch(`${B.base}/metrics`)).text();
      expect(metrics).toMatch(/a2a_registry_peer_syncs_total\{peer="broken-error",status="failed"\} [2-9]/);
    } finally {
      for (const fake of fakes) fake.server.stop(true);
    }
  }, 60_000);
});
