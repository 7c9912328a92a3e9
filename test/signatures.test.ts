import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type CryptoKey, exportJWK, FlattenedSign, generateKeyPair, type JWK } from "jose";
import { canonicalCardJson } from "../src/modules/agents/card";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { freePort } from "./support/redis";

/**
 * Signed Agent Cards: JWS with a detached payload over the RFC 8785 canonical card minus `signatures`,
 * verified on publish and update with keys the tests generate (ES256, RS256), served from a local
 * JWKS server or embedded in the protected header.
 */

type Key = { alg: string; kid: string; privateKey: CryptoKey; publicJwk: JWK };

async function makeKey(alg: "ES256" | "RS256" | "EdDSA", kid: string): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: "sig" };
  return { alg, kid, privateKey, publicJwk };
}

async function signatureFor(card: Record<string, unknown>, key: Key, header: Record<string, unknown>) {
  const payload = new TextEncoder().encode(canonicalCardJson(card));
  const jws = await new FlattenedSign(payload)
    .setProtectedHeader({ alg: key.alg, kid: key.kid, ...header })
    .sign(key.privateKey);
  return { protected: jws.protected, signature: jws.signature };
}

let unique = 0;
function cardAt(origin: string, extra: Record<string, unknown> = {}) {
  unique++;
  return {
    protocolVersion: "0.3.0",
    name: `Signed Agent ${unique}`,
    description: "Signs its card.",
    url: `${origin}/a2a/${unique}`,
    version: "1.0.0",
    capabilities: {},
    defaultInputModes: ["text/plain"],
    defaultOutputModes: ["text/plain"],
    skills: [{ id: "sign", name: "Sign", description: "Signs", tags: ["crypto"] }],
    ...extra,
  };
}

type Record_ = {
  id: string;
  signature: string;
  signatureKid: string | null;
  verifiedDomain: string | null;
  version: string;
};
type Problem = { code: string; detail: string; errors: { path: string; message: string }[] };

for (const backend of BACKENDS) {
  describe(`signed cards [${backend}]`, () => {
    let t: TestApp;
    let writer: { token: string };
    let server: ReturnType<typeof Bun.serve>;
    let origin: string;
    let es256: Key;
    let rs256: Key;
    let impostor: Key;
    let ed25519: Key;
    let jwksRequests = 0;

    beforeAll(async () => {
      [es256, rs256, impostor, ed25519] = await Promise.all([
        makeKey("ES256", "es-1"),
        makeKey("RS256", "rs-1"),
        makeKey("ES256", "es-1"), // same kid as es256, different key
        makeKey("EdDSA", "ed-1"),
      ]);
      server = Bun.serve({
        port: 0,
        hostname: "127.0.0.1",
        fetch(request) {
          const path = new URL(request.url).pathname;
          jwksRequests++;
          if (path === "/.well-known/jwks.json")
            return Response.json({ keys: [es256.publicJwk, rs256.publicJwk, ed25519.publicJwk] });
          if (path === "/other/jwks.json") return Response.json({ keys: [rs256.publicJwk] });
          if (path === "/impostor/jwks.json") return Response.json({ keys: [impostor.publicJwk] });
          if (path === "/not-a-jwks.json") return Response.json({ hello: "world" });
          return new Response("not found", { status: 404 });
        },
      });
      origin = `http://127.0.0.1:${server.port}`;
      // DEBUG lets the registry fetch http:// loopback key sets, as it does card URLs.
      t = await createTestApp(backend, { config: { debug: true, cardFetchTimeoutMs: 1000 } });
      writer = await t.client(["agents:write"], "signer");
    });
    afterAll(async () => {
      server.stop(true);
      await t.close();
    });

    const publish = (card: unknown, extra: Record<string, unknown> = {}) =>
      t.request("/v1/agents", { method: "POST", token: writer.token, json: { card, ...extra } });
    const signed = async (key: Key, header: Record<string, unknown>, card = cardAt(origin)) => ({
      ...card,
      signatures: [await signatureFor(card, key, header)],
    });

    describe("happy", () => {
      test("ES256 with the key set on the agent's own origin: valid, with kid and verified domain", async () => {
        const card = await signed(es256, { jku: `${origin}/.well-known/jwks.json` });
        const res = await publish(card);
        expect(res.status).toBe(201);
        const record = await json<Record_>(res);
        expect(record).toMatchObject({
          signature: "valid",
          signatureKid: "es-1",
          verifiedDomain: "127.0.0.1",
        });
        // the card is kept verbatim, signatures included, and reads show the same verdict
        const card2 = await (await t.request(`/v1/agents/${record.id}/card`)).json();
        expect(card2).toEqual(card);
        expect((await json<Record_>(await t.request(`/v1/agents/${record.id}`))).signature).toBe("valid");
      });

      test("RS256 from a key set elsewhere: valid, but no domain is vouched for", async () => {
        const card = await signed(rs256, { jku: `${origin}/other/jwks.json` });
        const record = await json<Record_>(await publish(card));
        expect(record).toMatchObject({ signature: "valid", signatureKid: "rs-1", verifiedDomain: null });
      });

      test("an embedded public jwk verifies (no domain), as does EdDSA", async () => {
        const card = await signed(es256, { jwk: { ...es256.publicJwk, kid: undefined, alg: undefined } });
        const record = await json<Record_>(await publish(card));
        expect(record).toMatchObject({ signature: "valid", verifiedDomain: null });
        const ed = await signed(ed25519, { jku: `${origin}/.well-known/jwks.json` });
        expect((await json<Record_>(await publish(ed))).signature).toBe("valid");
      });

      test("RFC 7797 unencoded payload (b64: false) verifies too", async () => {
        const card = await signed(es256, {
          jku: `${origin}/.well-known/jwks.json`,
          b64: false,
          crit: ["b64"],
        });
        expect((await json<Record_>(await publish(card))).signature).toBe("valid");
      });

      test("an unsigned card is 'none'; signature is a search filter", async () => {
        const record = await json<Record_>(await publish(cardAt(origin)));
        expect(record).toMatchObject({ signature: "none", signatureKid: null, verifiedDomain: null });
        const valid = await json<{ items: { agent: Record_ }[] }>(
          await t.request("/v1/search?signature=valid&limit=100"),
        );
        expect(valid.items.length).toBeGreaterThan(0);
        expect(valid.items.every((i) => i.agent.signature === "valid")).toBe(true);
        const none = await json<{ items: { agent: Record_ }[] }>(
          await t.request("/v1/search?signature=none"),
        );
        expect(none.items.map((i) => i.agent.id)).toContain(record.id);
        const listed = await json<{ items: Record_[] }>(
          await t.request("/v1/agents?signature=valid&limit=100"),
        );
        expect(listed.items.length).toBe(valid.items.length);
        expect(listed.items.every((agent) => agent.signature === "valid")).toBe(true);
        expect((await t.request("/v1/agents?signature=forged")).status).toBe(400);
      });

      test("an update re-verifies: a new signed version replaces the verdict", async () => {
        const first = await json<Record_>(await publish(cardAt(origin)));
        const card = await signed(
          es256,
          { jku: `${origin}/.well-known/jwks.json` },
          {
            ...cardAt(origin),
            version: "2.0.0",
          },
        );
        const res = await t.request(`/v1/agents/${first.id}`, {
          method: "PUT",
          token: writer.token,
          json: { card },
        });
        expect(res.status).toBe(200);
        expect(await json<Record_>(res)).toMatchObject({
          version: "2.0.0",
          signature: "valid",
          signatureKid: "es-1",
        });
      });

      test("verification outcomes are counted", async () => {
        const text = await (await t.request("/metrics")).text();
        expect(text).toMatch(/a2a_registry_signature_verifications_total\{result="valid"\} [1-9]/);
        expect(text).toMatch(/a2a_registry_signature_verifications_total\{result="none"\} [1-9]/);
      });
    });

    describe("errors", () => {
      const expectInvalid = async (res: Response, message: RegExp) => {
        expect(res.status).toBe(422);
        expect(res.headers.get("content-type")).toContain("application/problem+json");
        const problem = await json<Problem>(res);
        expect(problem.code).toBe("INVALID_SIGNATURE");
        expect(problem.errors[0]!.path).toBe("/card/signatures/0");
        expect(problem.errors[0]!.message).toMatch(message);
        return problem;
      };

      test("a tampered payload is refused", async () => {
        const card = await signed(es256, { jku: `${origin}/.well-known/jwks.json` });
        card.description = "Changed after signing.";
        await expectInvalid(await publish(card), /does not match/);
      });

      test("a signature by another key (same kid) is refused", async () => {
        const card = await signed(impostor, { jku: `${origin}/.well-known/jwks.json` });
        await expectInvalid(await publish(card), /does not match/);
        // and a key set without the kid
        const other = await signed(es256, { jku: `${origin}/other/jwks.json` });
        await expectInvalid(await publish(other), /no key|does not match/);
      });

      test("unknown, symmetric and 'none' algorithms are refused", async () => {
        const base = cardAt(origin);
        for (const alg of ["XX999", "HS256", "none"]) {
          const header = Buffer.from(
            JSON.stringify({ alg, kid: "es-1", jku: `${origin}/.well-known/jwks.json` }),
          ).toString("base64url");
          const card = { ...base, signatures: [{ protected: header, signature: "c2lnbmF0dXJl" }] };
          await expectInvalid(await publish(card), /unsupported algorithm/);
        }
      });

      test("an unreachable or malformed key set proves nothing: stored as not valid, saying why", async () => {
        const cases: [string, RegExp][] = [
          [`http://127.0.0.1:${freePort()}/.well-known/jwks.json`, /could not be fetched/],
          [`${origin}/nowhere.json`, /could not be fetched.*404/],
          [`${origin}/not-a-jwks.json`, /not serve a JWK Set/],
        ];
        for (const [jku, reason] of cases) {
          const res = await publish(await signed(es256, { jku }));
          expect(res.status).toBe(201);
          const record = await json<Record_ & { signatureError: string }>(res);
          expect(record.signature).toBe("invalid");
          expect(record.signatureKid).toBe("es-1");
          expect(record.signatureError).toMatch(reason);
          expect(record.signatureError).toContain("/card/signatures/0");
        }
      });

      test("the A2A specification's sample cards (keys on example.com) are accepted as not verified", async () => {
        const { readFileSync } = await import("node:fs");
        const { join } = await import("node:path");
        const dir = join(import.meta.dir, "../../shared/fixtures/agent-cards/real");
        for (const name of ["a2a-spec-v0.3.0-sample.json", "a2a-spec-v1.0-sample.json"]) {
          const card = JSON.parse(readFileSync(join(dir, name), "utf8"));
          const res = await t.request("/v1/agents", { method: "POST", token: writer.token, json: { card } });
          expect(res.status).toBe(201);
          const record = await json<Record_>(res);
          expect(record.signature).toBe("invalid");
          // both samples share one url: retire this one before the next
          await t.request(`/v1/agents/${record.id}`, { method: "DELETE", token: writer.token });
        }
      });

      test("no key named, garbage headers and private embedded keys are refused", async () => {
        const noKey = await signed(es256, {});
        await expectInvalid(await publish(noKey), /names no key/);
        const garbage = { ...cardAt(origin), signatures: [{ protected: "!!!", signature: "x" }] };
        await expectInvalid(await publish(garbage), /not base64url/);
        const privateJwk = await exportJWK(es256.privateKey);
        const leaky = await signed(es256, { jwk: privateJwk });
        await expectInvalid(await publish(leaky), /private key/);
      });

      test("one bad signature among good ones makes the card invalid", async () => {
        const card = cardAt(origin);
        const good = await signatureFor(card, es256, { jku: `${origin}/.well-known/jwks.json` });
        const bad = await signatureFor(card, impostor, { jku: `${origin}/.well-known/jwks.json` });
        const res = await publish({ ...card, signatures: [good, bad] });
        expect(res.status).toBe(422);
        expect((await json<Problem>(res)).errors.map((e) => e.path)).toEqual(["/card/signatures/1"]);
      });

      test("allowInvalidSignature stores the card marked invalid", async () => {
        const card = await signed(es256, { jku: `${origin}/.well-known/jwks.json` });
        card.name = `${card.name} (edited)`;
        const res = await publish(card, { allowInvalidSignature: true });
        expect(res.status).toBe(201);
        expect(await json<Record_>(res)).toMatchObject({
          signature: "invalid",
          signatureKid: "es-1",
          verifiedDomain: null,
        });
      });

      test("an update with a broken signature changes nothing", async () => {
        const first = await json<Record_>(
          await publish(await signed(es256, { jku: `${origin}/.well-known/jwks.json` })),
        );
        const card = await signed(
          es256,
          { jku: `${origin}/.well-known/jwks.json` },
          { ...cardAt(origin), version: "3.0.0" },
        );
        card.version = "3.0.1";
        const res = await t.request(`/v1/agents/${first.id}`, {
          method: "PUT",
          token: writer.token,
          json: { card },
        });
        expect(res.status).toBe(422);
        const after = await json<Record_>(await t.request(`/v1/agents/${first.id}`));
        expect(after).toMatchObject({ version: "1.0.0", signature: "valid" });
      });
    });

    describe("security", () => {
      test("key sets are fetched through the SSRF guard: without DEBUG, loopback jku is never asked", async () => {
        const strict = await createTestApp(backend, { config: { debug: false } });
        try {
          const signer = await strict.client(["agents:write"]);
          const before = jwksRequests;
          const card = await signed(
            es256,
            { jku: `${origin}/.well-known/jwks.json` },
            cardAt("https://agent.example.com"),
          );
          const res = await strict.request("/v1/agents", {
            method: "POST",
            token: signer.token,
            json: { card },
          });
          expect(res.status).toBe(201);
          const record = await json<Record_ & { signatureError: string }>(res);
          expect(record.signature).toBe("invalid");
          expect(record.signatureError).toMatch(/could not be fetched/);
          expect(jwksRequests).toBe(before);
        } finally {
          await strict.close();
        }
      });

      test("a key on another origin never vouches for the agent's domain", async () => {
        const card = await signed(
          es256,
          { jku: `${origin}/.well-known/jwks.json` },
          cardAt("https://victim.example.com"),
        );
        const record = await json<Record_>(await publish(card));
        expect(record.signature).toBe("valid");
        expect(record.verifiedDomain).toBeNull();
      });
    });
  });
}
