/**
 * The world of the access-control matrix (test/access-matrix.test.ts): one app, every kind of caller,
 * a public agent, a private one with an entitled reader, and factories for fresh targets (agents,
 * webhooks, peers, clients) so cells that change state never change what the next cell sees.
 */
import { sql } from "drizzle-orm";
import { SignJWT } from "jose";
import { peers } from "../../src/infra/db/schema";
import { BASE, createTestApp, json, type TestApp } from "./app";
import type { BackendName } from "./db";
import { freshCard } from "./fuzz";

export const CALLERS = [
  "anonymous",
  "reader",
  "owner",
  "other",
  "entitled",
  "admin",
  "revoked",
  "expired",
  "foreignKey",
  "algNone",
  "deletedClient",
] as const;
export type CallerKind = (typeof CALLERS)[number];
/** Callers whose credentials must be refused wherever a caller is identified. */
export const BAD: ReadonlySet<CallerKind> = new Set([
  "revoked",
  "expired",
  "foreignKey",
  "algNone",
  "deletedClient",
]);

export type Credentials = { clientId: string; clientSecret: string; token: string };
/**
 * `seenBy` may see it now; `knewId` could see it once (an entitlement withdrawn): the change feed tells
 * them it is gone, by id (a delete), and nothing more.
 */
export type PrivateAgent = {
  id: string;
  name: string;
  url: string;
  seenBy: Set<CallerKind>;
  knewId: Set<CallerKind>;
};

/** Marks every private fixture: no response to a caller who may not see it may contain it. */
export const PRIVATE_MARK = `PRIVMARK${Math.random().toString(36).slice(2, 10)}`;

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

export type World = Awaited<ReturnType<typeof createWorld>>;

export async function createWorld(backend: BackendName) {
  const cards = new Map<string, unknown>();
  let peerCount = 0;
  const t: TestApp = await createTestApp(backend, {
    fetchOptions: {
      lookup: async () => ["203.0.113.7"],
      // Cards published by URL come from this map; *.peer.example.com is this very registry (a peer of
      // itself under another name), so a peer can be added through the API; nothing else answers.
      fetchImpl: async (url, init) => {
        const target = new URL(url);
        if (target.hostname === "cards.example.com") {
          const card = cards.get(target.pathname);
          return card
            ? new Response(JSON.stringify(card), { headers: { "content-type": "application/json" } })
            : new Response("no such card", { status: 404 });
        }
        if (target.hostname.endsWith(".peer.example.com")) {
          // This registry under another name, and another registry id (its own would be refused as a loop).
          const answer = await t.app.handle(new Request(`${BASE}${target.pathname}${target.search}`, init));
          const text = (await answer.text()).replaceAll(
            `"${t.config.registryId}"`,
            '"peer-registry.example"',
          );
          return new Response(text, { status: answer.status, headers: answer.headers });
        }
        return new Response("unreachable in tests", { status: 404 });
      },
    },
  });
  const { app, config } = t;

  const client = async (scopes: Parameters<TestApp["client"]>[0], name: string): Promise<Credentials> =>
    t.client(scopes, name);
  const [reader, owner, other, entitled, admin, revoked, deleted, peerClient, grantee] = await Promise.all([
    client(["agents:read"], "matrix reader"),
    client(["agents:write"], "matrix owner"),
    client(["agents:write"], "matrix other writer"),
    client(["agents:read"], "matrix entitled reader"),
    client(["admin"], "matrix admin"),
    client(["admin"], "matrix revoked admin"),
    client(["admin"], "matrix deleted admin"),
    client(["agents:read"], "matrix peer client"),
    client(["agents:read"], "matrix grantee (never calls)"),
  ]);
  ensure(await app.services.auth.revokeClient(revoked.clientId));
  // Deleted outright (no API does this: revocation keeps the row), before its token was ever used.
  await t.db.database.rows(sql`delete from clients where client_id = ${deleted.clientId}`);

  const now = Math.floor(Date.now() / 1000);
  const adminClaims = { sub: admin.clientId, scope: "admin", jti: crypto.randomUUID() };
  const sign = (key: string, exp: number) =>
    new SignJWT(adminClaims)
      .setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuer(config.registryId)
      .setIssuedAt(now - 7200)
      .setExpirationTime(exp)
      .sign(new TextEncoder().encode(key));
  const expired = await sign(config.secretKey, now - 3600);
  const foreignKey = await sign("another-registry-signing-key-0123456789abcdef", now + 3600);
  const algNone = `${b64url({ alg: "none", typ: "JWT" })}.${b64url({ ...adminClaims, iss: config.registryId, exp: now + 3600 })}.`;

  const tokens: Record<CallerKind, string | null> = {
    anonymous: null,
    reader: reader.token,
    owner: owner.token,
    other: other.token,
    entitled: entitled.token,
    admin: admin.token,
    revoked: revoked.token,
    expired,
    foreignKey,
    algNone,
    deletedClient: deleted.token,
  };
  /** Client credentials per caller, for the token endpoint (bad kinds have none that work). */
  const credentials: Partial<Record<CallerKind, { clientId: string; clientSecret: string }>> = {
    reader,
    owner,
    other,
    entitled,
    admin,
    revoked,
    deletedClient: deleted,
  };

  // Through a real listener, as in production: Bun's own routes (the cached-read fast path) and the
  // route a served app picks for a path registered twice (GET /agents/:id) differ from app.handle's.
  app.listen({ port: 0, hostname: "127.0.0.1" });
  const origin = `http://127.0.0.1:${app.server!.port}`;
  const send = (path: string, init: RequestInit & { json?: unknown; token?: string | null } = {}) => {
    const { json: body, token, ...rest } = init;
    const headers = new Headers(rest.headers);
    if (body !== undefined) headers.set("content-type", "application/json");
    if (token) headers.set("authorization", `Bearer ${token}`);
    return fetch(`${origin}${path}`, {
      ...rest,
      headers,
      body: body === undefined ? rest.body : typeof body === "string" ? body : JSON.stringify(body),
    });
  };
  const request = (path: string, caller: CallerKind, init: RequestInit & { json?: unknown } = {}) =>
    send(path, { ...init, token: tokens[caller] });

  const privates: PrivateAgent[] = [];
  let counter = 0;

  /** Publishes an agent as the owner (by cardUrl when asked), optionally entitling the entitled reader. */
  async function agent(
    visibility: "public" | "private",
    options: { entitle?: boolean; byUrl?: boolean; label?: string } = {},
  ) {
    counter++;
    const label =
      visibility === "private" ? `${PRIVATE_MARK} agent ${counter}` : `Public matrix agent ${counter}`;
    const card = freshCard(options.label ?? label, {
      description:
        visibility === "private" ? `Private ${PRIVATE_MARK} description` : "A public agent of the matrix",
      skills: [
        {
          id: visibility === "private" ? `skill-${PRIVATE_MARK}-${counter}` : "matrix-public-skill",
          name: visibility === "private" ? `Skill ${PRIVATE_MARK}` : "Public skill",
          description: "d",
          tags: [visibility === "private" ? `tag-${PRIVATE_MARK}` : "matrix-public"],
        },
      ],
      provider: {
        organization: visibility === "private" ? `Org ${PRIVATE_MARK}` : "Public Org",
        url: "https://org.example.com",
      },
    });
    let body: Record<string, unknown> = { card, visibility };
    if (options.byUrl) {
      const path = `/card-${counter}.json`;
      cards.set(path, card);
      body = { cardUrl: `https://cards.example.com${path}`, visibility };
    }
    const res = await request("/v1/agents", "owner", { method: "POST", json: body });
    if (res.status !== 201) throw new Error(`publish failed: ${res.status} ${await res.text()}`);
    const record = await json<{ id: string; name: string; url: string; version: string }>(res);
    if (options.entitle) {
      const granted = await request(`/v1/agents/${record.id}/entitlements/${entitled.clientId}`, "owner", {
        method: "PUT",
      });
      if (granted.status !== 204) throw new Error(`entitle failed: ${granted.status}`);
    }
    if (visibility === "private")
      privates.push({
        id: record.id,
        name: record.name,
        url: record.url,
        seenBy: new Set<CallerKind>(["owner", "admin", ...(options.entitle ? (["entitled"] as const) : [])]),
        knewId: new Set<CallerKind>(),
      });
    return { ...record, card };
  }

  async function webhook() {
    const res = await request("/v1/webhooks", "owner", {
      method: "POST",
      json: { url: `https://hooks.example.com/${++counter}`, events: ["agent.updated"] },
    });
    if (res.status !== 201) throw new Error(`webhook failed: ${res.status} ${await res.text()}`);
    return (await json<{ id: string }>(res)).id;
  }

  /** A peer row (validated peers are added through the API in the POST /v1/peers cells). */
  async function peer() {
    const id = Bun.randomUUIDv7();
    await t.db.database.db.insert(peers).values({
      id,
      name: `matrix peer ${++peerCount}`,
      baseUrl: `https://stored-${peerCount}.peer.example.com`,
      clientId: peerClient.clientId,
      clientSecretEnc: "unused",
    });
    return id;
  }
  const peerBody = () => ({
    name: `validated peer ${++peerCount}`,
    baseUrl: `https://p${peerCount}.peer.example.com`,
    clientId: peerClient.clientId,
    clientSecret: peerClient.clientSecret,
  });

  return {
    t,
    tokens,
    credentials,
    clients: { reader, owner, other, entitled, admin, revoked, deleted, grantee },
    privates,
    request,
    send,
    agent,
    webhook,
    peer,
    peerBody,
    nextCard: (label: string) => freshCard(label),
  };
}

function ensure(value: unknown) {
  if (!value) throw new Error("world setup failed");
}
