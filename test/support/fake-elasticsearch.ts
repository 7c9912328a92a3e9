import { Client, errors } from "@elastic/elasticsearch";
import Mock from "@elastic/elasticsearch-mock";

/**
 * An in-memory stand-in for the slice of Elasticsearch the adapter uses, built on
 * @elastic/elasticsearch-mock: indices and aliases, bulk with external versions, search with the
 * query shapes the adapter sends (bool/term/multi_match phrase_prefix/fuzzy match), terms aggregations,
 * sort and search_after. It lets the shared search contract run through the real adapter and client.
 * Scoring is a crude stand-in (sum of boosts of matching clauses), so relevance is not judged here.
 * Every request is recorded, and `fail` injects errors (429, connection refused, ...) per operation.
 */

type Doc = Record<string, unknown> & { seq: number };
type Index = { docs: Map<string, { version: number; source: Doc }>; settings: unknown; mappings: unknown };
type Query = Record<string, unknown>;
export type RecordedRequest = { method: string; path: string; body: unknown; querystring: unknown };
type Operation = "bulk" | "search" | "create" | "health" | "refresh" | "alias" | "any";

const words = (value: unknown): string[] =>
  (Array.isArray(value) ? value : [value])
    .filter((v) => typeof v === "string")
    .flatMap(
      (v) =>
        (v as string)
          .toLowerCase()
          .normalize("NFKC")
          .match(/[\p{L}\p{N}]+/gu) ?? [],
    );

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let previous = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const current = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, previous + (a[i - 1] === b[j - 1] ? 0 : 1));
      previous = current;
    }
  }
  return row[b.length]!;
}

const autoFuzziness = (term: string) => (term.length <= 2 ? 0 : term.length <= 5 ? 1 : 2);

/** Field values as the mapping would index them (text fields fed by copy_to included). */
function fieldValue(doc: Doc, field: string): unknown {
  if (field === "skills_text") return doc.skills;
  if (field === "tags_text") return doc.tags;
  if (field === "name.keyword") return String(doc.name).toLowerCase();
  if (field === "provider.lower") return typeof doc.provider === "string" ? doc.provider.toLowerCase() : null;
  if (field.startsWith("name.suggest")) return doc.name;
  return doc[field];
}

function fieldAndBoost(spec: string): [string, number] {
  const [field, boost] = spec.split("^");
  return [field!, boost ? Number(boost) : 1];
}

/** Returns a score when the document matches (0 for a filter-only match), or undefined. */
function evaluate(query: Query, doc: Doc): number | undefined {
  const [kind, raw] = Object.entries(query)[0] as [string, Record<string, unknown>];
  switch (kind) {
    case "match_all":
      return 1;
    case "term": {
      const [field, spec] = Object.entries(raw)[0]!;
      const { value, boost = 1 } =
        typeof spec === "object" && spec !== null
          ? (spec as { value: unknown; boost?: number })
          : { value: spec };
      const actual = fieldValue(doc, field);
      const hit = Array.isArray(actual) ? actual.includes(value) : actual === value;
      return hit ? boost : undefined;
    }
    case "multi_match": {
      const { query: text, fields, type } = raw as { query: string; fields: string[]; type?: string };
      if (type !== "phrase_prefix") throw new Error(`fake: multi_match type ${type} not supported`);
      const token = words(text).join(" ");
      let best: number | undefined;
      for (const spec of fields) {
        const [field, boost] = fieldAndBoost(spec);
        if (words(fieldValue(doc, field)).some((word) => word.startsWith(token)))
          best = Math.max(best ?? 0, boost);
      }
      return best;
    }
    case "match": {
      const [field, spec] = Object.entries(raw)[0]! as [string, { query: string; boost?: number }];
      const fieldWords = words(fieldValue(doc, field));
      const ok = words(spec.query).every((term) =>
        fieldWords.some((word) => editDistance(term, word) <= autoFuzziness(term)),
      );
      return ok ? (spec.boost ?? 1) : undefined;
    }
    case "bool": {
      const {
        filter = [],
        must = [],
        should = [],
        minimum_should_match,
      } = raw as Record<string, Query[]> & {
        minimum_should_match?: number;
      };
      let score = 0;
      for (const clause of [...(filter as Query[]), ...(must as Query[])]) {
        const s = evaluate(clause, doc);
        if (s === undefined) return undefined;
        if ((must as Query[]).includes(clause)) score += s;
      }
      let matched = 0;
      for (const clause of should as Query[]) {
        const s = evaluate(clause, doc);
        if (s !== undefined) {
          matched++;
          score += s;
        }
      }
      const needed =
        minimum_should_match ?? ((must as Query[]).length + (filter as Query[]).length > 0 ? 0 : 1);
      if ((should as Query[]).length > 0 && matched < needed) return undefined;
      return score;
    }
    default:
      throw new Error(`fake: query ${kind} not supported`);
  }
}

export function createFakeElasticsearch() {
  const mock = new Mock();
  const indices = new Map<string, Index>();
  const aliases = new Map<string, string[]>();
  const requests: RecordedRequest[] = [];
  const failures = new Map<Operation, () => Error>();
  let rejectItemsWith: string | null = null;

  type Params = { method: string; path: string; body?: unknown; querystring?: unknown };
  // The mock types paths as string | string[]; every route here has one path.
  const on = (pattern: { method: string | string[]; path: string }, handler: (params: Params) => unknown) =>
    mock.add(pattern, (params) => handler(params as unknown as Params) as never);
  const resolveIndex = (name: string): Index[] => {
    const targets = aliases.get(name) ?? (indices.has(name) ? [name] : []);
    return targets.map((t) => indices.get(t)!).filter(Boolean);
  };
  const notFound = (index: string) =>
    new errors.ResponseError({
      body: { error: { type: "index_not_found_exception", reason: `no such index [${index}]` }, status: 404 },
      statusCode: 404,
      headers: {},
      warnings: null,
      meta: {} as never,
    });
  const record = (params: { method: string; path: string; body?: unknown; querystring?: unknown }) =>
    requests.push({
      method: params.method,
      path: params.path,
      body: params.body,
      querystring: params.querystring,
    });
  const injected = (operation: Operation) => failures.get(operation)?.() ?? failures.get("any")?.();

  on({ method: "HEAD", path: "/_alias/:name" }, (params) => {
    record(params);
    const error = injected("alias");
    if (error) return error;
    const name = params.path.split("/").pop()!;
    return aliases.has(decodeURIComponent(name))
      ? ""
      : new errors.ResponseError({
          body: "",
          statusCode: 404,
          headers: {},
          warnings: null,
          meta: {} as never,
        });
  });
  on({ method: "GET", path: "/_alias/:name" }, (params) => {
    record(params);
    const name = decodeURIComponent(params.path.split("/").pop()!);
    const targets = aliases.get(name);
    if (!targets) return notFound(name);
    return Object.fromEntries(targets.map((t) => [t, { aliases: { [name]: {} } }]));
  });
  on({ method: "PUT", path: "/:index" }, (params) => {
    record(params);
    const error = injected("create");
    if (error) return error;
    const name = decodeURIComponent(params.path.slice(1));
    if (indices.has(name))
      return new errors.ResponseError({
        body: { error: { type: "resource_already_exists_exception" }, status: 400 },
        statusCode: 400,
        headers: {},
        warnings: null,
        meta: {} as never,
      });
    const body = params.body as { settings: unknown; mappings: unknown; aliases?: Record<string, unknown> };
    indices.set(name, { docs: new Map(), settings: body.settings, mappings: body.mappings });
    for (const alias of Object.keys(body.aliases ?? {})) aliases.set(alias, [name]);
    return { acknowledged: true, index: name };
  });
  on({ method: "DELETE", path: "/:index" }, (params) => {
    record(params);
    const name = decodeURIComponent(params.path.slice(1));
    indices.delete(name);
    return { acknowledged: true };
  });
  on({ method: "PUT", path: "/:index/_settings" }, (params) => {
    record(params);
    return { acknowledged: true };
  });
  on({ method: ["POST", "GET"], path: "/:index/_refresh" }, (params) => {
    record(params);
    return injected("refresh") ?? { _shards: { total: 1, successful: 1, failed: 0 } };
  });
  on({ method: "GET", path: "/_cluster/health" }, (params) => {
    record(params);
    return injected("health") ?? { status: "green", number_of_nodes: 1 };
  });
  on({ method: "POST", path: "/_aliases" }, (params) => {
    record(params);
    const { actions } = params.body as { actions: Record<string, { index: string; alias: string }>[] };
    for (const action of actions) {
      const [kind, spec] = Object.entries(action)[0]!;
      const current = aliases.get(spec.alias) ?? [];
      if (kind === "remove")
        aliases.set(
          spec.alias,
          current.filter((i) => i !== spec.index),
        );
      else aliases.set(spec.alias, [...current.filter((i) => i !== spec.index), spec.index]);
    }
    return { acknowledged: true };
  });
  on({ method: "POST", path: "/_bulk" }, (params) => {
    record(params);
    const error = injected("bulk");
    if (error) return error;
    const lines = params.body as Record<string, unknown>[];
    const items: unknown[] = [];
    let errorsSeen = false;
    if (rejectItemsWith) {
      // A 200 whose items all failed: what a mapping error on every document looks like.
      for (const line of lines) {
        const [action, meta] = Object.entries(line)[0] as [string, { _id?: string }];
        if (action === "index" || action === "delete")
          items.push({ [action]: { _id: meta._id, status: 400, error: { type: rejectItemsWith } } });
      }
      return { took: 1, errors: true, items };
    }
    for (let i = 0; i < lines.length; i++) {
      const [action, meta] = Object.entries(lines[i]!)[0] as [
        string,
        { _index: string; _id: string; version?: number; version_type?: string },
      ];
      const target = resolveIndex(meta._index)[0];
      if (!target) {
        errorsSeen = true;
        items.push({
          [action]: { _id: meta._id, status: 404, error: { type: "index_not_found_exception" } },
        });
        if (action === "index") i++;
        continue;
      }
      const existing = target.docs.get(meta._id);
      const conflict =
        meta.version_type === "external" && existing && existing.version >= (meta.version ?? 0);
      if (action === "index") {
        const source = lines[++i] as Doc;
        if (conflict) {
          errorsSeen = true;
          items.push({
            index: { _id: meta._id, status: 409, error: { type: "version_conflict_engine_exception" } },
          });
        } else {
          target.docs.set(meta._id, { version: meta.version ?? (existing?.version ?? 0) + 1, source });
          items.push({ index: { _id: meta._id, status: existing ? 200 : 201, result: "created" } });
        }
      } else if (action === "delete") {
        if (!existing) {
          errorsSeen = true;
          items.push({
            delete: { _id: meta._id, status: 404, result: "not_found", error: { type: "not_found" } },
          });
        } else if (conflict) {
          errorsSeen = true;
          items.push({
            delete: { _id: meta._id, status: 409, error: { type: "version_conflict_engine_exception" } },
          });
        } else {
          target.docs.delete(meta._id);
          items.push({ delete: { _id: meta._id, status: 200, result: "deleted" } });
        }
      }
    }
    return { took: 1, errors: errorsSeen, items };
  });
  on({ method: ["POST", "GET"], path: "/:index/_search" }, (params) => {
    record(params);
    const error = injected("search");
    if (error) return error;
    const indexName = decodeURIComponent(params.path.split("/")[1]!);
    const targets = resolveIndex(indexName);
    if (targets.length === 0) return notFound(indexName);
    const body = params.body as {
      size: number;
      query: Query;
      sort: Record<string, unknown>[];
      search_after?: number[];
      aggs?: Record<string, { terms: { field: string; size: number } }>;
      track_total_hits?: boolean;
    };
    const byScore = body.sort.some((s) => "_score" in s);
    const matches: { doc: Doc; score: number }[] = [];
    for (const target of targets)
      for (const { source } of target.docs.values()) {
        const score = evaluate(body.query, source);
        if (score !== undefined) matches.push({ doc: source, score: byScore ? score : Number.NaN });
      }
    matches.sort((a, b) => (byScore ? b.score - a.score : 0) || b.doc.seq - a.doc.seq);
    const sortOf = (m: { doc: Doc; score: number }) => (byScore ? [m.score, m.doc.seq] : [m.doc.seq]);
    let page = matches;
    if (body.search_after) {
      const after = body.search_after;
      page = matches.filter((m) => {
        const key = sortOf(m);
        for (let i = 0; i < key.length; i++) if (key[i] !== after[i]) return key[i]! < after[i]!;
        return false;
      });
    }
    const aggregations: Record<string, unknown> = {};
    for (const [name, { terms }] of Object.entries(body.aggs ?? {})) {
      const counts = new Map<string, number>();
      for (const { doc } of matches) {
        const values = fieldValue(doc, terms.field);
        for (const value of new Set((Array.isArray(values) ? values : [values]).filter((v) => v != null)))
          counts.set(String(value), (counts.get(String(value)) ?? 0) + 1);
      }
      aggregations[name] = {
        buckets: [...counts]
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
          .slice(0, terms.size)
          .map(([key, doc_count]) => ({ key, doc_count })),
      };
    }
    return {
      took: 1,
      hits: {
        total: body.track_total_hits ? { value: matches.length, relation: "eq" } : undefined,
        hits: page.slice(0, body.size).map((m) => ({
          _index: indexName,
          _id: m.doc.id,
          _score: byScore ? m.score : null,
          sort: sortOf(m),
        })),
      },
      ...(body.aggs ? { aggregations } : {}),
    };
  });

  const client = new Client({
    node: "http://elasticsearch.test:9200",
    Connection: mock.getConnection(),
    maxRetries: 0,
  });

  return {
    client,
    requests,
    indices,
    aliases,
    /** Makes every request of that kind fail with the given error until `heal`. */
    fail(operation: Operation, error: () => Error) {
      failures.set(operation, error);
    },
    /** Bulk requests succeed at the HTTP level but every item fails with this error type. */
    rejectItems(type: string) {
      rejectItemsWith = type;
    },
    heal() {
      failures.clear();
      rejectItemsWith = null;
    },
    documents(alias = "a2a-agents") {
      return resolveIndex(alias).flatMap((index) => [...index.docs.values()].map((d) => d.source));
    },
  };
}

export type FakeElasticsearch = ReturnType<typeof createFakeElasticsearch>;

export const tooManyRequests = () =>
  new errors.ResponseError({
    body: { error: { type: "es_rejected_execution_exception" }, status: 429 },
    statusCode: 429,
    headers: {},
    warnings: null,
    meta: {} as never,
  });

export const connectionRefused = () => new errors.ConnectionError("connect ECONNREFUSED 127.0.0.1:9200");
