/**
 * Access control (issue 8, part 4): every route x every kind of caller x (where the route takes an
 * agent) a public, a private and a missing agent, each cell with its expected status, checked.
 *
 * And nothing about a private agent reaches anyone who may not see it: not its id (unless the caller
 * sent it), name, url, skills, tags or provider, in any body or header of any cell; an agent that is
 * private answers byte for byte like one that does not exist; and every list, total, facet, count,
 * feed, ETag and well-known document answers a caller who may not see the private agents exactly as it
 * did before they existed (the change feed's shared seq clock aside: see src/modules/federation/feed.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BACKENDS } from "./support/db";
import { recordFigures } from "./support/figures";
import { BAD, CALLERS, type CallerKind, createWorld, PRIVATE_MARK, type World } from "./support/matrix";

type Target = "public" | "private" | "missing";
type Built = {
  path: string;
  init?: RequestInit & { json?: unknown };
  caller?: CallerKind;
  raw?: () => Promise<Response>;
};
type Row = {
  route: string;
  targets?: Target[];
  build: (cell: {
    caller: CallerKind;
    target: Target;
    id: string;
    card: Record<string, unknown>;
    fresh: boolean;
  }) => Promise<Built>;
  expect: (caller: CallerKind, target: Target) => number;
  /** Needs a fresh target per cell when the expected status is a success (the cell changes it). */
  mutates?: boolean;
};

const SEES_PRIVATE: ReadonlySet<CallerKind> = new Set(["owner", "entitled", "admin"]);
const JSON_ACCEPT = { accept: "application/json" };

/** Unguarded routes (health, metrics, own card): the same answer for every caller, bad tokens included. */
const always = (status: number) => () => status;
/** Guarded and open to anonymous callers. */
const open = (status: number) => (c: CallerKind) => (BAD.has(c) ? 401 : status);
/** Needs a scope: 401 without a (valid) token, 403 without the scope. */
const scoped = (scope: "agents:read" | "agents:write" | "admin", status: number) => (c: CallerKind) => {
  if (c === "anonymous" || BAD.has(c)) return 401;
  const has =
    c === "admin" ||
    (scope === "agents:read" ? true : scope === "agents:write" ? c === "owner" || c === "other" : false);
  return has ? status : 403;
};
/** Reading an agent: a private one exists only for its owner, entitled clients and admins. */
const readAgent = (status: number) => (c: CallerKind, target: Target) => {
  if (BAD.has(c)) return 401;
  if (target === "missing") return 404;
  if (target === "private" && !SEES_PRIVATE.has(c)) return 404;
  return status;
};
/** Changing an agent (owner or admin): 403 for a visible agent of someone else, 404 for an invisible one. */
const writeAgent = (status: number) => (c: CallerKind, target: Target) => {
  const scope = scoped("agents:write", status)(c);
  if (scope !== status) return scope;
  if (target === "missing") return 404;
  if (c === "other") return target === "public" ? 403 : 404;
  return status;
};
const AGENT_TARGETS: Target[] = ["public", "private", "missing"];

for (const backend of BACKENDS) {
  describe(`access-control matrix [${backend}]`, () => {
    let w: World;
    let stable: Record<Target, { id: string; version: string; card: Record<string, unknown> }>;
    let webhookId: string;
    let peerId: string;
    let asset: string;
    const before = new Map<string, string>();

    /** What a caller who may not see the private agents is told, with what varies per request masked. */
    const normalized = async (res: Response, id?: string) => {
      const headers = [...res.headers]
        .filter(
          ([name]) =>
            !["x-request-id", "ratelimit-remaining", "ratelimit-reset", "date", "content-length"].includes(
              name,
            ),
        )
        .sort()
        .map(([name, value]) => `${name}: ${value}`)
        .join("\n");
      let text = (await res.text())
        .replace(/"requestId":"[^"]*"/g, '"requestId":"-"')
        .replace(/"generatedAt":"[^"]*"/g, '"generatedAt":"-"')
        .replace(/"nextSince":\d+/g, '"nextSince":"-"');
      if (id) text = text.replaceAll(id, "<ID>");
      return `${res.status}\n${headers}\n\n${text}`;
    };

    /** Read-only routes with no target: snapshot for callers who see no private agent. */
    const aggregateReads = () => [
      "/v1/agents",
      "/v1/agents?limit=100",
      "/v1/search",
      "/v1/search?q=matrix",
      "/v1/search?q=agent&limit=100",
      `/v1/search?tag=matrix-public`,
      `/v1/search?q=${PRIVATE_MARK}`,
      `/v1/agents?skill=skill-${PRIVATE_MARK}-1`,
      "/v1/stats",
      "/v1/stats?days=7",
      "/v1/changes",
      "/v1/changes?since=0&limit=1000",
      "/.well-known/agents/index.json",
      "/.well-known/ai-catalog.json",
      "/agents/public",
      "/",
    ];
    const BLIND: CallerKind[] = ["anonymous", "reader", "other"];

    beforeAll(async () => {
      w = await createWorld(backend);
      const pub = await w.agent("public");
      stable = {
        public: { id: pub.id, version: pub.version, card: pub.card },
        private: { id: "", version: "", card: pub.card },
        missing: { id: Bun.randomUUIDv7(), version: pub.version, card: pub.card },
      };
      webhookId = await w.webhook();
      peerId = await w.peer();
      const html = await (await w.request("/", "anonymous")).text();
      asset = /\/assets\/([A-Za-z0-9_.-]+)/.exec(html)?.[1] ?? "missing.js";
      // The world as it is without private agents, as seen by those who will never see them.
      for (const caller of BLIND)
        for (const path of aggregateReads())
          before.set(
            `${caller} ${path}`,
            await normalized(await w.request(path, caller, { headers: JSON_ACCEPT })),
          );
      for (const caller of BLIND)
        before.set(
          `${caller} compat-search`,
          await normalized(
            await w.request("/agents/search", caller, { method: "POST", json: { q: "agent", top: 100 } }),
          ),
        );
      // Now the private ones: entitled, updated, deprecated, deleted (a tombstone), never entitled.
      const priv = await w.agent("private", { entitle: true });
      stable.private = { id: priv.id, version: priv.version, card: priv.card };
      const updated = await w.agent("private", { entitle: true });
      await w.request(`/v1/agents/${updated.id}`, "owner", {
        method: "PATCH",
        json: { statusMessage: `changed ${PRIVATE_MARK}` },
      });
      const deprecated = await w.agent("private");
      await w.request(`/v1/agents/${deprecated.id}`, "owner", {
        method: "PATCH",
        json: { status: "deprecated" },
      });
      const gone = await w.agent("private");
      expect((await w.request(`/v1/agents/${gone.id}`, "owner", { method: "DELETE" })).status).toBe(204);
      const revokedEntitlement = await w.agent("private", { entitle: true });
      await w.request(
        `/v1/agents/${revokedEntitlement.id}/entitlements/${w.clients.entitled.clientId}`,
        "owner",
        { method: "DELETE" },
      );
      const withdrawn = w.privates.find((p) => p.id === revokedEntitlement.id)!;
      withdrawn.seenBy.delete("entitled");
      withdrawn.knewId.add("entitled");
      // Warm the caches with what may see them, so the fast read path is tested too.
      for (const p of w.privates) await w.request(`/v1/agents/${p.id}`, "owner");
    }, 180_000);
    afterAll(async () => {
      await w?.t.close();
    });

    const rows = (): Row[] => {
      const agentPath =
        (suffix = "") =>
        async ({ id }: { id: string }) => ({ path: `/v1/agents/${id}${suffix}` });
      return [
        { route: "GET /health", build: async () => ({ path: "/health" }), expect: always(200) },
        { route: "GET /health/ready", build: async () => ({ path: "/health/ready" }), expect: always(200) },
        { route: "GET /metrics", build: async () => ({ path: "/metrics" }), expect: always(200) },
        {
          route: "GET /.well-known/agent-card.json",
          build: async () => ({ path: "/.well-known/agent-card.json" }),
          expect: always(200),
        },
        {
          route: "GET /.well-known/agent.json",
          build: async () => ({ path: "/.well-known/agent.json" }),
          expect: always(200),
        },
        {
          route: "POST /oauth/token",
          build: async ({ caller }) => {
            const creds = w.credentials[caller];
            const headers = new Headers({ "content-type": "application/x-www-form-urlencoded" });
            if (creds)
              headers.set(
                "authorization",
                `Basic ${Buffer.from(`${creds.clientId}:${creds.clientSecret}`).toString("base64")}`,
              );
            else if (w.tokens[caller]) headers.set("authorization", `Bearer ${w.tokens[caller]}`);
            return {
              path: "/oauth/token",
              raw: () =>
                w.send("/oauth/token", { method: "POST", headers, body: "grant_type=client_credentials" }),
            };
          },
          expect: (c) => (c === "anonymous" || BAD.has(c) ? 401 : 200),
        },
        {
          route: "POST /v1/clients",
          build: async () => ({
            path: "/v1/clients",
            init: { method: "POST", json: { name: "made by the matrix", scopes: ["agents:read"] } },
          }),
          expect: scoped("admin", 201),
        },
        {
          route: "GET /v1/clients",
          build: async () => ({ path: "/v1/clients" }),
          expect: scoped("admin", 200),
        },
        {
          route: "DELETE /v1/clients/:clientId",
          mutates: true,
          build: async ({ fresh }) => {
            const victim = fresh
              ? (await w.t.client(["agents:read"], "matrix victim")).clientId
              : w.clients.reader.clientId;
            return { path: `/v1/clients/${victim}`, init: { method: "DELETE" } };
          },
          expect: scoped("admin", 204),
        },
        {
          route: "POST /v1/agents",
          build: async () => ({
            path: "/v1/agents",
            init: { method: "POST", json: { card: w.nextCard("Matrix publish") } },
          }),
          expect: scoped("agents:write", 201),
        },
        { route: "GET /v1/agents", build: async () => ({ path: "/v1/agents" }), expect: open(200) },
        { route: "GET /v1/agents/:id", targets: AGENT_TARGETS, build: agentPath(), expect: readAgent(200) },
        {
          route: "GET /v1/agents/:id/card",
          targets: AGENT_TARGETS,
          build: agentPath("/card"),
          expect: readAgent(200),
        },
        {
          route: "PUT /v1/agents/:id",
          targets: AGENT_TARGETS,
          mutates: true,
          // The same card under a new version: name and url stay (and stay private where they were).
          build: async ({ id, card }) => ({
            path: `/v1/agents/${id}`,
            init: { method: "PUT", json: { card: { ...card, version: "9.9.9" } } },
          }),
          expect: writeAgent(200),
        },
        {
          route: "PATCH /v1/agents/:id",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({
            path: `/v1/agents/${id}`,
            init: { method: "PATCH", json: { statusMessage: "patched by the matrix" } },
          }),
          expect: writeAgent(200),
        },
        {
          route: "DELETE /v1/agents/:id",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({ path: `/v1/agents/${id}`, init: { method: "DELETE" } }),
          expect: writeAgent(204),
        },
        {
          route: "GET /v1/agents/:id/versions",
          targets: AGENT_TARGETS,
          build: agentPath("/versions"),
          expect: readAgent(200),
        },
        {
          route: "GET /v1/agents/:id/versions/:version",
          targets: AGENT_TARGETS,
          build: async ({ id, target }) => ({ path: `/v1/agents/${id}/versions/${stable[target].version}` }),
          expect: readAgent(200),
        },
        {
          route: "GET /v1/agents/:id/entitlements",
          targets: AGENT_TARGETS,
          build: agentPath("/entitlements"),
          expect: writeAgent(200),
        },
        {
          route: "PUT /v1/agents/:id/entitlements/:clientId",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({
            path: `/v1/agents/${id}/entitlements/${w.clients.grantee.clientId}`,
            init: { method: "PUT" },
          }),
          expect: writeAgent(204),
        },
        {
          route: "DELETE /v1/agents/:id/entitlements/:clientId",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({
            path: `/v1/agents/${id}/entitlements/${w.clients.entitled.clientId}`,
            init: { method: "DELETE" },
          }),
          expect: writeAgent(204),
        },
        { route: "GET /v1/search", build: async () => ({ path: "/v1/search?q=agent" }), expect: open(200) },
        {
          route: "POST /v1/webhooks",
          build: async () => ({
            path: "/v1/webhooks",
            init: { method: "POST", json: { url: "https://hooks.example.com/m", events: ["agent.deleted"] } },
          }),
          expect: scoped("agents:write", 201),
        },
        {
          route: "GET /v1/webhooks",
          build: async () => ({ path: "/v1/webhooks" }),
          expect: scoped("agents:write", 200),
        },
        {
          route: "GET /v1/webhooks/:id",
          build: async () => ({ path: `/v1/webhooks/${webhookId}` }),
          expect: (c) => (c === "other" ? 404 : scoped("agents:write", 200)(c)),
        },
        {
          route: "DELETE /v1/webhooks/:id",
          mutates: true,
          build: async ({ fresh }) => ({
            path: `/v1/webhooks/${fresh ? await w.webhook() : webhookId}`,
            init: { method: "DELETE" },
          }),
          expect: (c) => (c === "other" ? 404 : scoped("agents:write", 204)(c)),
        },
        {
          route: "GET /v1/webhooks/:id/deliveries",
          build: async () => ({ path: `/v1/webhooks/${webhookId}/deliveries` }),
          expect: (c) => (c === "other" ? 404 : scoped("agents:write", 200)(c)),
        },
        {
          route: "POST /v1/agents/:id/heartbeat",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({ path: `/v1/agents/${id}/heartbeat`, init: { method: "POST" } }),
          expect: writeAgent(204),
        },
        {
          route: "POST /v1/agents/:id/refresh",
          targets: AGENT_TARGETS,
          mutates: true,
          build: async ({ id }) => ({ path: `/v1/agents/${id}/refresh`, init: { method: "POST" } }),
          expect: writeAgent(200),
        },
        {
          route: "GET /v1/changes",
          build: async () => ({ path: "/v1/changes" }),
          expect: scoped("agents:read", 200),
        },
        {
          route: "POST /v1/peers",
          build: async () => ({ path: "/v1/peers", init: { method: "POST", json: w.peerBody() } }),
          expect: scoped("admin", 201),
        },
        { route: "GET /v1/peers", build: async () => ({ path: "/v1/peers" }), expect: scoped("admin", 200) },
        {
          route: "GET /v1/peers/:id",
          build: async () => ({ path: `/v1/peers/${peerId}` }),
          expect: scoped("admin", 200),
        },
        {
          route: "PATCH /v1/peers/:id",
          build: async () => ({
            path: `/v1/peers/${peerId}`,
            init: { method: "PATCH", json: { intervalSeconds: 600 } },
          }),
          expect: scoped("admin", 200),
        },
        {
          route: "DELETE /v1/peers/:id",
          mutates: true,
          build: async ({ fresh }) => ({
            path: `/v1/peers/${fresh ? await w.peer() : peerId}`,
            init: { method: "DELETE" },
          }),
          expect: scoped("admin", 204),
        },
        {
          route: "POST /v1/peers/:id/sync",
          build: async () => ({ path: `/v1/peers/${peerId}/sync`, init: { method: "POST" } }),
          expect: scoped("admin", 202),
        },
        {
          route: "GET /v1/peers/:id/syncs",
          build: async () => ({ path: `/v1/peers/${peerId}/syncs` }),
          expect: scoped("admin", 200),
        },
        {
          route: "GET /.well-known/agents/index.json",
          build: async () => ({ path: "/.well-known/agents/index.json" }),
          expect: open(200),
        },
        {
          route: "GET /v1/audit",
          build: async () => ({ path: "/v1/audit?limit=200" }),
          expect: scoped("admin", 200),
        },
        { route: "GET /v1/stats", build: async () => ({ path: "/v1/stats" }), expect: open(200) },
        {
          route: "GET /.well-known/ai-catalog.json",
          build: async () => ({ path: "/.well-known/ai-catalog.json" }),
          expect: open(200),
        },
        { route: "GET /", build: async () => ({ path: "/" }), expect: open(200) },
        { route: "GET /about", build: async () => ({ path: "/about" }), expect: open(200) },
        {
          route: "GET /agents/:id",
          targets: AGENT_TARGETS,
          build: async ({ id }) => ({ path: `/agents/${id}`, init: { headers: JSON_ACCEPT } }),
          expect: readAgent(200),
        },
        { route: "GET /assets/:file", build: async () => ({ path: `/assets/${asset}` }), expect: open(200) },
        {
          route: "POST /agents/publish",
          build: async () => ({
            path: "/agents/publish",
            init: { method: "POST", json: { card: w.nextCard("Compat publish") } },
          }),
          expect: scoped("agents:write", 201),
        },
        { route: "GET /agents/public", build: async () => ({ path: "/agents/public" }), expect: open(200) },
        {
          route: "GET /agents/:id/card",
          targets: AGENT_TARGETS,
          build: async ({ id }) => ({ path: `/agents/${id}/card` }),
          expect: readAgent(200),
        },
        {
          route: "POST /agents/search",
          build: async () => ({
            path: "/agents/search",
            init: { method: "POST", json: { q: "agent", top: 100 } },
          }),
          expect: open(200),
        },
      ];
    };

    test("every route the app serves has a row in the matrix", () => {
      const served = w.t.app.routes
        .filter((r) => r.method !== "OPTIONS" && !r.path.startsWith("/docs"))
        .map((r) => `${r.method} ${r.path}`);
      expect(
        rows()
          .map((r) => r.route)
          .sort(),
      ).toEqual(served.sort());
    });

    test("aggregates (lists, totals, facets, stats, feed, ETags, well-known documents) are as before the private agents existed", async () => {
      const changed: string[] = [];
      let compared = 0;
      for (const caller of BLIND) {
        for (const path of aggregateReads()) {
          compared++;
          const now = await normalized(await w.request(path, caller, { headers: JSON_ACCEPT }));
          if (now !== before.get(`${caller} ${path}`))
            changed.push(
              `${caller} GET ${path}:\n--- before\n${before.get(`${caller} ${path}`)?.slice(0, 600)}\n--- after\n${now.slice(0, 600)}`,
            );
        }
        compared++;
        const search = await normalized(
          await w.request("/agents/search", caller, { method: "POST", json: { q: "agent", top: 100 } }),
        );
        if (search !== before.get(`${caller} compat-search`)) changed.push(`${caller} POST /agents/search`);
      }
      console.log(
        `access matrix [${backend}]: ${compared} aggregate answers compared before/after the private agents`,
      );
      recordFigures({
        suite: "access-matrix",
        backend,
        check: "aggregates",
        figures: {
          expected: BLIND.length * (aggregateReads().length + 1),
          compared,
          changed: changed.length,
        },
      });
      expect(changed).toEqual([]);
    });

    test("every cell: the expected status, and nothing about a private agent to anyone who may not see it", async () => {
      const wrong: string[] = [];
      const leaks: string[] = [];
      let cells = 0;
      let statusCells = 0;
      let fiveXx = 0;
      for (const row of rows()) {
        for (const target of row.targets ?? (["public"] as Target[])) {
          const answers = new Map<CallerKind, string>();
          for (const caller of CALLERS) {
            const expected = row.expect(caller, target);
            const fresh = Boolean(row.mutates) && expected < 300 && target !== "missing";
            let { id, card } = stable[target];
            if (row.targets && fresh) {
              const made = await w.agent(target === "private" ? "private" : "public", {
                entitle: true,
                byUrl: row.route.endsWith("/refresh"),
              });
              ({ id, card } = made);
            } else if (row.route.endsWith("/refresh") && row.targets && target !== "missing") {
              // Refresh needs an agent published by URL, whoever asks.
              refreshTargets[target] ??= await w.agent(target === "private" ? "private" : "public", {
                entitle: target === "private",
                byUrl: true,
              });
              ({ id, card } = refreshTargets[target]!);
            }
            const built = await row.build({ caller, target, id, card, fresh });
            const res = built.raw
              ? await built.raw()
              : await w.request(built.path, built.caller ?? caller, built.init);
            cells++;
            statusCells++;
            if (res.status >= 500) fiveXx++;
            // Who may see a fresh private target changes with the cells that grant and withdraw.
            const hiddenTarget = w.privates.find((p) => p.id === id);
            if (
              hiddenTarget &&
              res.status === 204 &&
              row.route === "DELETE /v1/agents/:id/entitlements/:clientId"
            ) {
              hiddenTarget.seenBy.delete("entitled");
              hiddenTarget.knewId.add("entitled");
            }
            const text = await res.clone().text();
            if (res.status !== expected)
              wrong.push(
                `${row.route} [${target}] as ${caller}: ${res.status}, expected ${expected}: ${text.slice(0, 160)}`,
              );
            const everything = `${[...res.headers].map(([k, v]) => `${k}: ${v}`).join("\n")}\n${text}`;
            for (const hidden of w.privates) {
              if (hidden.seenBy.has(caller)) continue;
              const sentId = built.path.includes(hidden.id) || hidden.knewId.has(caller);
              const found = [hidden.name, hidden.url, ...(sentId ? [] : [hidden.id])].filter((s) =>
                everything.includes(s),
              );
              if (found.length)
                leaks.push(
                  `${row.route} [${target}] as ${caller}: shows ${found.join(", ")} of a private agent`,
                );
            }
            if (!SEES_PRIVATE.has(caller) && everything.includes(PRIVATE_MARK))
              leaks.push(
                `${row.route} [${target}] as ${caller}: private marker in ${everything.slice(0, 200)}`,
              );
            if (target !== "public" && !fresh) answers.set(caller, await normalized(res, id));
          }
          if (target === "private") indistinguishable.set(row.route, answers);
          if (target === "missing") missingAnswers.set(row.route, answers);
        }
      }
      // A private agent answers exactly as a missing one to everyone who may not see it.
      for (const [route, answers] of indistinguishable) {
        const missing = missingAnswers.get(route)!;
        for (const caller of CALLERS) {
          if (SEES_PRIVATE.has(caller) || !answers.has(caller) || !missing.has(caller)) continue;
          cells++;
          if (answers.get(caller) !== missing.get(caller))
            leaks.push(
              `${route} as ${caller}: a private agent answers differently from a missing one:\n${answers.get(caller)}\n--- missing:\n${missing.get(caller)}`,
            );
        }
      }
      console.log(
        `access matrix [${backend}]: ${cells} cells checked (${rows().length} routes x ${CALLERS.length} callers x targets), ${wrong.length} wrong, ${leaks.length} leaks`,
      );
      recordFigures({
        suite: "access-matrix",
        backend,
        check: "cells",
        figures: {
          // Counted from the table, not from the loop: a cell the loop skipped shows as a shortfall.
          expectedStatusCells: rows().reduce((n, row) => n + (row.targets?.length ?? 1) * CALLERS.length, 0),
          statusCells,
          comparisonCells: cells - statusCells,
          cells,
          routes: rows().length,
          callers: CALLERS.length,
          wrong: wrong.length,
          fiveXx,
          leaks: leaks.length,
        },
      });
      expect({ wrong, leaks }).toEqual({ wrong: [], leaks: [] });
    }, 600_000);

    const refreshTargets: Partial<Record<Target, { id: string; card: Record<string, unknown> }>> = {};
    const indistinguishable = new Map<string, Map<CallerKind, string>>();
    const missingAnswers = new Map<string, Map<CallerKind, string>>();
  });
}
