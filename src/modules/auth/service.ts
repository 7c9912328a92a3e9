import { jwt } from "@elysiajs/jwt";
import { decodeJwt } from "jose";
import type { Config } from "../../config";
import { ApiError } from "../../errors";
import type { Audit } from "../../infra/audit";
import type { InvalidationBus } from "../../infra/bus";
import type { Database } from "../../infra/db/client";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import { ANONYMOUS, type Caller, hasScope, type OAuthErrorCode, SCOPES, type Scope } from "./model";
import { clientsRepo } from "./repo";

export type AuthDeps = {
  config: Config;
  database: Database;
  audit: Audit;
  metrics: Metrics;
  logger: Logger;
  /** Carries client revocations to every instance; absent in tools that serve no requests (CLI). */
  bus?: InvalidationBus;
};

/** Verified tokens and client states kept in memory, so an authenticated read costs no HMAC and no query. */
const TOKEN_CACHE_MAX = 10_000;
const CLIENT_STATE_TTL_MS = 30_000;

/** An OAuth error as RFC 6749 section 5.2 shapes it; the token route renders it, not the problem handler. */
export class OAuthFailure extends Error {
  constructor(
    readonly error: OAuthErrorCode,
    readonly description: string,
    readonly status: 400 | 401 = 400,
  ) {
    super(description);
  }
}

const randomToken = (bytes: number) =>
  Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("base64url");

export function newClientId() {
  return `cli_${Buffer.from(crypto.getRandomValues(new Uint8Array(10))).toString("hex")}`;
}
export function newClientSecret() {
  return `sec_${randomToken(32)}`;
}

const hashSecret = (secret: string) => Bun.password.hash(secret, { algorithm: "argon2id" });

function bearerFailure(detail: string) {
  return new ApiError("UNAUTHORIZED", detail, {
    headers: { "www-authenticate": `Bearer error="invalid_token", error_description="${detail}"` },
  });
}

export function createAuthService(deps: AuthDeps) {
  const { config, database, audit, metrics, logger, bus } = deps;
  const verifiedTokens = new Map<
    string,
    { caller: Extract<Caller, { kind: "client" }>; expiresAt: number }
  >();
  const clientStates = new Map<string, { active: boolean; expiresAt: number }>();
  // A revoked client's cached state goes at once here and, through the bus, on every other instance.
  bus?.onInvalidation((message) => {
    if (message.kind === "client") clientStates.delete(message.id);
  });
  bus?.onCoherenceChange(() => clientStates.clear());

  /** Checked on every request, never trusted from the token, so a revoked client's tokens fail at once. */
  async function clientActive(clientId: string): Promise<boolean> {
    const now = Date.now();
    const cached = clientStates.get(clientId);
    if (cached && cached.expiresAt > now) return cached.active;
    const state = await repo.stateOf(clientId);
    const active = state !== undefined && !state.disabled;
    // Remembered only where a revocation elsewhere would be heard: a connected Redis channel, or an
    // embedded database no other process can open. Otherwise (a CLI revoking on a shared Postgres
    // without Redis) every request asks the database.
    if (bus?.coherent() && (bus.distributed || database.kind === "pglite")) {
      if (clientStates.size >= TOKEN_CACHE_MAX) clientStates.clear();
      clientStates.set(clientId, { active, expiresAt: now + CLIENT_STATE_TTL_MS });
    }
    return active;
  }
  const repo = clientsRepo(database.db);
  const tokenLifetimeSeconds = config.accessTokenExpireMinutes * 60;
  // @elysiajs/jwt signs and verifies; built once, used outside any request context too (CLI, tests).
  const signer = jwt({
    name: "jwt",
    secret: config.secretKey,
    alg: config.algorithm,
    iss: config.registryId,
  }).decorator.jwt;
  const verifyOptions = { algorithms: [config.algorithm], issuer: config.registryId };

  // Verifying an unknown client against a real hash keeps the response time independent of whether
  // the client exists, so client ids cannot be enumerated by timing.
  let dummyHash: Promise<string> | undefined;
  const dummy = () => {
    dummyHash ??= hashSecret(newClientSecret());
    return dummyHash;
  };

  async function createClient(input: { name: string; scopes: Scope[] }) {
    const clientId = newClientId();
    const clientSecret = newClientSecret();
    await repo.insert({
      id: Bun.randomUUIDv7(),
      clientId,
      secretHash: await hashSecret(clientSecret),
      name: input.name,
      scopes: [...new Set(input.scopes)],
    });
    return {
      client_id: clientId,
      client_secret: clientSecret,
      name: input.name,
      scopes: [...new Set(input.scopes)],
    };
  }

  async function authenticateClient(clientId: string, clientSecret: string) {
    const client = clientId.length <= 128 ? await repo.findByClientId(clientId) : undefined;
    const valid = await Bun.password.verify(clientSecret, client?.secretHash ?? (await dummy()));
    if (!client || !valid) return { ok: false as const, reason: "unknown client or wrong secret" };
    if (client.disabled) return { ok: false as const, reason: "client revoked" };
    return { ok: true as const, client };
  }

  /** Client-credentials grant: returns the RFC 6749 token response or throws OAuthFailure. */
  async function issueToken(input: { clientId: string; clientSecret: string; scope: string | undefined }) {
    const auth = await authenticateClient(input.clientId, input.clientSecret);
    if (!auth.ok) throw new OAuthFailure("invalid_client", "Client authentication failed", 401);
    const granted = auth.client.scopes as Scope[];
    let scopes: Scope[] = granted;
    if (input.scope !== undefined && input.scope.trim() !== "") {
      const requested = [...new Set(input.scope.trim().split(/ +/))];
      const unknown = requested.filter((s) => !(SCOPES as readonly string[]).includes(s));
      if (unknown.length) throw new OAuthFailure("invalid_scope", `Unknown scope: ${unknown.join(" ")}`);
      // A token may be narrowed to any scope its client's scopes imply (admin implies all, write implies read).
      const grantedClient: Caller = {
        kind: "client",
        clientId: "",
        scopes: granted,
        admin: granted.includes("admin"),
        tokenId: "",
      };
      const notGranted = requested.filter((s) => !hasScope(grantedClient, s as Scope));
      if (notGranted.length)
        throw new OAuthFailure("invalid_scope", `Scope not granted to this client: ${notGranted.join(" ")}`);
      scopes = requested as Scope[];
    }
    const scope = scopes.join(" ");
    const accessToken = await signer.sign({
      sub: auth.client.clientId,
      scope,
      jti: crypto.randomUUID(),
      exp: Math.floor(Date.now() / 1000) + tokenLifetimeSeconds,
    });
    metrics.tokensIssued.inc();
    return {
      access_token: accessToken,
      token_type: "Bearer" as const,
      expires_in: tokenLifetimeSeconds,
      scope,
    };
  }

  /** Resolves the caller of a request from its Authorization header; throws 401 for any bad token. */
  async function authenticateBearer(header: string | null): Promise<Caller> {
    if (header === null) return { kind: "anonymous" };
    const match = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i.exec(header);
    if (!match) {
      metrics.authFailures.inc({ reason: "malformed_header" });
      throw bearerFailure("Authorization header must be 'Bearer <token>'");
    }
    const token = match[1]!;
    const known = verifiedTokens.get(token);
    if (known && known.expiresAt > Date.now()) {
      if (!(await clientActive(known.caller.clientId))) {
        metrics.authFailures.inc({ reason: "revoked_client" });
        throw bearerFailure("Client revoked");
      }
      return known.caller;
    }
    const payload = await signer.verify(token, verifyOptions);
    if (!payload) {
      const expired = isExpired(token);
      metrics.authFailures.inc({ reason: expired ? "expired_token" : "invalid_token" });
      throw bearerFailure(expired ? "Token expired" : "Token invalid");
    }
    const clientId = typeof payload.sub === "string" ? payload.sub : "";
    const scopeText = typeof payload.scope === "string" ? payload.scope : "";
    if (!clientId || typeof payload.jti !== "string" || typeof payload.exp !== "number") {
      metrics.authFailures.inc({ reason: "invalid_token" });
      throw bearerFailure("Token invalid");
    }
    if (!(await clientActive(clientId))) {
      metrics.authFailures.inc({ reason: "revoked_client" });
      throw bearerFailure("Client revoked");
    }
    const scopes = scopeText.split(" ").filter((s): s is Scope => (SCOPES as readonly string[]).includes(s));
    const caller = {
      kind: "client" as const,
      clientId,
      scopes,
      admin: scopes.includes("admin"),
      tokenId: payload.jti,
    };
    if (verifiedTokens.size >= TOKEN_CACHE_MAX) verifiedTokens.clear();
    verifiedTokens.set(token, { caller, expiresAt: payload.exp * 1000 });
    return caller;
  }

  /**
   * The caller, when it can be known without awaiting anything (no token, or a token and client state
   * this process has already checked); undefined means "use authenticateBearer".
   */
  function peekCaller(header: string | null): Caller | undefined {
    if (header === null) return ANONYMOUS;
    if (!header.startsWith("Bearer ")) return undefined;
    const known = verifiedTokens.get(header.slice(7).trim());
    const now = Date.now();
    if (!known || known.expiresAt <= now) return undefined;
    const state = clientStates.get(known.caller.clientId);
    return state && state.expiresAt > now && state.active ? known.caller : undefined;
  }

  async function revokeClient(clientId: string) {
    const rows = await repo.disable(clientId);
    clientStates.delete(clientId);
    await bus?.publish({ kind: "client", id: clientId });
    return rows.length > 0;
  }

  async function bootstrapAdmin() {
    const admin = config.adminClient;
    if (!admin) return;
    const existing = await repo.findByClientId(admin.clientId);
    if (
      existing &&
      !existing.disabled &&
      existing.scopes.includes("admin") &&
      (await Bun.password.verify(admin.clientSecret, existing.secretHash))
    )
      return;
    await repo.upsertBootstrap({
      id: existing?.id ?? Bun.randomUUIDv7(),
      clientId: admin.clientId,
      secretHash: await hashSecret(admin.clientSecret),
      name: "bootstrap admin",
      scopes: ["admin"],
    });
    logger.info({ clientId: admin.clientId }, "bootstrap admin client ensured");
    await audit.recordDetached({
      actor: "system",
      action: "client.created",
      target: admin.clientId,
      outcome: "success",
      details: { bootstrap: true, scopes: ["admin"] },
    });
  }

  return {
    createClient,
    issueToken,
    authenticateBearer,
    peekCaller,
    revokeClient,
    listClients: () => repo.list(),
    bootstrapAdmin,
    signToken: signer.sign,
  };
}

function isExpired(token: string): boolean {
  try {
    const { exp } = decodeJwt(token);
    return typeof exp === "number" && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

export type AuthService = ReturnType<typeof createAuthService>;
