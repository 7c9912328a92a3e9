import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { sql } from "drizzle-orm";
import { decodeJwt, decodeProtectedHeader, SignJWT } from "jose";
import { type Caller, hasScope } from "../src/modules/auth/model";
import { requireScopes } from "../src/modules/auth/guard";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";

// argon2 hashing and several database round trips per test; the 5 s default is tight under load.

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

type Creds = { clientId: string; clientSecret: string; token: string };
type TokenBody = { access_token: string; token_type: string; expires_in: number; scope: string };
type OAuthBody = { error: string; error_description?: string };
type Problem = {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  requestId: string;
  errors?: { path: string; message: string }[];
};
type AuditItem = {
  id: string;
  at: string;
  actor: string;
  action: string;
  target: string | null;
  outcome: "success" | "failure";
  ip: string | null;
  requestId: string | null;
  details: Record<string, unknown>;
};
type AuditPage = { items: AuditItem[]; nextCursor: string | null };

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString("base64url");

/** RFC 6749 2.3.1: base64(form-urlencode(id) ":" form-urlencode(secret)). */
function basic(clientId: string, clientSecret: string, encode: (s: string) => string = encodeURIComponent) {
  return `Basic ${Buffer.from(`${encode(clientId)}:${encode(clientSecret)}`).toString("base64")}`;
}

/** Percent-encodes every character, including unreserved ones: a valid (if unusual) form encoding. */
const encodeEveryChar = (s: string) =>
  [...Buffer.from(s, "utf8")].map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`).join("");

function tokenRequest(
  t: TestApp,
  options: {
    form?: Record<string, string>;
    body?: string;
    authorization?: string;
    headers?: HeadersInit;
  } = {},
) {
  const headers = new Headers(options.headers);
  if (options.authorization !== undefined) headers.set("authorization", options.authorization);
  if (options.body !== undefined) {
    if (!headers.has("content-type")) headers.set("content-type", "application/x-www-form-urlencoded");
    return t.request("/oauth/token", { method: "POST", headers, body: options.body });
  }
  return t.request("/oauth/token", { method: "POST", headers, form: options.form });
}

const grant = (extra: Record<string, string> = {}) => ({ grant_type: "client_credentials", ...extra });

async function expectToken(res: Response): Promise<TokenBody> {
  const text = await res.clone().text();
  expect(res.status, text).toBe(200);
  expect(res.headers.get("content-type")).toStartWith("application/json");
  expect(res.headers.get("cache-control")).toBe("no-store");
  expect(res.headers.get("pragma")).toBe("no-cache");
  const body = await json<TokenBody>(res);
  expect(Object.keys(body).sort()).toEqual(["access_token", "expires_in", "scope", "token_type"]);
  expect(body.token_type).toBe("Bearer");
  expect(typeof body.access_token).toBe("string");
  expect(Number.isInteger(body.expires_in)).toBe(true);
  return body;
}

/** RFC 6749 5.2 error: plain JSON `{error, error_description}`, never problem+json. */
async function expectOAuthError(res: Response, status: 400 | 401, error: string): Promise<OAuthBody> {
  const text = await res.clone().text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("content-type")).toStartWith("application/json");
  expect(res.headers.get("cache-control")).toBe("no-store");
  expect(res.headers.get("pragma")).toBe("no-cache");
  const body = await json<OAuthBody>(res);
  expect(body.error).toBe(error);
  expect(typeof body.error_description).toBe("string");
  expect(Object.keys(body).sort()).toEqual(["error", "error_description"]);
  if (status === 401) expect(res.headers.get("www-authenticate")).toBeTruthy();
  return body;
}

async function expectProblem(res: Response, status: number, code: string): Promise<Problem> {
  const text = await res.clone().text();
  expect(res.status, text).toBe(status);
  expect(res.headers.get("content-type")).toStartWith("application/problem+json");
  const body = await json<Problem>(res);
  expect(body.code).toBe(code);
  expect(body.status).toBe(status);
  expect(typeof body.type).toBe("string");
  expect(typeof body.title).toBe("string");
  expect(typeof body.detail).toBe("string");
  const requestId = res.headers.get("x-request-id");
  expect(requestId).toBeTruthy();
  expect(body.requestId).toBe(requestId!);
  expect(text).not.toContain("    at ");
  return body;
}

async function expectUnauthorized(res: Response): Promise<Problem> {
  const body = await expectProblem(res, 401, "UNAUTHORIZED");
  expect(res.headers.get("www-authenticate") ?? "").toStartWith("Bearer");
  return body;
}

async function metricValue(t: TestApp, name: string, labels: Record<string, string>): Promise<number> {
  const res = await t.request("/metrics");
  expect(res.status).toBe(200);
  const text = await res.text();
  const wanted = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort()
    .join(",");
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\} (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const got = match[2]!.split(",").sort().join(",");
    if (got === wanted) return Number(match[3]);
  }
  return 0;
}

/** Runs `action` and asserts the auth-failure counter for `reason` went up by at least one. */
async function expectAuthFailureCounted(t: TestApp, reason: string, action: () => Promise<void>) {
  const before = await metricValue(t, "a2a_registry_auth_failures_total", { reason });
  await action();
  const after = await metricValue(t, "a2a_registry_auth_failures_total", { reason });
  expect(after).toBeGreaterThan(before);
}

async function issueViaRoute(t: TestApp, clientId: string, clientSecret: string, scope?: string) {
  const res = await tokenRequest(t, {
    form: grant(scope === undefined ? {} : { scope }),
    authorization: basic(clientId, clientSecret),
  });
  return expectToken(res);
}

function forge(
  t: TestApp,
  claims: Record<string, unknown>,
  options: { key?: string; issuer?: string; exp?: number; iat?: number } = {},
) {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ jti: crypto.randomUUID(), ...claims })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(options.issuer ?? t.config.registryId)
    .setIssuedAt(options.iat ?? now)
    .setExpirationTime(options.exp ?? now + 600)
    .sign(new TextEncoder().encode(options.key ?? t.config.secretKey));
}

const listClients = (t: TestApp, token: string | null) => t.request("/v1/clients", { token });

// ---------------------------------------------------------------------------------------------------
// Scope model (pure): implications the route guard relies on
// ---------------------------------------------------------------------------------------------------

describe("scope model", () => {
  const caller = (...scopes: ("agents:read" | "agents:write" | "admin")[]): Caller => ({
    kind: "client",
    clientId: "cli_x",
    scopes,
    admin: scopes.includes("admin"),
    tokenId: "j",
  });

  test("agents:write implies agents:read but not admin", () => {
    expect(hasScope(caller("agents:write"), "agents:read")).toBe(true);
    expect(hasScope(caller("agents:write"), "agents:write")).toBe(true);
    expect(hasScope(caller("agents:write"), "admin")).toBe(false);
    expect(() => requireScopes(caller("agents:write"), ["agents:read"])).not.toThrow();
  });

  test("agents:read implies nothing else", () => {
    expect(hasScope(caller("agents:read"), "agents:read")).toBe(true);
    expect(hasScope(caller("agents:read"), "agents:write")).toBe(false);
    expect(hasScope(caller("agents:read"), "admin")).toBe(false);
  });

  test("admin implies every scope", () => {
    for (const scope of ["agents:read", "agents:write", "admin"] as const)
      expect(hasScope(caller("admin"), scope)).toBe(true);
  });

  test("anonymous has no scope; the guard throws UNAUTHORIZED, a missing scope FORBIDDEN", () => {
    expect(hasScope({ kind: "anonymous" }, "agents:read")).toBe(false);
    expect(() => requireScopes({ kind: "anonymous" }, ["agents:read"])).toThrow(
      expect.objectContaining({ code: "UNAUTHORIZED" }),
    );
    expect(() => requireScopes(caller("agents:read"), ["agents:write"])).toThrow(
      expect.objectContaining({ code: "FORBIDDEN" }),
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// Route suites, once per database backend
// ---------------------------------------------------------------------------------------------------

for (const backend of BACKENDS) {
  describe(`auth [${backend}]`, () => {
    let t: TestApp;
    let admin: Creds;
    let reader: Creds;
    let writer: Creds;
    let readWrite: Creds;
    let revoked: Creds;

    beforeAll(async () => {
      t = await createTestApp(backend);
      [admin, reader, writer, readWrite, revoked] = await Promise.all([
        t.client(["admin"], "admin"),
        t.client(["agents:read"], "reader"),
        t.client(["agents:write"], "writer"),
        t.client(["agents:read", "agents:write"], "read-write"),
        t.client(["agents:read"], "to be revoked"),
      ]);
      expect(await t.app.services.auth.revokeClient(revoked.clientId)).toBe(true);
    });
    afterAll(() => t.close());

    // -----------------------------------------------------------------------------------------------
    describe("POST /oauth/token", () => {
      describe("happy", () => {
        test("HTTP Basic client authentication issues a bearer token", async () => {
          const body = await issueViaRoute(t, readWrite.clientId, readWrite.clientSecret);
          expect(body.expires_in).toBe(t.config.accessTokenExpireMinutes * 60);
          expect(body.scope.split(" ").sort()).toEqual(["agents:read", "agents:write"]);
        });

        test("client_id/client_secret form fields authenticate too", async () => {
          const res = await tokenRequest(t, {
            form: grant({ client_id: reader.clientId, client_secret: reader.clientSecret }),
          });
          const body = await expectToken(res);
          expect(body.scope).toBe("agents:read");
        });

        test("the issued token works on a protected route", async () => {
          const body = await issueViaRoute(t, admin.clientId, admin.clientSecret);
          expect(body.scope).toBe("admin");
          expect((await listClients(t, body.access_token)).status).toBe(200);
        });

        test("Basic plus a matching client_id form field is accepted", async () => {
          const res = await tokenRequest(t, {
            form: grant({ client_id: reader.clientId }),
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectToken(res);
        });

        test("a requested subset returns only that scope", async () => {
          const body = await issueViaRoute(t, readWrite.clientId, readWrite.clientSecret, "agents:write");
          expect(body.scope).toBe("agents:write");
          expect(decodeJwt(body.access_token).scope).toBe("agents:write");
        });

        test("no scope parameter, or an empty one, grants all of the client's scopes", async () => {
          for (const form of [grant(), grant({ scope: "" })]) {
            const res = await tokenRequest(t, {
              form,
              authorization: basic(readWrite.clientId, readWrite.clientSecret),
            });
            const body = await expectToken(res);
            expect(body.scope.split(" ").sort()).toEqual(["agents:read", "agents:write"]);
          }
        });

        test("a repeated scope name is granted once", async () => {
          const body = await issueViaRoute(
            t,
            readWrite.clientId,
            readWrite.clientSecret,
            "agents:read agents:read",
          );
          expect(body.scope).toBe("agents:read");
        });

        test("an admin client may request any scope; a downscoped token loses admin rights", async () => {
          const write = await issueViaRoute(t, admin.clientId, admin.clientSecret, "agents:write");
          expect(write.scope).toBe("agents:write");
          await expectProblem(await listClients(t, write.access_token), 403, "FORBIDDEN");

          const both = await issueViaRoute(t, admin.clientId, admin.clientSecret, "admin agents:read");
          expect(both.scope.split(" ").sort()).toEqual(["admin", "agents:read"]);
          expect((await listClients(t, both.access_token)).status).toBe(200);
        });

        test("an agents:write client may narrow its token to agents:read (write implies read)", async () => {
          const res = await tokenRequest(t, {
            form: grant({ scope: "agents:read" }),
            authorization: basic(writer.clientId, writer.clientSecret),
          });
          const body = await expectToken(res);
          expect(body.scope).toBe("agents:read");
        });

        test("a JSON body is accepted as a lenient extension", async () => {
          const res = await t.request("/oauth/token", {
            method: "POST",
            json: {
              grant_type: "client_credentials",
              client_id: reader.clientId,
              client_secret: reader.clientSecret,
            },
          });
          const body = await expectToken(res);
          expect(body.scope).toBe("agents:read");
        });

        test("the JWT carries sub, scope, iat, exp, jti, iss and is HS256", async () => {
          const first = await issueViaRoute(t, readWrite.clientId, readWrite.clientSecret, "agents:read");
          const second = await issueViaRoute(t, readWrite.clientId, readWrite.clientSecret, "agents:read");
          const header = decodeProtectedHeader(first.access_token);
          expect(header.alg).toBe("HS256");
          const claims = decodeJwt(first.access_token);
          expect(claims.sub).toBe(readWrite.clientId);
          expect(claims.scope).toBe("agents:read");
          expect(claims.iss).toBe(t.config.registryId);
          expect(typeof claims.iat).toBe("number");
          expect(typeof claims.exp).toBe("number");
          const now = Date.now() / 1000;
          expect(Math.abs(claims.iat! - now)).toBeLessThan(30);
          expect(claims.exp! - claims.iat!).toBe(t.config.accessTokenExpireMinutes * 60);
          expect(first.expires_in).toBe(t.config.accessTokenExpireMinutes * 60);
          expect(typeof claims.jti).toBe("string");
          expect(claims.jti!.length).toBeGreaterThan(8);
          expect(decodeJwt(second.access_token).jti).not.toBe(claims.jti);
          // No secret material in the token payload.
          expect(JSON.stringify(claims)).not.toContain(readWrite.clientSecret);
        });

        test("responses carry X-Request-ID, propagated from the request when given", async () => {
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic(reader.clientId, reader.clientSecret),
            headers: { "x-request-id": "tok-req-1" },
          });
          await expectToken(res);
          expect(res.headers.get("x-request-id")).toBe("tok-req-1");
          const err = await tokenRequest(t, { form: { grant_type: "password" } });
          expect(err.headers.get("x-request-id")).toBeTruthy();
        });
      });

      describe("errors", () => {
        test("missing grant_type -> 400 invalid_request", async () => {
          const res = await tokenRequest(t, {
            form: { client_id: reader.clientId, client_secret: reader.clientSecret },
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("grant_type=password -> 400 unsupported_grant_type", async () => {
          const res = await tokenRequest(t, {
            form: { grant_type: "password", username: "u", password: "p" },
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectOAuthError(res, 400, "unsupported_grant_type");
        });

        test("grant_type values are case-sensitive", async () => {
          const res = await tokenRequest(t, {
            form: { grant_type: "Client_Credentials" },
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectOAuthError(res, 400, "unsupported_grant_type");
        });

        test("a repeated parameter -> 400 invalid_request", async () => {
          for (const body of [
            "grant_type=client_credentials&grant_type=client_credentials",
            "grant_type=client_credentials&scope=agents:read&scope=agents:read",
          ]) {
            const res = await tokenRequest(t, {
              body,
              authorization: basic(reader.clientId, reader.clientSecret),
            });
            const err = await expectOAuthError(res, 400, "invalid_request");
            expect(err.error_description).toContain("repeated");
          }
        });

        test("Basic and client_secret in the body -> 400 invalid_request (one method only)", async () => {
          const res = await tokenRequest(t, {
            form: grant({ client_id: reader.clientId, client_secret: reader.clientSecret }),
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("Basic with a different client_id in the body -> 400 invalid_request", async () => {
          const res = await tokenRequest(t, {
            form: grant({ client_id: writer.clientId }),
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("no client credentials -> 401 invalid_client with WWW-Authenticate", async () => {
          const res = await tokenRequest(t, { form: grant() });
          await expectOAuthError(res, 401, "invalid_client");
          expect(res.headers.get("www-authenticate")).toStartWith("Basic");
        });

        test("client_id without client_secret -> 401 invalid_client", async () => {
          const res = await tokenRequest(t, { form: grant({ client_id: reader.clientId }) });
          await expectOAuthError(res, 401, "invalid_client");
        });

        test("wrong secret -> 401 invalid_client (Basic and form)", async () => {
          const viaBasic = await tokenRequest(t, {
            form: grant(),
            authorization: basic(reader.clientId, `${reader.clientSecret}x`),
          });
          await expectOAuthError(viaBasic, 401, "invalid_client");
          expect(viaBasic.headers.get("www-authenticate")).toStartWith("Basic");
          const viaForm = await tokenRequest(t, {
            form: grant({ client_id: reader.clientId, client_secret: writer.clientSecret }),
          });
          await expectOAuthError(viaForm, 401, "invalid_client");
        });

        test("unknown client -> 401 invalid_client", async () => {
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic("cli_00000000000000000000", reader.clientSecret),
          });
          await expectOAuthError(res, 401, "invalid_client");
        });

        test("revoked client -> 401 invalid_client", async () => {
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic(revoked.clientId, revoked.clientSecret),
          });
          await expectOAuthError(res, 401, "invalid_client");
        });

        test("a scope the client was not granted -> 400 invalid_scope", async () => {
          for (const scope of ["agents:write", "admin", "agents:read admin"]) {
            const res = await tokenRequest(t, {
              form: grant({ scope }),
              authorization: basic(reader.clientId, reader.clientSecret),
            });
            await expectOAuthError(res, 400, "invalid_scope");
          }
        });

        test("an unknown scope name -> 400 invalid_scope", async () => {
          for (const scope of ["agents:delete", "agents:read superuser", "ADMIN"]) {
            const res = await tokenRequest(t, {
              form: grant({ scope }),
              authorization: basic(admin.clientId, admin.clientSecret),
            });
            await expectOAuthError(res, 400, "invalid_scope");
          }
        });

        test("an empty form body -> 400 invalid_request", async () => {
          const res = await tokenRequest(t, { body: "" });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("no body and no content type -> 400 invalid_request", async () => {
          const res = await t.request("/oauth/token", { method: "POST" });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("a JSON body with non-string values -> 400 invalid_request", async () => {
          const res = await t.request("/oauth/token", {
            method: "POST",
            json: { grant_type: "client_credentials", client_id: reader.clientId, client_secret: 12345 },
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("a malformed JSON body -> 400 invalid_request (RFC 6749 body, not problem+json)", async () => {
          const res = await t.request("/oauth/token", {
            method: "POST",
            body: '{"grant_type": "client_credentials",',
            headers: { "content-type": "application/json" },
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("an unsupported content type -> 400 invalid_request (RFC 6749 body, not problem+json)", async () => {
          const res = await tokenRequest(t, {
            body: "grant_type=client_credentials",
            headers: { "content-type": "text/plain" },
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectOAuthError(res, 400, "invalid_request");
        });

        test("a malformed Basic header -> 401 invalid_client", async () => {
          for (const authorization of [
            `Basic ${Buffer.from("no-colon-here").toString("base64")}`,
            "Basic !!!not-base64!!!",
            "Basic",
            `Basic ${Buffer.from("cli_x:%E0%A4%A").toString("base64")}`, // broken percent-encoding
          ]) {
            const res = await tokenRequest(t, { form: grant(), authorization });
            await expectOAuthError(res, 401, "invalid_client");
          }
        });
      });

      describe("security", () => {
        test("Basic credentials are form-urlencoded before base64 (RFC 6749 2.3.1)", async () => {
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic(reader.clientId, reader.clientSecret, encodeEveryChar),
          });
          const body = await expectToken(res);
          expect(decodeJwt(body.access_token).sub).toBe(reader.clientId);
        });

        test("unknown client and wrong secret are indistinguishable", async () => {
          const unknown = await tokenRequest(t, {
            form: grant(),
            authorization: basic("cli_ffffffffffffffffffff", "sec_whatever"),
          });
          const wrong = await tokenRequest(t, {
            form: grant(),
            authorization: basic(reader.clientId, "sec_whatever"),
          });
          const a = await expectOAuthError(unknown, 401, "invalid_client");
          const b = await expectOAuthError(wrong, 401, "invalid_client");
          expect(a).toEqual(b);
          expect(unknown.headers.get("www-authenticate")).toBe(wrong.headers.get("www-authenticate"));
        });

        test("a revoked client's error does not reveal that it exists", async () => {
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic(revoked.clientId, revoked.clientSecret),
          });
          const unknown = await tokenRequest(t, {
            form: grant(),
            authorization: basic("cli_eeeeeeeeeeeeeeeeeeee", "sec_whatever"),
          });
          expect(await json(res)).toEqual(await json(unknown));
        });

        test("errors never echo the submitted secret", async () => {
          const secret = `${reader.clientSecret}-WRONG`;
          const res = await tokenRequest(t, {
            form: grant({ client_id: reader.clientId, client_secret: secret }),
          });
          expect(res.status).toBe(401);
          expect(await res.text()).not.toContain(secret);
        });

        test("an overlong client id is rejected as invalid_client, not a server error", async () => {
          const res = await tokenRequest(t, {
            form: grant({ client_id: "c".repeat(5000), client_secret: "s" }),
          });
          await expectOAuthError(res, 401, "invalid_client");
        });

        test("a Bearer header is not client authentication", async () => {
          const res = await tokenRequest(t, { form: grant(), authorization: `Bearer ${admin.token}` });
          await expectOAuthError(res, 401, "invalid_client");
        });

        test("failures are counted in a2a_registry_auth_failures_total by reason", async () => {
          await expectAuthFailureCounted(t, "invalid_client", async () => {
            const res = await tokenRequest(t, { form: grant() });
            expect(res.status).toBe(401);
          });
          await expectAuthFailureCounted(t, "unsupported_grant_type", async () => {
            const res = await tokenRequest(t, { form: { grant_type: "password" } });
            expect(res.status).toBe(400);
          });
          await expectAuthFailureCounted(t, "invalid_scope", async () => {
            const res = await tokenRequest(t, {
              form: grant({ scope: "admin" }),
              authorization: basic(reader.clientId, reader.clientSecret),
            });
            expect(res.status).toBe(400);
          });
        });

        test("a declared Content-Length over the limit -> 413 PAYLOAD_TOO_LARGE before the body is read", async () => {
          const big = `grant_type=client_credentials&pad=${"a".repeat(t.config.maxBodyBytes + 10)}`;
          const res = await t.app.handle(
            new Request("http://localhost/oauth/token", {
              method: "POST",
              body: big,
              headers: {
                "content-type": "application/x-www-form-urlencoded",
                "content-length": String(big.length),
              },
            }),
          );
          await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
        });

        test("a streamed body over the limit -> 413 PAYLOAD_TOO_LARGE", async () => {
          const chunk = new TextEncoder().encode("a".repeat(64 * 1024));
          let sent = 0;
          const stream = new ReadableStream<Uint8Array>({
            pull(controller) {
              if (sent === 0)
                controller.enqueue(new TextEncoder().encode("grant_type=client_credentials&pad="));
              if (sent > t.config.maxBodyBytes + chunk.byteLength) return controller.close();
              controller.enqueue(chunk);
              sent += chunk.byteLength;
            },
          });
          const res = await t.app.handle(
            new Request("http://localhost/oauth/token", {
              method: "POST",
              body: stream,
              headers: { "content-type": "application/x-www-form-urlencoded" },
              duplex: "half",
            } as RequestInit),
          );
          await expectProblem(res, 413, "PAYLOAD_TOO_LARGE");
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("bearer tokens on protected routes", () => {
      describe("happy", () => {
        test("a valid admin token lists clients", async () => {
          expect((await listClients(t, admin.token)).status).toBe(200);
        });

        test("the scheme name is case-insensitive (RFC 7235)", async () => {
          const res = await t.request("/v1/clients", { headers: { authorization: `bearer ${admin.token}` } });
          expect(res.status).toBe(200);
        });

        test("a well-formed token signed with the registry key is accepted", async () => {
          const token = await forge(t, { sub: admin.clientId, scope: "admin" });
          expect((await listClients(t, token)).status).toBe(200);
        });
      });

      describe("security", () => {
        test("an expired token -> 401 UNAUTHORIZED, counted as expired_token", async () => {
          const now = Math.floor(Date.now() / 1000);
          const token = await forge(
            t,
            { sub: admin.clientId, scope: "admin" },
            { iat: now - 3600, exp: now - 60 },
          );
          await expectAuthFailureCounted(t, "expired_token", async () => {
            const body = await expectUnauthorized(await listClients(t, token));
            expect(body.detail.toLowerCase()).toContain("expired");
          });
        });

        test("a tampered payload (scope raised, signature kept) -> 401", async () => {
          const [header, payload, signature] = reader.token.split(".");
          const claims = JSON.parse(Buffer.from(payload!, "base64url").toString("utf8"));
          expect(claims.scope).toBe("agents:read");
          const tampered = `${header}.${b64url({ ...claims, scope: "admin" })}.${signature}`;
          await expectAuthFailureCounted(t, "invalid_token", async () => {
            await expectUnauthorized(await listClients(t, tampered));
          });
        });

        test('an unsigned alg "none" token -> 401', async () => {
          const now = Math.floor(Date.now() / 1000);
          const claims = {
            sub: admin.clientId,
            scope: "admin",
            iss: t.config.registryId,
            jti: crypto.randomUUID(),
            iat: now,
            exp: now + 600,
          };
          for (const token of [
            `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}.`,
            `${b64url({ alg: "none", typ: "JWT" })}.${b64url(claims)}`,
          ])
            await expectUnauthorized(await listClients(t, token));
        });

        test("a token signed with another key -> 401", async () => {
          const token = await forge(
            t,
            { sub: admin.clientId, scope: "admin" },
            { key: "another-key-that-is-long-enough-for-hs256!!" },
          );
          await expectUnauthorized(await listClients(t, token));
        });

        test("a token from another issuer -> 401", async () => {
          const token = await forge(t, { sub: admin.clientId, scope: "admin" }, { issuer: "evil.example" });
          await expectUnauthorized(await listClients(t, token));
        });

        test("a signed token without jti or sub -> 401", async () => {
          const now = Math.floor(Date.now() / 1000);
          const key = new TextEncoder().encode(t.config.secretKey);
          const noJti = await new SignJWT({ sub: admin.clientId, scope: "admin" })
            .setProtectedHeader({ alg: "HS256" })
            .setIssuer(t.config.registryId)
            .setIssuedAt(now)
            .setExpirationTime(now + 600)
            .sign(key);
          await expectUnauthorized(await listClients(t, noJti));
          const noSub = await forge(t, { scope: "admin" });
          await expectUnauthorized(await listClients(t, noSub));
        });

        test("a garbage token -> 401", async () => {
          for (const token of ["not-a-jwt", "a.b.c", `${admin.token}x`])
            await expectUnauthorized(await listClients(t, token));
          await expectAuthFailureCounted(t, "malformed_header", async () => {
            await expectUnauthorized(
              await t.request("/v1/clients", { headers: { authorization: "Bearer !!!" } }),
            );
          });
          await expectUnauthorized(await t.request("/v1/clients", { headers: { authorization: "Bearer" } }));
        });

        test("the Basic scheme on a bearer route -> 401 with a Bearer challenge", async () => {
          const res = await t.request("/v1/clients", {
            headers: { authorization: basic(admin.clientId, admin.clientSecret) },
          });
          await expectUnauthorized(res);
        });

        test("a revoked client's live token fails immediately after DELETE /v1/clients/:id", async () => {
          const victim = await t.client(["admin"], "victim");
          expect((await listClients(t, victim.token)).status).toBe(200);
          const del = await t.request(`/v1/clients/${victim.clientId}`, {
            method: "DELETE",
            token: admin.token,
          });
          expect(del.status).toBe(204);
          await expectAuthFailureCounted(t, "revoked_client", async () => {
            await expectUnauthorized(await listClients(t, victim.token));
          });
        });

        test("a token whose client row no longer exists -> 401", async () => {
          const ghost = await t.client(["admin"], "ghost");
          await t.db.database.rows(sql`delete from clients where client_id = ${ghost.clientId}`);
          await expectUnauthorized(await listClients(t, ghost.token));
          // A client already seen is remembered; a deletion made behind the API must announce itself on
          // the invalidation bus (as revocation does), and then its live token fails at once.
          const seen = await t.client(["admin"], "seen ghost");
          expect((await listClients(t, seen.token)).status).toBe(200);
          await t.db.database.rows(sql`delete from clients where client_id = ${seen.clientId}`);
          await t.app.services.bus.publish({ kind: "client", id: seen.clientId });
          await expectUnauthorized(await listClients(t, seen.token));
        });

        test("401 bodies carry the request id of the X-Request-ID header, propagated when sent", async () => {
          const res = await t.request("/v1/clients", {
            token: "not-a-jwt",
            headers: { "x-request-id": "bearer-test-42" },
          });
          const body = await expectUnauthorized(res);
          expect(body.requestId).toBe("bearer-test-42");
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("scopes guard", () => {
      const card = {
        protocolVersion: "0.3.0",
        name: "Scope Guard Agent",
        description: "used by the auth tests",
        url: "https://scope-guard.example.com/a2a",
        version: "1.0.0",
        capabilities: {},
        defaultInputModes: ["text/plain"],
        defaultOutputModes: ["text/plain"],
        skills: [{ id: "s", name: "s", description: "d", tags: ["t"] }],
      };

      describe("happy", () => {
        test("agents:write may publish", async () => {
          const res = await t.request("/v1/agents", { method: "POST", json: { card }, token: writer.token });
          expect(res.status, await res.clone().text()).toBe(201);
        });

        test("admin implies agents:write", async () => {
          const res = await t.request("/v1/agents", {
            method: "POST",
            json: { card: { ...card, url: "https://scope-guard-admin.example.com/a2a" } },
            token: admin.token,
          });
          expect(res.status, await res.clone().text()).toBe(201);
        });
      });

      describe("security", () => {
        test("agents:read on POST /v1/agents -> 403 FORBIDDEN with insufficient_scope", async () => {
          await expectAuthFailureCounted(t, "insufficient_scope", async () => {
            const res = await t.request("/v1/agents", {
              method: "POST",
              json: { card: { ...card, url: "https://scope-guard-reader.example.com/a2a" } },
              token: reader.token,
            });
            await expectProblem(res, 403, "FORBIDDEN");
            expect(res.headers.get("www-authenticate") ?? "").toContain("insufficient_scope");
          });
        });

        test("anonymous on POST /v1/agents -> 401 UNAUTHORIZED", async () => {
          await expectAuthFailureCounted(t, "missing_token", async () => {
            const res = await t.request("/v1/agents", {
              method: "POST",
              json: { card: { ...card, url: "https://scope-guard-anon.example.com/a2a" } },
            });
            await expectUnauthorized(res);
          });
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("POST /v1/clients", () => {
      describe("happy", () => {
        test("creates a client: 201 {client_id, client_secret, name, scopes}; the secret works", async () => {
          const res = await t.request("/v1/clients", {
            method: "POST",
            json: { name: "created by route", scopes: ["agents:read", "agents:write"] },
            token: admin.token,
          });
          expect(res.status, await res.clone().text()).toBe(201);
          expect(res.headers.get("cache-control")).toBe("no-store");
          const body = await json<{
            client_id: string;
            client_secret: string;
            name: string;
            scopes: string[];
          }>(res);
          expect(Object.keys(body).sort()).toEqual(["client_id", "client_secret", "name", "scopes"]);
          expect(body.name).toBe("created by route");
          expect(body.scopes.sort()).toEqual(["agents:read", "agents:write"]);
          expect(body.client_secret.length).toBeGreaterThanOrEqual(32);
          const token = await issueViaRoute(t, body.client_id, body.client_secret);
          expect(token.scope.split(" ").sort()).toEqual(["agents:read", "agents:write"]);
        });

        test("every client gets a distinct id and secret", async () => {
          const make = () =>
            t
              .request("/v1/clients", {
                method: "POST",
                json: { name: "twin", scopes: ["agents:read"] },
                token: admin.token,
              })
              .then((r) => json<{ client_id: string; client_secret: string }>(r));
          const [a, b] = await Promise.all([make(), make()]);
          expect(a.client_id).not.toBe(b.client_id);
          expect(a.client_secret).not.toBe(b.client_secret);
        });
      });

      describe("errors", () => {
        const cases: [string, unknown][] = [
          ["missing name", { scopes: ["agents:read"] }],
          ["empty name", { name: "", scopes: ["agents:read"] }],
          ["overlong name", { name: "n".repeat(101), scopes: ["agents:read"] }],
          ["missing scopes", { name: "x" }],
          ["unknown scope", { name: "x", scopes: ["agents:delete"] }],
          ["empty scopes", { name: "x", scopes: [] }],
          ["duplicate scopes", { name: "x", scopes: ["admin", "admin"] }],
          ["scopes as a string", { name: "x", scopes: "agents:read" }],
          ["an array body", [{ name: "x", scopes: ["agents:read"] }]],
        ];
        for (const [label, body] of cases)
          test(`${label} -> 400 VALIDATION_FAILED`, async () => {
            const res = await t.request("/v1/clients", { method: "POST", json: body, token: admin.token });
            await expectProblem(res, 400, "VALIDATION_FAILED");
          });

        test("extra fields -> 400 VALIDATION_FAILED (the schema forbids additional properties)", async () => {
          const before = (await t.app.services.auth.listClients()).length;
          const res = await t.request("/v1/clients", {
            method: "POST",
            json: { name: "x", scopes: ["agents:read"], disabled: false, client_secret: "chosen" },
            token: admin.token,
          });
          await expectProblem(res, 400, "VALIDATION_FAILED");
          expect((await t.app.services.auth.listClients()).length).toBe(before);
        });

        test("malformed JSON -> 400 VALIDATION_FAILED", async () => {
          const res = await t.request("/v1/clients", {
            method: "POST",
            json: '{"name":',
            token: admin.token,
          });
          await expectProblem(res, 400, "VALIDATION_FAILED");
        });
      });

      describe("security", () => {
        const body = { name: "nope", scopes: ["admin"] };
        test("agents:read and agents:write tokens -> 403 FORBIDDEN", async () => {
          for (const token of [reader.token, writer.token, readWrite.token]) {
            const res = await t.request("/v1/clients", { method: "POST", json: body, token });
            await expectProblem(res, 403, "FORBIDDEN");
          }
        });

        test("anonymous -> 401 UNAUTHORIZED", async () => {
          await expectUnauthorized(await t.request("/v1/clients", { method: "POST", json: body }));
        });

        test("authentication is checked before the body is validated", async () => {
          await expectUnauthorized(await t.request("/v1/clients", { method: "POST", json: {} }));
          await expectProblem(
            await t.request("/v1/clients", { method: "POST", json: {}, token: reader.token }),
            403,
            "FORBIDDEN",
          );
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("GET /v1/clients", () => {
      describe("happy", () => {
        test("lists clients with their public fields only", async () => {
          const res = await listClients(t, admin.token);
          expect(res.status).toBe(200);
          const text = await res.clone().text();
          const body = await json<{ items: Record<string, unknown>[] }>(res);
          const ids = body.items.map((c) => c.client_id);
          for (const c of [admin, reader, writer, readWrite, revoked]) expect(ids).toContain(c.clientId);
          for (const item of body.items) {
            expect(Object.keys(item).sort()).toEqual([
              "client_id",
              "created_at",
              "disabled",
              "name",
              "scopes",
            ]);
            expect(new Date(item.created_at as string).toISOString()).toBe(item.created_at as string);
          }
          const revokedItem = body.items.find((c) => c.client_id === revoked.clientId)!;
          expect(revokedItem.disabled).toBe(true);
          expect(body.items.find((c) => c.client_id === reader.clientId)).toMatchObject({
            name: "reader",
            scopes: ["agents:read"],
            disabled: false,
          });
          expect(text.length).toBeGreaterThan(0);
        });
      });

      describe("security", () => {
        test("no secret or hash appears anywhere in the body", async () => {
          const text = await (await listClients(t, admin.token)).text();
          for (const c of [admin, reader, writer, readWrite, revoked])
            expect(text).not.toContain(c.clientSecret);
          expect(text).not.toContain("$argon2");
          expect(text.toLowerCase()).not.toContain("secret");
          expect(text.toLowerCase()).not.toContain("hash");
        });

        test("non-admin tokens -> 403, anonymous -> 401", async () => {
          for (const token of [reader.token, writer.token, readWrite.token])
            await expectProblem(await listClients(t, token), 403, "FORBIDDEN");
          await expectUnauthorized(await listClients(t, null));
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("DELETE /v1/clients/:clientId", () => {
      describe("happy", () => {
        test("revokes: 204, listed as disabled, token endpoint refuses it, live tokens fail", async () => {
          const victim = await t.client(["agents:write"], "delete me");
          const res = await t.request(`/v1/clients/${victim.clientId}`, {
            method: "DELETE",
            token: admin.token,
          });
          expect(res.status).toBe(204);
          expect(await res.text()).toBe("");
          const list = await json<{ items: { client_id: string; disabled: boolean }[] }>(
            await listClients(t, admin.token),
          );
          expect(list.items.find((c) => c.client_id === victim.clientId)?.disabled).toBe(true);
          await expectOAuthError(
            await tokenRequest(t, {
              form: grant(),
              authorization: basic(victim.clientId, victim.clientSecret),
            }),
            401,
            "invalid_client",
          );
          const publish = await t.request("/v1/agents", { method: "POST", json: {}, token: victim.token });
          await expectUnauthorized(publish);
        });

        test("revoking twice is idempotent: 204 again, still revoked", async () => {
          const victim = await t.client(["agents:read"], "delete me twice");
          const path = `/v1/clients/${victim.clientId}`;
          expect((await t.request(path, { method: "DELETE", token: admin.token })).status).toBe(204);
          expect((await t.request(path, { method: "DELETE", token: admin.token })).status).toBe(204);
          const rows = await t.db.database.rows<{ disabled: boolean }>(
            sql`select disabled from clients where client_id = ${victim.clientId}`,
          );
          expect(rows).toEqual([{ disabled: true }]);
        });
      });

      describe("errors", () => {
        test("unknown client -> 404 problem+json NOT_FOUND", async () => {
          const res = await t.request("/v1/clients/cli_doesnotexist00000000", {
            method: "DELETE",
            token: admin.token,
          });
          await expectProblem(res, 404, "NOT_FOUND");
        });

        test("an overlong client id -> 400 VALIDATION_FAILED", async () => {
          const res = await t.request(`/v1/clients/${"c".repeat(200)}`, {
            method: "DELETE",
            token: admin.token,
          });
          await expectProblem(res, 400, "VALIDATION_FAILED");
        });
      });

      describe("security", () => {
        test("non-admin tokens -> 403 (even on their own client), anonymous -> 401; nothing revoked", async () => {
          for (const c of [reader, writer, readWrite]) {
            const res = await t.request(`/v1/clients/${c.clientId}`, { method: "DELETE", token: c.token });
            await expectProblem(res, 403, "FORBIDDEN");
          }
          await expectUnauthorized(await t.request(`/v1/clients/${reader.clientId}`, { method: "DELETE" }));
          expect((await listClients(t, null)).status).toBe(401);
          const res = await tokenRequest(t, {
            form: grant(),
            authorization: basic(reader.clientId, reader.clientSecret),
          });
          await expectToken(res);
        });
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("secret storage", () => {
      test("secret_hash is argon2id, verifies the secret, and no column holds the secret", async () => {
        const rows = await t.db.database.rows<{ secret_hash: string; whole: string }>(
          sql`select secret_hash, c::text as whole from clients c where client_id = ${reader.clientId}`,
        );
        expect(rows).toHaveLength(1);
        const { secret_hash: hash, whole } = rows[0]!;
        expect(hash).toStartWith("$argon2id$");
        expect(await Bun.password.verify(reader.clientSecret, hash)).toBe(true);
        expect(whole).not.toContain(reader.clientSecret);
      });

      test("every client, however created, is stored as argon2id", async () => {
        const rows = await t.db.database.rows<{ secret_hash: string }>(sql`select secret_hash from clients`);
        expect(rows.length).toBeGreaterThan(0);
        for (const row of rows) expect(row.secret_hash).toStartWith("$argon2id$");
      });
    });

    // -----------------------------------------------------------------------------------------------
    describe("GET /v1/audit", () => {
      const ids: Record<"issued" | "denied" | "created" | "revoked", string> = {
        issued: "",
        denied: "",
        created: "",
        revoked: "",
      };
      let createdClientId = "";
      let createdSecret = "";

      const audit = async (query = "", token: string | null = admin.token) => {
        const res = await t.request(`/v1/audit${query}`, { token });
        expect(res.status, await res.clone().text()).toBe(200);
        return json<AuditPage>(res);
      };

      beforeAll(async () => {
        const issued = await tokenRequest(t, {
          form: grant(),
          authorization: basic(reader.clientId, reader.clientSecret),
          headers: { "x-request-id": `audit-issued-${backend}` },
        });
        expect(issued.status).toBe(200);
        ids.issued = issued.headers.get("x-request-id")!;

        const denied = await tokenRequest(t, {
          form: grant({ client_id: reader.clientId, client_secret: "sec_definitely_wrong" }),
        });
        expect(denied.status).toBe(401);
        ids.denied = denied.headers.get("x-request-id")!;

        const created = await t.request("/v1/clients", {
          method: "POST",
          json: { name: "audited", scopes: ["agents:read"] },
          token: admin.token,
        });
        expect(created.status).toBe(201);
        ids.created = created.headers.get("x-request-id")!;
        const createdBody = await json<{ client_id: string; client_secret: string }>(created);
        createdClientId = createdBody.client_id;
        createdSecret = createdBody.client_secret;

        const revokedRes = await t.request(`/v1/clients/${createdClientId}`, {
          method: "DELETE",
          token: admin.token,
        });
        expect(revokedRes.status).toBe(204);
        ids.revoked = revokedRes.headers.get("x-request-id")!;
      });

      describe("happy", () => {
        test("records token.issued, token.denied, client.created, client.revoked with actor and requestId", async () => {
          const { items } = await audit("?limit=200");
          const byRequest = (id: string) => items.filter((i) => i.requestId === id);

          expect(ids.issued).toBe(`audit-issued-${backend}`);
          expect(byRequest(ids.issued)).toEqual([
            expect.objectContaining({
              action: "token.issued",
              actor: reader.clientId,
              target: reader.clientId,
              outcome: "success",
            }),
          ]);
          expect(byRequest(ids.denied)).toEqual([
            expect.objectContaining({ action: "token.denied", actor: reader.clientId, outcome: "failure" }),
          ]);
          expect(byRequest(ids.denied)[0]!.details).toMatchObject({ error: "invalid_client" });
          expect(byRequest(ids.created)).toEqual([
            expect.objectContaining({
              action: "client.created",
              actor: admin.clientId,
              target: createdClientId,
              outcome: "success",
            }),
          ]);
          expect(byRequest(ids.revoked)).toEqual([
            expect.objectContaining({
              action: "client.revoked",
              actor: admin.clientId,
              target: createdClientId,
              outcome: "success",
            }),
          ]);
          for (const item of items) {
            expect(Object.keys(item).sort()).toEqual(
              ["action", "actor", "at", "details", "id", "ip", "outcome", "requestId", "target"].sort(),
            );
            expect(new Date(item.at).toISOString()).toBe(item.at);
          }
        });

        test("newest first", async () => {
          const { items } = await audit("?limit=200");
          const numeric = items.map((i) => Number(i.id));
          expect(numeric).toEqual([...numeric].sort((a, b) => b - a));
          const revokedIdx = items.findIndex((i) => i.requestId === ids.revoked);
          const createdIdx = items.findIndex((i) => i.requestId === ids.created);
          expect(revokedIdx).toBeLessThan(createdIdx);
        });

        test("filter by action and by actor", async () => {
          const denied = await audit("?action=token.denied&limit=200");
          expect(denied.items.length).toBeGreaterThan(0);
          for (const item of denied.items) {
            expect(item.action).toBe("token.denied");
            expect(item.outcome).toBe("failure");
          }
          expect(denied.items.some((i) => i.requestId === ids.denied)).toBe(true);

          const byAdmin = await audit(`?actor=${encodeURIComponent(admin.clientId)}&limit=200`);
          expect(byAdmin.items.length).toBeGreaterThanOrEqual(2);
          for (const item of byAdmin.items) expect(item.actor).toBe(admin.clientId);

          const both = await audit(`?action=client.created&actor=${encodeURIComponent(admin.clientId)}`);
          expect(both.items.every((i) => i.action === "client.created" && i.actor === admin.clientId)).toBe(
            true,
          );
          expect(both.items.some((i) => i.target === createdClientId)).toBe(true);

          const none = await audit("?action=no.such.action");
          expect(none).toEqual({ items: [], nextCursor: null });
        });

        test("cursor pagination walks the whole log without gaps or repeats", async () => {
          const all = await audit("?limit=200");
          expect(all.items.length).toBeGreaterThanOrEqual(4);
          expect(all.items.length).toBeLessThan(200);
          expect(all.nextCursor).toBeNull();

          const first = await audit("?limit=1");
          expect(first.items).toHaveLength(1);
          expect(first.items[0]!.id).toBe(all.items[0]!.id);
          expect(typeof first.nextCursor).toBe("string");
          const second = await audit(`?limit=1&cursor=${encodeURIComponent(first.nextCursor!)}`);
          expect(second.items).toHaveLength(1);
          expect(second.items[0]!.id).toBe(all.items[1]!.id);

          const walked: string[] = [];
          let cursor: string | null = null;
          let pages = 0;
          do {
            const query = `?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
            const page = await audit(query);
            walked.push(...page.items.map((i) => i.id));
            cursor = page.nextCursor;
            pages++;
          } while (cursor && pages < 200);
          expect(walked).toEqual(all.items.map((i) => i.id));
        });

        test("pagination composes with the action filter", async () => {
          const all = await audit("?action=token.issued&limit=200");
          const first = await audit("?action=token.issued&limit=1");
          expect(first.items[0]!.id).toBe(all.items[0]!.id);
          if (all.items.length > 1) {
            const next = await audit(
              `?action=token.issued&limit=1&cursor=${encodeURIComponent(first.nextCursor!)}`,
            );
            expect(next.items[0]!.id).toBe(all.items[1]!.id);
          }
        });
      });

      describe("errors", () => {
        test("a malformed cursor -> 400 VALIDATION_FAILED", async () => {
          for (const cursor of [
            "garbage",
            Buffer.from("a:-1").toString("base64url"),
            Buffer.from("x:5").toString("base64url"),
          ]) {
            const res = await t.request(`/v1/audit?cursor=${cursor}`, { token: admin.token });
            await expectProblem(res, 400, "VALIDATION_FAILED");
          }
        });

        test("an out-of-range limit -> 400 VALIDATION_FAILED", async () => {
          for (const limit of ["0", "201", "abc"]) {
            const res = await t.request(`/v1/audit?limit=${limit}`, { token: admin.token });
            await expectProblem(res, 400, "VALIDATION_FAILED");
          }
        });
      });

      describe("security", () => {
        test("non-admin -> 403, anonymous -> 401", async () => {
          for (const token of [reader.token, writer.token, readWrite.token])
            await expectProblem(await t.request("/v1/audit", { token }), 403, "FORBIDDEN");
          await expectUnauthorized(await t.request("/v1/audit"));
        });

        test("the audit log never contains a client secret", async () => {
          const text = JSON.stringify(await audit("?limit=200"));
          for (const secret of [
            createdSecret,
            admin.clientSecret,
            reader.clientSecret,
            "sec_definitely_wrong",
          ])
            expect(text).not.toContain(secret);
          expect(text).not.toContain("$argon2");
        });
      });
    });
  });

  // -------------------------------------------------------------------------------------------------
  describe(`admin bootstrap [${backend}]`, () => {
    const adminClient = { clientId: "bootstrap-admin", clientSecret: "bootstrap-secret-0123456789abcdef" };
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend, { config: { adminClient } });
    });
    afterAll(() => t.close());

    test("bootstrapAdmin is idempotent and the admin can get a token", async () => {
      await t.app.services.auth.bootstrapAdmin();
      await t.app.services.auth.bootstrapAdmin();
      const rows = await t.db.database.rows<{ scopes: string[]; disabled: boolean; secret_hash: string }>(
        sql`select scopes, disabled, secret_hash from clients where client_id = ${adminClient.clientId}`,
      );
      expect(rows).toHaveLength(1);
      expect(rows[0]!.scopes).toEqual(["admin"]);
      expect(rows[0]!.disabled).toBe(false);
      expect(rows[0]!.secret_hash).toStartWith("$argon2id$");

      const audits = await t.db.database.rows<{ n: number | string }>(
        sql`select count(*) as n from audit_log where action = 'client.created' and target = ${adminClient.clientId}`,
      );
      expect(Number(audits[0]!.n)).toBe(1);

      const token = await issueViaRoute(t, adminClient.clientId, adminClient.clientSecret);
      expect(token.scope).toBe("admin");
      expect((await listClients(t, token.access_token)).status).toBe(200);
    });

    test("a changed bootstrap secret rotates the stored one; a revoked bootstrap admin is re-enabled", async () => {
      const rotated = { clientId: adminClient.clientId, clientSecret: "rotated-secret-0123456789abcdef" };
      const other = await createTestApp(backend, { db: t.db, config: { adminClient: rotated } });
      try {
        await other.app.services.auth.revokeClient(adminClient.clientId);
        await other.app.services.auth.bootstrapAdmin();
        await expectOAuthError(
          await tokenRequest(other, {
            form: grant(),
            authorization: basic(adminClient.clientId, adminClient.clientSecret),
          }),
          401,
          "invalid_client",
        );
        const token = await issueViaRoute(other, rotated.clientId, rotated.clientSecret);
        expect(token.scope).toBe("admin");
      } finally {
        await other.close();
      }
    });

    test("no bootstrap without configuration", async () => {
      const plain = await createTestApp(backend);
      try {
        await plain.app.services.auth.bootstrapAdmin();
        const rows = await plain.db.database.rows(sql`select client_id from clients`);
        expect(rows).toEqual([]);
      } finally {
        await plain.close();
      }
    });
  });
}
