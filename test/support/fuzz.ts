/**
 * Property-based fuzzing of every route the app serves (test/fuzz.test.ts).
 *
 * Routes come from the app itself (app.routes) and their parameters, queries and bodies from its own
 * OpenAPI document (/docs/json), so a route added tomorrow is fuzzed without touching this file. Each
 * case is one request built by fast-check: schema-shaped values most of the time (so requests get past
 * the first check and reach the services), mutated with hostile values: wrong types, huge strings, deep
 * nesting, NUL bytes, lone surrogates, invalid UTF-8 bytes, prototype-pollution keys, duplicated JSON
 * keys, numbers at the edges, wrong content types, malformed percent-encoding and absurd headers.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { sql } from "drizzle-orm";
import fc from "fast-check";
import type { App } from "../../src/app";
import { ERROR_CODES } from "../../src/errors";
import type { Database } from "../../src/infra/db/client";
import { BASE } from "./app";

export type JsonSchema = {
  $ref?: string;
  type?: string | string[];
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  const?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  minItems?: number;
  maxItems?: number;
  format?: string;
};

type Operation = {
  parameters?: Array<{ in: string; name: string; required?: boolean; schema?: JsonSchema }>;
  requestBody?: { content?: Record<string, { schema?: JsonSchema }> };
  responses?: Record<string, unknown>;
};
type OpenApi = {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, JsonSchema> };
};

export type RouteSpec = {
  method: string;
  /** Elysia template, e.g. /v1/agents/:id */
  path: string;
  pathParams: string[];
  query: Array<{ name: string; schema: JsonSchema }>;
  body?: { kind: "json" | "form"; schema: JsonSchema };
  /** Statuses below 400 the OpenAPI document promises for this route. */
  documented: Set<number>;
};

const toOpenApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");

/** Every route of the app (but the Swagger UI itself), described from its own OpenAPI document. */
export async function discoverRoutes(app: App): Promise<{ routes: RouteSpec[]; doc: OpenApi }> {
  const res = await app.handle(new Request(`${BASE}/docs/json`));
  if (res.status !== 200) throw new Error(`/docs/json answered ${res.status}`);
  const doc = (await res.json()) as OpenApi;
  const resolve = (schema: JsonSchema | undefined): JsonSchema => {
    let node = schema ?? {};
    for (let hops = 0; node.$ref && hops < 10; hops++) {
      const name = node.$ref.split("/").pop()!;
      node = doc.components?.schemas?.[name] ?? {};
    }
    return node;
  };
  const routes: RouteSpec[] = [];
  for (const route of app.routes) {
    if (route.method === "OPTIONS" || route.path.startsWith("/docs")) continue;
    const op = doc.paths[toOpenApiPath(route.path)]?.[route.method.toLowerCase()];
    const pathParams = [...route.path.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]!);
    const query = (op?.parameters ?? [])
      .filter((p) => p.in === "query")
      .map((p) => ({ name: p.name, schema: resolve(p.schema) }));
    const content = op?.requestBody?.content ?? {};
    let body: RouteSpec["body"];
    if (content["application/json"])
      body = { kind: "json", schema: resolve(content["application/json"].schema) };
    else if (content["application/x-www-form-urlencoded"])
      body = { kind: "form", schema: resolve(content["application/x-www-form-urlencoded"].schema) };
    const documented = new Set(
      Object.keys(op?.responses ?? {})
        .map(Number)
        .filter((s) => s < 400),
    );
    if (documented.size === 0) documented.add(200);
    routes.push({ method: route.method, path: route.path, pathParams, query, body, documented });
  }
  return { routes, doc };
}

// ---------------------------------------------------------------------------------------------------
// Hostile values
// ---------------------------------------------------------------------------------------------------

export const PROTO_KEYS = ["__proto__", "constructor", "prototype"] as const;

/** An object with an own property named `key` (an object literal would set the prototype instead). */
export function withOwnKey(base: Record<string, unknown>, key: string, value: unknown) {
  const copy: Record<string, unknown> = { ...base };
  Object.defineProperty(copy, key, { value, enumerable: true, writable: true, configurable: true });
  return copy;
}

const nested = (depth: number, leaf: unknown, asObject: boolean): unknown => {
  let value = leaf;
  for (let i = 0; i < depth; i++) value = asObject ? { a: value } : [value];
  return value;
};

const HUGE = "x".repeat(200_000);

/** Strings that break naive code: NUL, lone surrogates, control and bidi characters, huge, SQL-ish. */
export const nastyString: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(
    "",
    " ",
    "\u0000",
    "a\u0000b",
    "\ud800",
    "x\udfffy",
    "\uffff",
    "\u202e\u200b",
    "\r\n",
    "'; drop table agents; --",
    "%",
    "%00",
    ["$", "{7*7}"].join(""),
    "../../etc/passwd",
    "null",
    "NaN",
    "-0",
    "1e309",
    "9007199254740993",
    "__proto__",
    "constructor",
    "😀".repeat(300),
  ),
  fc.integer({ min: 257, max: 70_000 }).map((n) => HUGE.slice(0, n)),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.string({ maxLength: 20 }).map((s) => `${s}\u0000${s}`),
);

const edgeNumber: fc.Arbitrary<number> = fc.constantFrom(
  -0,
  0,
  -1,
  1.5,
  2 ** 31,
  2 ** 53 + 1,
  -(2 ** 53) - 1,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_VALUE,
  Number.MIN_VALUE,
  1e-320,
);

/** Any JSON value, biased towards the ones code forgets about. */
export const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: nastyString },
  { weight: 2, arbitrary: edgeNumber },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, [], {}, [null], { "": "" }) },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.integer({ min: 20, max: 200 }), fc.boolean())
      .map(([depth, asObject]) => nested(depth, 1, asObject)),
  },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.constantFrom(...PROTO_KEYS), fc.jsonValue({ maxDepth: 2 }))
      .map(([key, value]) => withOwnKey({}, key, value)),
  },
  { weight: 1, arbitrary: fc.array(fc.constant("x"), { minLength: 300, maxLength: 3000 }) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
);

// ---------------------------------------------------------------------------------------------------
// Schema-shaped values
// ---------------------------------------------------------------------------------------------------

const SAMPLE_FORMATS: Record<string, fc.Arbitrary<string>> = {
  "date-time": fc.constantFrom(
    "2024-01-01T00:00:00Z",
    "1970-01-01T00:00:00.000Z",
    "2999-12-31T23:59:59+14:00",
  ),
  uuid: fc.uuid(),
  uri: fc.constantFrom("https://example.com/a2a", "http://127.0.0.1:1/x"),
};

/** A value that fits `schema` (most of the time): what gets a request past validation into the service. */
export function fromSchema(
  schema: JsonSchema,
  hints: Record<string, fc.Arbitrary<unknown>> = {},
  depth = 0,
): fc.Arbitrary<unknown> {
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives?.length) return fc.oneof(...alternatives.map((s) => fromSchema(s, hints, depth + 1)));
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case "string": {
      if (schema.format && SAMPLE_FORMATS[schema.format]) return SAMPLE_FORMATS[schema.format]!;
      const min = schema.minLength ?? 0;
      const max = Math.min(schema.maxLength ?? 40, min + 40);
      const edge: string[] = [];
      if (schema.maxLength !== undefined && schema.maxLength < 5000)
        edge.push("y".repeat(schema.maxLength), "y".repeat(schema.maxLength + 1));
      return edge.length
        ? fc.oneof(
            { weight: 6, arbitrary: fc.string({ minLength: min, maxLength: max }) },
            { weight: 1, arbitrary: fc.constantFrom(...edge) },
          )
        : fc.string({ minLength: min, maxLength: max });
    }
    case "integer":
    case "number": {
      const min = schema.minimum ?? -1000;
      const max = schema.maximum ?? 1000;
      const edges = [min, max, min - 1, max + 1].filter((n) => Number.isSafeInteger(n));
      return fc.oneof(
        { weight: 4, arbitrary: fc.integer({ min: Math.max(min, -1e9), max: Math.min(max, 1e9) }) },
        { weight: 1, arbitrary: fc.constantFrom(...edges) },
      );
    }
    case "boolean":
      return fc.boolean();
    case "null":
      return fc.constant(null);
    case "array": {
      const items = schema.items ? fromSchema(schema.items, hints, depth + 1) : fc.jsonValue({ maxDepth: 1 });
      return fc.array(items, {
        minLength: schema.minItems ?? 0,
        maxLength: Math.min(schema.maxItems ?? 4, (schema.minItems ?? 0) + 4),
      });
    }
    case "object": {
      const properties = schema.properties ?? {};
      if (Object.keys(properties).length === 0 || depth > 4)
        return fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 1 }), { maxKeys: 3 });
      const model: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [name, sub] of Object.entries(properties))
        model[name] = hints[name]
          ? fc.oneof(
              { weight: 3, arbitrary: hints[name]! },
              { weight: 1, arbitrary: fromSchema(sub, hints, depth + 1) },
            )
          : fromSchema(sub, hints, depth + 1);
      return fc.record(model, { requiredKeys: (schema.required ?? []).filter((k) => k in model) as never[] });
    }
    default:
      // Unconstrained (t.Unknown): a card, for instance. Hints give realistic ones.
      return fc.jsonValue({ maxDepth: 3 });
  }
}

/** A schema-shaped value with one hostile change somewhere (or none). */
export function mutated(value: unknown): fc.Arbitrary<unknown> {
  if (value === null || typeof value !== "object") return fc.oneof(fc.constant(value), nastyValue);
  const keys = Array.isArray(value) ? value.map((_, i) => String(i)) : Object.keys(value);
  const choices: fc.Arbitrary<unknown>[] = [fc.constant(value), nastyValue];
  if (keys.length > 0)
    choices.push(
      fc.tuple(fc.constantFrom(...keys), fc.nat(3)).chain(([key, how]) => {
        const child = (value as Record<string, unknown>)[key];
        return (how === 0 ? nastyValue : mutated(child)).map((replacement) => {
          if (Array.isArray(value)) {
            const copy = [...value];
            copy[Number(key)] = replacement;
            return copy;
          }
          return { ...(value as Record<string, unknown>), [key]: replacement };
        });
      }),
    );
  if (!Array.isArray(value))
    choices.push(
      fc
        .tuple(fc.oneof(fc.constantFrom(...PROTO_KEYS), fc.string({ maxLength: 10 })), nastyValue)
        .map(([key, extra]) => withOwnKey(value as Record<string, unknown>, key, extra)),
    );
  return fc.oneof(...choices);
}

// ---------------------------------------------------------------------------------------------------
// Request text: bodies, paths, queries, headers
// ---------------------------------------------------------------------------------------------------

const NUMBER_TOKEN = /(?<=[:,[]\s*)-?\d+(\.\d+)?([eE][+-]?\d+)?(?=\s*[,\]}])/;

/** Textual damage JSON.stringify cannot produce: duplicated keys, NaN and friends, truncation, BOM. */
export function damageJsonText(text: string): fc.Arbitrary<string> {
  const options: fc.Arbitrary<string>[] = [
    fc.constant(text),
    fc.nat(Math.max(0, text.length - 1)).map((n) => text.slice(0, n)),
    fc.constant(`\ufeff${text}`),
    fc
      .constantFrom(
        "NaN",
        "Infinity",
        "-Infinity",
        "1e309",
        "-0",
        "9007199254740993",
        "0x10",
        "1.",
        ".5",
        "+1",
      )
      .map((n) => (NUMBER_TOKEN.test(text) ? text.replace(NUMBER_TOKEN, n) : `{"n":${n}}`)),
    fc.constantFrom(
      '{"a":1,"a":2}',
      "[1,]",
      "{'a':1}",
      '{"a":1}{"b":2}',
      "nul",
      '"\\ud800"',
      '"\\u0000"',
      '{"a":"\u0000"}',
    ),
  ];
  if (text.startsWith("{") && text.length > 2) {
    const keys = Object.keys(JSON.parse(text) as object);
    if (keys.length)
      options.push(
        fc
          .tuple(fc.constantFrom(...keys), nastyValue)
          .map(
            ([key, value]) => `{${JSON.stringify(key)}:${JSON.stringify(value) ?? "null"},${text.slice(1)}`,
          ),
      );
  }
  return fc.oneof(...options);
}

/** Bytes that are not UTF-8 (or not the UTF-8 of a scalar value), spliced into an encoded body. */
export function invalidUtf8(text: string): fc.Arbitrary<Uint8Array> {
  const bytes = new TextEncoder().encode(text);
  const bad = fc.constantFrom(
    [0xff],
    [0xfe, 0xff],
    [0xc0, 0xaf],
    [0xed, 0xa0, 0x80],
    [0xe0, 0xa4],
    [0xf8, 0x88, 0x80, 0x80, 0x80],
    [0x00],
  );
  return fc.tuple(fc.nat(bytes.length), bad).map(([at, insert]) => {
    const out = new Uint8Array(bytes.length + insert.length);
    out.set(bytes.subarray(0, at), 0);
    out.set(insert, at);
    out.set(bytes.subarray(at), at + insert.length);
    return out;
  });
}

/** encodeURIComponent that survives lone surrogates (a URL cannot carry them; bodies still do). */
export const enc = (s: string) => encodeURIComponent(s.toWellFormed());

/** Percent-encodings a URL parser leaves alone and a decoder chokes on. */
export const malformedPercent = fc.constantFrom(
  "%",
  "%2",
  "%zz",
  "%E0%A4%A",
  "%C0%AF",
  "%FF",
  "%ED%A0%80",
  "%00",
  "%%",
  "%u0041",
  "%2e%2e",
  "%2F",
);

/** A path segment: a real id from the pool, a random one, or a hostile one (encoded or raw). */
export function segment(pool: readonly string[]): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 4, arbitrary: pool.length ? fc.constantFrom(...pool) : fc.uuid() },
    { weight: 2, arbitrary: fc.uuid() },
    { weight: 3, arbitrary: nastyString.map((s) => enc(s.slice(0, 5000))) },
    {
      weight: 2,
      arbitrary: fc.tuple(fc.string({ maxLength: 6 }), malformedPercent).map(([a, b]) => `${enc(a)}${b}`),
    },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }).map(enc) },
  );
}

/** A query string over the route's own parameters plus strangers, with hostile values and encodings. */
export function queryString(
  spec: RouteSpec,
  hints: Record<string, fc.Arbitrary<unknown>>,
): fc.Arbitrary<string> {
  const known = spec.query.map((q) => q.name);
  const key = fc.oneof(
    { weight: 6, arbitrary: known.length ? fc.constantFrom(...known) : fc.string({ maxLength: 8 }) },
    { weight: 1, arbitrary: fc.constantFrom(...PROTO_KEYS, "a[b]", "a[]", "constructor[prototype][x]") },
    { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
  );
  const valueFor = (name: string): fc.Arbitrary<string> => {
    const schema = spec.query.find((q) => q.name === name)?.schema;
    const shaped = schema
      ? (hints[name] ?? fromSchema(schema)).map((v) =>
          typeof v === "string" ? v : (JSON.stringify(v) ?? ""),
        )
      : fc.string({ maxLength: 10 });
    return fc.oneof(
      { weight: 5, arbitrary: shaped },
      { weight: 3, arbitrary: nastyString.map((s) => s.slice(0, 20_000)) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          "NaN",
          "1e309",
          "-0",
          "9007199254740993",
          "Infinity",
          "true",
          "[]",
          "{}",
          "0x1f",
          " 1",
          "1 ",
        ),
      },
    );
  };
  const pair = key.chain((k) =>
    fc.tuple(fc.constant(k), valueFor(k), fc.nat(9)).map(([name, value, how]) => {
      if (how === 0)
        return `${enc(name)}=${enc(value.slice(0, 4))}${["%", "%zz", "%E0%A4%A", "%FF", "%C0%AF"][value.length % 5]}`;
      if (how === 1) return enc(name);
      return `${enc(name)}=${enc(value)}`;
    }),
  );
  return fc.array(pair, { maxLength: 6 }).map((pairs) => (pairs.length ? `?${pairs.join("&")}` : ""));
}

const latin1Printable = fc.string({
  unit: fc
    .integer({ min: 0x20, max: 0xff })
    .filter((c) => c !== 0x7f)
    .map((c) => String.fromCharCode(c)),
  maxLength: 60,
});

/** Headers nobody sends on purpose. Values stay legal ByteStrings (the client would refuse others). */
export const absurdHeaders: fc.Arbitrary<Record<string, string>> = fc.record(
  {
    "x-request-id": fc.oneof(
      latin1Printable,
      fc.constant("r".repeat(5000)),
      fc.constant("../../x"),
      fc.constant("a b"),
    ),
    "if-none-match": fc.oneof(
      fc.constant("*"),
      latin1Printable,
      fc.constant(`"${"e".repeat(8000)}"`),
      fc.constant(Array(500).fill('W/"x"').join(", ")),
    ),
    accept: fc.oneof(
      latin1Printable,
      fc.constantFrom(
        "text/html;q=NaN, application/json;q=abc",
        "*/*;q=1e309",
        "application/json;q=-1",
        "text/html",
        "",
      ),
    ),
    "x-forwarded-for": fc.oneof(latin1Printable, fc.constant("1.1.1.1, ".repeat(2000))),
    "accept-encoding": fc.constantFrom("gzip, deflate, br", "identity;q=0", "*;q=0"),
    "content-length": fc.constantFrom("-1", "abc", "99999999999999999999999", "1e3", "0", " 5"),
    cookie: fc.oneof(latin1Printable, fc.constant("a=b; ".repeat(3000))),
    "x-junk": fc.constant("j".repeat(60_000)),
  },
  { requiredKeys: [] },
);

export const CONTENT_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "APPLICATION/JSON",
  "application/merge-patch+json",
  "application/x-www-form-urlencoded",
  "text/plain",
  "multipart/form-data; boundary=x",
  "application/xml",
  "application/json; charset=latin1",
  ";;;",
  "application/json, text/plain",
  "",
] as const;

// ---------------------------------------------------------------------------------------------------
// Database fingerprint
// ---------------------------------------------------------------------------------------------------

/** Tables a rejected request must leave exactly as they were. */
export const GUARDED_TABLES = [
  "agents",
  "agent_versions",
  "clients",
  "entitlements",
  "webhooks",
  "peers",
] as const;

/**
 * A row-level trigger on every guarded table counts the rows written (inserted, updated, deleted) in
 * committed transactions: one cheap read tells whether a request wrote anything, and the content
 * fingerprint below is taken only when it did. Installed in the test database only.
 */
export async function installWriteCounter(database: Database) {
  await database.rows(sql.raw("create table if not exists fuzz_writes (n bigint not null)"));
  await database.rows(
    sql.raw("insert into fuzz_writes select 0 where not exists (select 1 from fuzz_writes)"),
  );
  await database.rows(
    sql.raw(`create or replace function fuzz_count_write() returns trigger language plpgsql as $$
      begin update fuzz_writes set n = n + 1; return null; end $$`),
  );
  for (const table of GUARDED_TABLES)
    await database.rows(
      sql.raw(`create or replace trigger fuzz_count_write after insert or update or delete on ${table}
        for each row execute function fuzz_count_write()`),
    );
}

/** Rows written to the guarded tables since installWriteCounter. */
export async function writeCount(database: Database): Promise<number> {
  const rows = await database.rows<{ n: string | number }>(sql.raw("select n from fuzz_writes"));
  return Number(rows[0]!.n);
}

/** Row counts and a content hash of the guarded tables, in one query. */
export async function fingerprint(database: Database): Promise<string> {
  const parts = GUARDED_TABLES.map((table) =>
    sql.raw(
      `(select count(*)::text || ':' || coalesce(sum(hashtextextended(t::text, 0))::text, '-') from ${table} t)`,
    ),
  );
  const rows = await database.rows<{ fp: string }>(
    sql`select concat_ws(' ', ${sql.join(parts, sql`, `)}) as fp`,
  );
  return rows[0]!.fp;
}

// ---------------------------------------------------------------------------------------------------
// Checking one answer
// ---------------------------------------------------------------------------------------------------

/** What a database or runtime error message looks like: never to be shown to a caller. */
const STACK_OR_SQL =
  /\n\s+at |node_modules|\/work\/|Failed query|syntax error at or near|violates .*constraint|duplicate key value|relation "|column "|invalid input syntax|invalid byte sequence|unsupported Unicode escape|PGlite|postgres:\/\//i;

/** What is wrong with one answer (empty: nothing). */
export async function violationsOf(
  spec: RouteSpec | undefined,
  res: Response,
  url: string,
): Promise<{ problems: string[]; text: string }> {
  const problems: string[] = [];
  const text = await res.text();
  const status = res.status;
  if (status >= 500) problems.push(`5xx: ${status}`);
  if (!res.headers.get("x-request-id")) problems.push("no x-request-id");
  if (status >= 400) {
    const type = res.headers.get("content-type") ?? "";
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      problems.push(`error body is not JSON: ${text.slice(0, 80)}`);
    }
    // RFC 6749 5.2 governs every error of the token endpoint, whatever the method.
    const onTokenPath = new URL(url).pathname === "/oauth/token";
    const oauth = onTokenPath && type.startsWith("application/json") && typeof body?.error === "string";
    if (!oauth) {
      if (!type.startsWith("application/problem+json")) problems.push(`error content-type ${type}`);
      if (body) {
        const code = body.code as keyof typeof ERROR_CODES;
        if (!(code in ERROR_CODES)) problems.push(`unknown code ${String(code)}`);
        else if (ERROR_CODES[code].status !== status) problems.push(`code ${code} with status ${status}`);
        if (body.status !== status) problems.push(`body status ${String(body.status)} != ${status}`);
        if (body.requestId !== res.headers.get("x-request-id"))
          problems.push("requestId differs from header");
        for (const field of ["type", "title", "detail"])
          if (typeof body[field] !== "string") problems.push(`problem without ${field}`);
      }
    }
    if (STACK_OR_SQL.test(text)) problems.push(`internals in error body: ${text.slice(0, 200)}`);
  } else if (spec) {
    if (!spec.documented.has(status))
      problems.push(`undocumented status ${status} for ${spec.method} ${spec.path}`);
  }
  return { problems, text };
}

// ---------------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------------

const FIXTURES = join(import.meta.dir, "../../../shared/fixtures/agent-cards");
export const weatherCard = JSON.parse(
  readFileSync(join(FIXTURES, "valid/weather-0.3.json"), "utf8"),
) as Record<string, unknown>;
export const translatorCard = JSON.parse(
  readFileSync(join(FIXTURES, "valid/translator-1.0.json"), "utf8"),
) as Record<string, unknown>;

let unique = 0;
/** A valid 0.3 card with a url (and name) of its own. */
export { cardFor as freshCard } from "./federation";

/** Cards one hostile change away from valid: the deepest path into card validation and storage. */
export const hostileCard: fc.Arbitrary<unknown> = fc.constantFrom("0.3", "1.0").chain((generation) => {
  const url = `https://fuzz-${unique++}-${process.pid}.example.com/a2a`;
  const base =
    generation === "0.3"
      ? { ...weatherCard, url }
      : {
          ...translatorCard,
          supportedInterfaces: [{ url, protocolBinding: "JSONRPC", protocolVersion: "1.0" }],
        };
  return mutated(base);
});
