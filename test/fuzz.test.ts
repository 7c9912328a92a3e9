/**
 * Bad input (issue 8, part 3): property-based fuzzing of every route's params, query, body and headers.
 *
 * Property: every answer is a 4xx problem+json (RFC 6749 JSON on /oauth/token) or a status the route
 * documents, never a 5xx, never a stack trace or SQL text; and a rejected request leaves the guarded
 * tables (agents, versions, clients, entitlements, webhooks, peers) exactly as they were (row counts
 * and a content hash, taken before and after every case). Requests go through app.handle on PGlite
 * (and on Postgres when TEST_DATABASE_URL is set, fewer cases). FUZZ_RUNS and FUZZ_SEED override the
 * case count and seed; the seed is printed so any failure can be replayed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { testConfig } from "../src/config";
import { peers } from "../src/infra/db/schema";
import { MAX_JSON_DEPTH, mayHoldUnstorable, unstorableStringPath } from "../src/infra/web";
import { createTestApp, json, type TestApp, BASE } from "./support/app";
import { BACKENDS } from "./support/db";
import { recordFigures } from "./support/figures";
import {
  absurdHeaders,
  CONTENT_TYPES,
  damageJsonText,
  discoverRoutes,
  enc,
  fingerprint,
  freshCard,
  fromSchema,
  hostileCard,
  installWriteCounter,
  invalidUtf8,
  malformedPercent,
  mutated,
  nastyString,
  queryString,
  type RouteSpec,
  segment,
  violationsOf,
  weatherCard,
  writeCount,
} from "./support/fuzz";

const PGLITE_RUNS = Number(process.env.FUZZ_RUNS ?? 10_000);
const POSTGRES_RUNS = Number(process.env.FUZZ_RUNS_POSTGRES ?? 2_000);
const SEED = Number(process.env.FUZZ_SEED ?? Date.now() % 2_147_483_647);

type Case = {
  spec: RouteSpec | undefined;
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
};

/** A short, replayable description of a case. */
function describeCase(c: Case) {
  const body =
    c.body === undefined
      ? ""
      : typeof c.body === "string"
        ? c.body.slice(0, 300)
        : `<${c.body.length} bytes: ${Buffer.from(c.body.subarray(0, 120)).toString("hex")}>`;
  const headers = Object.fromEntries(
    Object.entries(c.headers).map(([k, v]) => [k, v.length > 80 ? `${v.slice(0, 80)}...(${v.length})` : v]),
  );
  return `${c.method} ${c.url.slice(0, 300)} ${JSON.stringify(headers)} ${body}`;
}

for (const backend of BACKENDS) {
  describe(`fuzz [${backend}]`, () => {
    let t: TestApp;
    let routes: RouteSpec[];
    const pools: Record<string, string[]> = {};
    const tokens: string[] = [];
    let clientPairs: Array<{ id: string; secret: string }> = [];

    beforeAll(async () => {
      t = await createTestApp(backend, {
        config: {
          federation: { ...testConfig().federation, requestTimeoutMs: 500 },
          cardFetchTimeoutMs: 500,
        },
        // Nothing leaves the process: every outbound fetch (cardUrl, peers, JWKS) meets a stub.
        fetchOptions: {
          fetchImpl: async () =>
            new Response('{"error":"nope"}', {
              status: 404,
              headers: { "content-type": "application/json" },
            }),
          lookup: async () => ["203.0.113.7"],
        },
      });
      ({ routes } = await discoverRoutes(t.app));
      await installWriteCounter(t.db.database);
      const [admin, reader, owner, other, entitled] = await Promise.all([
        t.client(["admin"], "fuzz admin"),
        t.client(["agents:read"], "fuzz reader"),
        t.client(["agents:write"], "fuzz owner"),
        t.client(["agents:write"], "fuzz other"),
        t.client(["agents:read"], "fuzz entitled"),
      ]);
      tokens.push(admin.token, reader.token, owner.token, other.token, entitled.token);
      clientPairs = [admin, reader, owner, other, entitled].map((c) => ({
        id: c.clientId,
        secret: c.clientSecret,
      }));
      const agentIds: string[] = [];
      for (const visibility of ["public", "private", "public"] as const) {
        const res = await t.request("/v1/agents", {
          method: "POST",
          token: owner.token,
          json: { card: freshCard("Fuzz seed"), visibility },
        });
        expect(res.status).toBe(201);
        agentIds.push((await json<{ id: string }>(res)).id);
      }
      expect(
        (
          await t.request(`/v1/agents/${agentIds[1]}/entitlements/${entitled.clientId}`, {
            method: "PUT",
            token: owner.token,
          })
        ).status,
      ).toBe(204);
      const hook = await t.request("/v1/webhooks", {
        method: "POST",
        token: owner.token,
        json: { url: "https://hooks.example.com/in", events: ["agent.updated"] },
      });
      expect(hook.status).toBe(201);
      const peerId = Bun.randomUUIDv7();
      await t.db.database.db.insert(peers).values({
        id: peerId,
        name: "fuzz peer",
        baseUrl: "https://peer.example.com",
        clientId: "cli_peer",
        clientSecretEnc: "not-a-real-ciphertext",
      });
      pools.id = [...agentIds, (await json<{ id: string }>(hook)).id, peerId];
      // Client ids the fuzzer may name in paths (DELETE /v1/clients/:clientId revokes them): never the
      // callers' own, or the run would lock itself out.
      pools.clientId = (
        await Promise.all([1, 2, 3].map((i) => t.client(["agents:read"], `fuzz bystander ${i}`)))
      ).map((c) => c.clientId);
      pools.version = [String(weatherCard.version), "1.0.0", "2.0.0"];
      pools.file = ["main.js", "styles.css", "x.js"];
    }, 120_000);
    afterAll(async () => {
      await t?.close();
    });

    /** Realistic values for well-known names, mixed with what the schema alone would give. */
    const hints = (): Record<string, fc.Arbitrary<unknown>> => ({
      card: hostileCard,
      cardUrl: fc.constantFrom(
        "https://cards.example.com/card.json",
        "http://127.0.0.1:1/x",
        "ftp://x/y",
        "https://u:p@x.example/c",
        "not a url",
      ),
      baseUrl: fc.constantFrom(
        "https://peer2.example.com",
        "http://127.0.0.1:1",
        "https://peer.example.com",
        "javascript:alert(1)",
      ),
      url: fc.constantFrom(
        "https://hooks.example.com/x",
        "http://169.254.169.254/latest",
        "file:///etc/passwd",
      ),
      clientId: fc.constantFrom(...pools.clientId!, "cli_nope"),
      client_id: fc.constantFrom(...clientPairs.map((c) => c.id)),
      client_secret: fc.constantFrom(...clientPairs.map((c) => c.secret), "wrong"),
      grant_type: fc.constantFrom("client_credentials", "password", ""),
      scope: fc.constantFrom("agents:read", "admin agents:write", "everything", ""),
      cursor: fc.constantFrom("czox", "czo5OTk5OTk5OTk5OTk5OTk5OTk5", "YTox", "!!", ""),
      q: fc.constantFrom("weather", "wether", "a & b | !c", "'\\", "%", "_"),
      updatedSince: fc.constantFrom(
        "2024-01-01T00:00:00Z",
        "0000-00-00T00:00:00Z",
        "2024-13-45T99:99:99Z",
        "yesterday",
      ),
      id: fc.constantFrom(...pools.id!),
      version: fc.constantFrom(...pools.version!),
    });

    /** One request for `spec`, every part of it possibly hostile. */
    const requestFor = (spec: RouteSpec, h: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<Case> => {
      const path = fc
        .tuple(...spec.pathParams.map((name) => segment(pools[name] ?? pools.id!)))
        .map((values) => {
          let i = 0;
          return spec.path.replace(/:([A-Za-z0-9_]+)/g, () => values[i++]!);
        });
      const query = fc.oneof(
        { weight: 5, arbitrary: queryString(spec, h) },
        { weight: 1, arbitrary: fc.constant("") },
        { weight: 1, arbitrary: malformedPercent.map((p) => `?${p}=${p}&x${p}`) },
        { weight: 1, arbitrary: fc.constant(`?q=${"q".repeat(30_000)}`) },
      );
      const authorization = fc.oneof(
        { weight: 3, arbitrary: fc.constantFrom(...tokens).map((token) => `Bearer ${token}`) },
        { weight: 1, arbitrary: fc.constant(undefined) },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            `Bearer ${"a".repeat(20_000)}`,
            "Bearer",
            "Bearer a.b.c",
            "Basic Og==",
            "Basic !!!",
            `Bearer ${tokens[0]!.split(".").slice(0, 2).join(".")}.`,
            `bearer  ${tokens[1]}`,
            "Digest x",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
          ),
        },
      );
      const method = fc.oneof(
        { weight: 12, arbitrary: fc.constant(spec.method) },
        {
          weight: 1,
          arbitrary: fc.constantFrom("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "PROPFIND"),
        },
      );
      const body: fc.Arbitrary<{ body?: string | Uint8Array; type?: string }> = (() => {
        if (spec.body?.kind === "form") {
          const form = fromSchema(spec.body.schema, h).map((v) =>
            new URLSearchParams(
              Object.entries((v ?? {}) as Record<string, unknown>).map(([k, x]) => [k, String(x)]),
            ).toString(),
          );
          return fc.oneof(
            {
              weight: 4,
              arbitrary: form.map((b) => ({ body: b, type: "application/x-www-form-urlencoded" })),
            },
            {
              weight: 1,
              arbitrary: form.chain((b) =>
                malformedPercent.map((p) => ({
                  body: `${b}&${p}=${p}`,
                  type: "application/x-www-form-urlencoded",
                })),
              ),
            },
            {
              weight: 1,
              arbitrary: form.chain((b) =>
                invalidUtf8(b).map((bytes) => ({ body: bytes, type: "application/x-www-form-urlencoded" })),
              ),
            },
            {
              weight: 1,
              arbitrary: form.map((b) => ({
                body: `${b}&grant_type=client_credentials&grant_type=x&__proto__=1&constructor=2`,
                type: "application/x-www-form-urlencoded",
              })),
            },
            {
              weight: 1,
              arbitrary: fc
                .tuple(fc.jsonValue({ maxDepth: 2 }), fc.constantFrom(...CONTENT_TYPES))
                .map(([v, type]) => ({ body: JSON.stringify(v), type })),
            },
          );
        }
        const shaped = spec.body
          ? fromSchema(spec.body.schema, h).chain((v) => mutated(v))
          : fc.jsonValue({ maxDepth: 3 });
        const asText = shaped.map((v) => JSON.stringify(v) ?? "null");
        return fc.oneof(
          { weight: 6, arbitrary: asText.map((b) => ({ body: b, type: "application/json" })) },
          {
            weight: 2,
            arbitrary: asText.chain(damageJsonText).map((b) => ({ body: b, type: "application/json" })),
          },
          {
            weight: 1,
            arbitrary: asText.chain(invalidUtf8).map((bytes) => ({ body: bytes, type: "application/json" })),
          },
          {
            weight: 1,
            arbitrary: fc
              .tuple(asText, fc.constantFrom(...CONTENT_TYPES))
              .map(([b, type]) => ({ body: b, type })),
          },
          {
            weight: 1,
            arbitrary: fc
              .integer({ min: MAX_JSON_DEPTH - 2, max: 5000 })
              .map((d) => ({ body: `{"card":${"[".repeat(d)}${"]".repeat(d)}}`, type: "application/json" })),
          },
          { weight: 1, arbitrary: fc.constant({}) },
        );
      })();
      return fc
        .record({
          path,
          query,
          authorization,
          method,
          body,
          headers: fc.option(absurdHeaders, { freq: 4, nil: {} }),
        })
        .map(({ path: p, query: q, authorization: auth, method: m, body: b, headers: extra }) => {
          const headers: Record<string, string> = { ...extra };
          if (auth !== undefined) headers.authorization = auth;
          const bodyless = m === "GET" || m === "HEAD";
          if (!bodyless && b.type !== undefined && b.type !== "") headers["content-type"] = b.type;
          const target = routes.find((r) => r.method === m && r.path === spec.path);
          return {
            spec: target,
            method: m,
            url: `${BASE}${p}${q}`,
            headers,
            body: bodyless ? undefined : b.body,
          };
        });
    };

    /** Requests to no route at all: random paths, traversal, encodings. */
    const strayRequest: fc.Arbitrary<Case> = fc
      .tuple(
        fc.oneof(
          nastyString.map((s) => `/${enc(s.slice(0, 2000))}`),
          malformedPercent.map((p) => `/v1/${p}/x`),
          fc.constantFrom(
            "/v1",
            "/v1/",
            "/v1/agents/",
            "//v1/agents",
            "/v1/agents/../clients",
            "/%2e%2e/etc/passwd",
            "/.well-known/",
            "/v2/agents",
          ),
        ),
        fc.constantFrom("GET", "POST", "DELETE"),
      )
      .map(([path, method]) => ({ spec: undefined, method, url: `${BASE}${path}`, headers: {} }));

    test("every route answers hostile input with 4xx problem+json or a documented status, never 5xx, and a rejected request changes nothing", async () => {
      const runs = backend === "pglite" ? PGLITE_RUNS : POSTGRES_RUNS;
      const h = hints();
      const cases = fc.oneof(
        { weight: 20, arbitrary: fc.constantFrom(...routes).chain((spec) => requestFor(spec, h)) },
        { weight: 1, arbitrary: strayRequest },
      );
      let tried = 0;
      let skipped = 0;
      let fiveXx = 0;
      let rejectedWrites = 0;
      let handleMs = 0;
      let fpMs = 0;
      let fps = 0;
      const fp = async () => {
        const f0 = performance.now();
        const value = await fingerprint(t.db.database);
        fpMs += performance.now() - f0;
        fps++;
        return value;
      };
      const failures: string[] = [];
      const statuses = new Map<number, number>();
      const perRoute = new Map<string, number>();
      // Every case: one read of the write counter before and after. A rejected request that wrote rows
      // has its content fingerprint (row counts + content hash of the guarded tables) compared with the
      // one from before it, kept current across accepted writes.
      let known = await fp();
      let writes = await writeCount(t.db.database);
      let readsSince: string[] = [];
      const started = performance.now();
      await fc.assert(
        fc.asyncProperty(cases, async (c) => {
          let request: Request;
          try {
            request = new Request(c.url, {
              method: c.method,
              headers: c.headers,
              body: c.body as BodyInit | undefined,
            });
          } catch {
            skipped++; // the client itself refuses it (e.g. a URL it cannot parse): nothing reaches the server
            return true;
          }
          // Reads are not expected to write: their counter is checked in runs, before the next write.
          const write = !["GET", "HEAD", "OPTIONS"].includes(c.method);
          if (write && readsSince.length > 0) {
            const nowWrites = await writeCount(t.db.database);
            if (nowWrites !== writes) {
              failures.push(`rows written during these reads: ${readsSince.slice(-5).join(" | ")}`);
              writes = nowWrites;
              known = await fp();
            }
            readsSince = [];
          }
          tried++;
          const h0 = performance.now();
          const res = await t.app.handle(request);
          handleMs += performance.now() - h0;
          const { problems } = await violationsOf(c.spec, res, c.url);
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          const key = c.spec ? `${c.spec.method} ${c.spec.path}` : "unrouted";
          perRoute.set(key, (perRoute.get(key) ?? 0) + 1);
          if (res.status >= 500) fiveXx++;
          if (!write) readsSince.push(`${describeCase(c).slice(0, 200)} -> ${res.status}`);
          const nowWrites = write ? await writeCount(t.db.database) : writes;
          if (nowWrites !== writes) {
            writes = nowWrites;
            const after = await fp();
            if (res.status >= 400) {
              rejectedWrites++;
              if (after !== known) problems.push("database changed by a rejected request");
            }
            known = after;
          }
          if (problems.length && failures.length < 25)
            failures.push(`${problems.join("; ")} <- ${describeCase(c)} -> ${res.status}`);
          return true;
        }),
        { numRuns: runs, seed: SEED, endOnFailure: true },
      );
      const writesAtEnd = await writeCount(t.db.database);
      const fingerprintAtEnd = await fp();
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `fuzz [${backend}]: ${tried} cases tried (${skipped} refused by the client), ${fiveXx} 5xx found, ` +
          `${failures.length} failing, ${rejectedWrites} rejected requests that wrote rows (content compared), ${routes.length} routes, seed ${SEED}, ${seconds} s; handle ${Math.round(handleMs)} ms, ${fps} fingerprints ${Math.round(fpMs)} ms; statuses ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
      );
      recordFigures({
        suite: "fuzz",
        backend,
        check: "hostile-input",
        figures: {
          runs,
          tried,
          refusedByClient: skipped,
          fiveXx,
          violations: failures.length,
          rejectedThatWrote: rejectedWrites,
          databaseUnchanged: writesAtEnd === writes && fingerprintAtEnd === known,
          routes: routes.length,
          routesExercised: routes.filter((spec) => perRoute.has(`${spec.method} ${spec.path}`)).length,
          seed: SEED,
          seconds: Number(seconds),
        },
      });
      expect(writesAtEnd, "rows written by the last reads").toBe(writes);
      expect(fingerprintAtEnd).toBe(known);
      // Every route was exercised (a route missing here would be one added without reaching the fuzzer).
      for (const spec of routes)
        expect(
          perRoute.get(`${spec.method} ${spec.path}`) ?? 0,
          `${spec.method} ${spec.path}`,
        ).toBeGreaterThan(0);
      expect(failures).toEqual([]);
      expect(fiveXx).toBe(0);
      expect(tried + skipped).toBe(runs);
    }, 600_000);

    // -----------------------------------------------------------------------------------------------
    // Regressions: each was a 5xx (or a silent corruption) the fuzzer found, fixed at its root.
    // -----------------------------------------------------------------------------------------------
    describe("regressions", () => {
      const problem = async (res: Response, status: number, code: string) => {
        const text = await res.text();
        expect(res.status, text).toBe(status);
        expect(res.headers.get("content-type") ?? "").toStartWith("application/problem+json");
        const body = JSON.parse(text) as { code: string; errors?: Array<{ path: string; message: string }> };
        expect(body.code).toBe(code);
        return body;
      };
      // Clients of their own: whatever the fuzz run did to the others cannot change these answers.
      let adminToken = "";
      let ownerToken = "";
      beforeAll(async () => {
        adminToken = (await t.client(["admin"], "regressions admin")).token;
        ownerToken = (await t.client(["agents:write"], "regressions owner")).token;
      });
      const admin = () => adminToken;
      const owner = () => ownerToken;

      test("JSON nested 100,000 deep is 400 at parse (Elysia's validation error overflowed the stack: 500)", async () => {
        const before = await fingerprint(t.db.database);
        for (const [path, token] of [
          ["/v1/clients", admin()],
          ["/v1/agents", owner()],
          ["/agents/search", undefined],
        ] as const) {
          for (const text of [
            `${"[".repeat(100_000)}${"]".repeat(100_000)}`,
            `${'{"a":'.repeat(100_000)}1${"}".repeat(100_000)}`,
          ]) {
            const body = await problem(
              await t.request(path, { method: "POST", token, json: text }),
              400,
              "VALIDATION_FAILED",
            );
            expect(body.errors).toEqual([
              { path: "/body", message: `Nesting deeper than ${MAX_JSON_DEPTH} levels` },
            ]);
          }
        }
        expect(await fingerprint(t.db.database)).toBe(before);
      });

      test("a card nested deeper than its own limit is still 422 with a path (the body limit sits above it)", async () => {
        let deep: unknown = "leaf";
        for (let i = 0; i < 40; i++) deep = { d: deep };
        const body = await problem(
          await t.request("/v1/agents", {
            method: "POST",
            token: owner(),
            json: { card: freshCard("Deep", { extra: deep }) },
          }),
          422,
          "INVALID_AGENT_CARD",
        );
        expect(body.errors?.[0]?.path).toStartWith("/extra/d/d");
      });

      test("NUL characters are 400, not a 500 from Postgres, in bodies, queries, path params and forms", async () => {
        const before = await fingerprint(t.db.database);
        const cases: Array<
          [string, RequestInit & { json?: unknown; token?: string; form?: Record<string, string> }, string]
        > = [
          [
            "/v1/clients",
            { method: "POST", token: admin(), json: { name: "a\u0000b", scopes: ["admin"] } },
            "/body/name",
          ],
          [
            "/v1/agents",
            { method: "POST", token: owner(), json: { card: freshCard("Nul", { description: "x\u0000y" }) } },
            "/body/card/description",
          ],
          [
            "/v1/webhooks",
            {
              method: "POST",
              token: owner(),
              json: { url: "https://h.example.com/\u0000", events: ["agent.updated"] },
            },
            "/body/url",
          ],
          ["/v1/agents?skill=a%00b", {}, "/query"],
          ["/v1/search?tag=a%00b", {}, "/query"],
          [`/v1/agents/${pools.id![0]}/entitlements/cli%00x`, { method: "PUT", token: owner() }, "/params"],
        ];
        for (const [path, init, where] of cases) {
          const body = await problem(await t.request(path, init), 400, "VALIDATION_FAILED");
          expect(body.errors?.[0]?.path, path).toBe(where);
        }
        const token = await t.request("/oauth/token", {
          method: "POST",
          form: { grant_type: "client_credentials", client_id: "a\u0000", client_secret: "x" },
        });
        expect(token.status).toBe(400);
        expect(((await token.json()) as { error: string }).error).toBe("invalid_request");
        expect(await fingerprint(t.db.database)).toBe(before);
      });

      test("lone surrogates are 400 (a card: 500 from jsonb; a client name: stored mangled as U+FFFD)", async () => {
        const before = await fingerprint(t.db.database);
        const body = await problem(
          await t.request("/v1/agents", {
            method: "POST",
            token: owner(),
            json: { card: freshCard("Sur", { name: "x\udc00y" }) },
          }),
          400,
          "VALIDATION_FAILED",
        );
        expect(body.errors?.[0]?.path).toBe("/body/card/name");
        await problem(
          await t.request("/v1/clients", {
            method: "POST",
            token: admin(),
            json: { name: "a\ud800b", scopes: ["admin"] },
          }),
          400,
          "VALIDATION_FAILED",
        );
        // Key names too, and a well-formed pair is fine.
        await problem(
          await t.request("/v1/agents", {
            method: "POST",
            token: owner(),
            json: `{"card":${JSON.stringify(freshCard("K")).replace('{"', '{"\\ud800":1,"')}}`,
          }),
          400,
          "VALIDATION_FAILED",
        );
        expect(await fingerprint(t.db.database)).toBe(before);
        const emoji = await t.request("/v1/agents", {
          method: "POST",
          token: owner(),
          json: { card: freshCard("Emoji \ud83d\ude00") },
        });
        expect(emoji.status).toBe(201);
      });

      test("a card with a duplicated member name is 422 with its path, inline, by compat publish and nested", async () => {
        const before = await fingerprint(t.db.database);
        const card = JSON.stringify(freshCard("Dup"));
        const first = await problem(
          await t.request("/v1/agents", {
            method: "POST",
            token: owner(),
            json: `{"card":${card.replace('{"', '{"url":"http://169.254.169.254/","')}}`,
          }),
          422,
          "INVALID_AGENT_CARD",
        );
        expect(first.errors).toEqual([
          { path: "/url", message: expect.stringContaining("Duplicated member name") },
        ]);
        const nested = card.replace('"skills":[{', '"skills":[{"id":"shadow",');
        const second = await problem(
          await t.request("/agents/publish", { method: "POST", token: owner(), json: `{"card":${nested}}` }),
          422,
          "INVALID_AGENT_CARD",
        );
        expect(second.errors?.[0]?.path).toBe("/skills/0/id");
        expect(await fingerprint(t.db.database)).toBe(before);
      });
    });

    test("the route list is the app's own: every served route is fuzzed", () => {
      const served = t.app.routes
        .filter((r) => r.method !== "OPTIONS" && !r.path.startsWith("/docs"))
        .map((r) => `${r.method} ${r.path}`);
      expect(routes.map((r) => `${r.method} ${r.path}`).sort()).toEqual(served.sort());
      expect(routes.length).toBeGreaterThan(40);
    });
  });
}

describe("the NUL / lone surrogate pre-check on JSON text", () => {
  test("text of any value holding one passes the pre-check, so the walk that names the path still runs", () => {
    // Strings drawn from every UTF-16 code unit, so NULs and lone surrogates (both halves) are frequent.
    const units = fc.string({ unit: fc.integer({ min: 0, max: 0xffff }).map((n) => String.fromCharCode(n)) });
    fc.assert(
      fc.property(fc.jsonValue({ maxDepth: 4 }), units, units, (value, key, text) => {
        const holder = { [key]: [value, text] };
        const json = JSON.stringify(holder);
        if (unstorableStringPath(JSON.parse(json), "") !== undefined)
          expect(mayHoldUnstorable(json)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  test("escapes in either case are caught; plain text and well-formed pairs skip the walk", () => {
    for (const text of ['"\\u0000"', '"\\uD800"', '"\\udfff"', '{"\\uDc00":1}', '["a\\u0000"]'])
      expect(mayHoldUnstorable(text), text).toBe(true);
    for (const text of ['"plain"', '"\\u00e9"', '"\\u2603"', '"😀"', '{"a":[1,2,{"b":"c"}]}'])
      expect(mayHoldUnstorable(text), text).toBe(false);
  });
});
