import { and, desc, getTableColumns, gt, inArray, isNull, type SQL, sql } from "drizzle-orm";
import { filterConditions, searchDocumentFromColumns, visibleTo } from "../../modules/agents/repo";
import type { Caller } from "../../modules/auth/model";
import { emptyFacets, type FacetCounts } from "../../modules/search/model";
import type { Database } from "../db/client";
import { agents } from "../db/schema";
import { queryTokens } from "./text";
import {
  type BackendQuery,
  FACET_SIZE,
  type ReindexProgress,
  type SearchBackend,
  type SearchPage,
  type SearchRow,
} from "./types";

const { searchDoc: _searchDoc, ...rowColumns } = getTableColumns(agents);

/** Facet prefixes in agents.facet_keys and the response facet each one feeds. */
const FACET_OF_PREFIX = {
  skill: "skills",
  tag: "tags",
  in: "inputModes",
  out: "outputModes",
  provider: "providers",
} as const satisfies Record<string, keyof FacetCounts>;

/**
 * What one query may cost, whatever it matches. Exact totals, facets and relevance order over every
 * match are O(matches): at 100k agents a common word or tag reads tens of thousands of rows (hundreds of
 * milliseconds) where the target is 15 ms. So, past these bounds, the answer says it is approximate
 * (`totalIsEstimate`) instead of reading everything; below them it is exact, as small registries and the
 * contract tests see it. Exact counts over everything remain the Elasticsearch backend's job.
 */
export type PostgresSearchLimits = {
  /** Total and facets are exact up to this many matches; past it they are estimated from a sample. */
  exactCount: number;
  /** Relevance order is exact up to this many matches; past it only the newest this many are ranked. */
  rankWindow: number;
  /** Matches older than the window whose name has every query word are ranked too: the newest this many. */
  nameWindow: number;
  /**
   * The typo-tolerant name match joins full text when no match has the query in its name, or full text
   * finds fewer than `fuzzyBelow`; it adds at most the newest `fuzzyWindow` similar names.
   */
  fuzzyBelow: number;
  fuzzyWindow: number;
};

export const DEFAULT_SEARCH_LIMITS: PostgresSearchLimits = {
  exactCount: 500,
  rankWindow: 200,
  nameWindow: 100,
  fuzzyBelow: 20,
  fuzzyWindow: 50,
};

/**
 * Total and facet counts are remembered per (who may see what, query), together with the highest
 * change sequence at the time: every change to an agent (and every entitlement change) takes a new
 * sequence number, so an equal maximum means nothing the counts depend on has changed. Hard deletes
 * (removing a peer's copies) need not move the maximum, hence the short lifetime as well. Concurrent
 * requests for one key share one computation.
 */
const FACET_CACHE_ENTRIES = 2000;
const FACET_CACHE_TTL_MS = 1000;

type Summary = { total: number; totalIsEstimate: boolean; facets: FacetCounts };
type FacetSample = { keys: string[]; provider: string | null };
type CountsEntry = { maxSeq: number; at: number; summary: Promise<Summary> };

function visibilityKey(caller: Caller): string {
  if (caller.kind !== "client") return "public";
  return caller.admin ? "admin" : `client:${caller.clientId}`;
}

const byCountThenValue = (a: [string, number], b: [string, number]) =>
  b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/**
 * The FACET_SIZE most frequent values, ties by value. Kept in a sorted array rather than sorting every
 * value: a facet sample has thousands of skill values seen once, and nearly all of them lose to the
 * array's last entry in one comparison.
 */
export function topFacetValues(counts: Map<string, number>): { value: string; count: number }[] {
  const top: [string, number][] = [];
  for (const entry of counts) {
    if (top.length === FACET_SIZE && byCountThenValue(entry, top[FACET_SIZE - 1]!) >= 0) continue;
    let lo = 0;
    let hi = top.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (byCountThenValue(top[mid]!, entry) <= 0) lo = mid + 1;
      else hi = mid;
    }
    top.splice(lo, 0, entry);
    if (top.length > FACET_SIZE) top.pop();
  }
  return top.map(([value, count]) => ({ value, count }));
}

/** The planner's row estimate from an EXPLAIN (FORMAT JSON) result, as postgres.js or PGlite return it. */
function plannedRows(rows: Record<string, unknown>[]): number {
  let plan = rows[0]?.["QUERY PLAN"];
  if (typeof plan === "string") plan = JSON.parse(plan);
  const top = (plan as { Plan?: { "Plan Rows"?: number } }[] | undefined)?.[0]?.Plan?.["Plan Rows"];
  return typeof top === "number" && Number.isFinite(top) ? top : 0;
}

/** Score given to matches past the ranking window: they follow every ranked match, newest first. */
const UNRANKED = 0;
/**
 * Word similarity a name needs to join a query that full text answers without any name match (pg_trgm's
 * default, 0.6, otherwise): one typo in a multi-word name keeps about 0.8 ("crimson anomaly gene" for
 * "Crimson Anomaly Genie": 0.9), one shared word of two stays under it.
 */
const NAMELESS_SIMILARITY = 0.75;
/** pg_trgm's default word similarity threshold, what `<%` tests unless told otherwise. */
const TRIGRAM_DEFAULT = 0.6;
/** Ranked matches score above UNRANKED even when their rank rounds to nothing. */
const MIN_RANKED = 0.000001;

/**
 * Search on Postgres itself (and PGlite): the weighted `search_doc` tsvector written with each change,
 * plus pg_trgm word similarity on the lower-cased name so a misspelt name still matches. The index is
 * the agents row, updated in the writing transaction, so this backend is always read-your-writes.
 */
export function createPostgresSearch(
  database: Database,
  limits: PostgresSearchLimits = DEFAULT_SEARCH_LIMITS,
): SearchBackend {
  const { db } = database;
  const countsCache = new Map<string, CountsEntry>();

  function textParts(tokens: string[]) {
    const phrase = tokens.join(" ");
    // Each word must occur in some weighted part; `simple` finds names, skills and tags as written,
    // `english` finds stemmed description words. Stop words vanish from the english query. The last word
    // matches as a prefix (the one being typed); earlier ones whole: a prefix makes the text index merge
    // the postings of every word it starts (all of data*, for "data"), several times the cost of a word.
    const termOf = (token: string, i: number) => (i === tokens.length - 1 ? `${token}:*` : token);
    const perToken = tokens.map((token, i) => {
      const term = termOf(token, i);
      return sql`(to_tsquery('simple', ${term}) || to_tsquery('english', ${term}))`;
    });
    const tsquery = sql`(${sql.join(perToken, sql` && `)})`;
    const fullText = sql`${agents.searchDoc} @@ ${tsquery}`;
    // The operator lets the trigram index find candidates at the session's threshold; the explicit
    // test makes a page's similar names the same whatever threshold the index used for them.
    const fuzzyName = (similarity: number) =>
      similarity === TRIGRAM_DEFAULT
        ? sql`${phrase} <% lower(${agents.name})`
        : sql`(${phrase} <% lower(${agents.name}) and word_similarity(${phrase}, lower(${agents.name})) >= ${similarity})`;
    const exactName = sql`lower(${agents.name}) = ${phrase}`;
    // Every word in the name, tested on the name itself: `search_doc @@ 'word:A'` is served by the text
    // index only with a recheck of every row that has the word anywhere (300 ms for a common one).
    const nameQuery = sql.join(
      tokens.map((token, i) => sql`to_tsquery('simple', ${termOf(token, i)})`),
      sql` && `,
    );
    const inName = sql`to_tsvector('simple', ${agents.name}) @@ (${nameQuery})`;
    const substring = (token: string) => sql`lower(${agents.name}) like ${`%${token}%`}`;
    // The substring tests let the trigram index on lower(name) find the candidates: the names with the
    // word: up to about 2,000 for the commonest name words at 100k. (Space-delimited patterns spare the
    // substrings of other words, Stone for "one", but cost an index scan each and measured no better.)
    // A word under three letters has no trigram to look up.
    const long = tokens.filter((token) => token.length >= 3).map(substring);
    const nameMatch = long.length === 0 ? undefined : sql`(${sql.join(long, sql` and `)} and ${inName})`;
    // Whether a match may have the query in its name, only to decide on the typo pass: substrings are
    // enough there, and cheaper than parsing each name.
    const nameLike = sql`(${sql.join(tokens.map(substring), sql` and `)})`;
    // Rank weights {D, C, B, A}: a name hit outweighs a skill or tag hit, which outweighs a description
    // hit. Strict word similarity (whole words of the name) rewards near-misses without letting a long
    // name win on one shared word: "pricnig translator" ranks "Pricing Translator" above every
    // "... Translator Pro". An exact name wins outright. Rounded so the keyset cursor compares exactly
    // the value it was given.
    const score = sql<number>`round((ts_rank('{0.05,0.2,0.4,1.0}', ${agents.searchDoc}, ${tsquery})
      + 0.5 * strict_word_similarity(${phrase}, lower(${agents.name}))
      + (${exactName})::int)::numeric, 6)::float8`;
    return { fullText, fuzzyName, nameLike, nameMatch, score, words: tokens.length };
  }

  type TextParts = ReturnType<typeof textParts>;

  /**
   * Which matches a text query ranks, as the cursor carries it (seq boundaries, all optional but
   * `window`): full-text matches newer than `window`; name matches (every word in the name) newer than
   * `names`; similar names newer than `fuzzy` (word similarity at least `similarity`, pg_trgm's 0.6 when
   * absent), which also makes them matches. A part absent is empty.
   */
  type Cut = { window: number; names?: number; fuzzy?: number; similarity?: number };

  /**
   * The similar names a cut admits, named by id: each statement that needs them would otherwise run the
   * trigram match again, at the session's threshold rather than the cut's (hundreds of candidate names
   * where the cut's finds a few), inside an OR that keeps the planner from using either index well.
   */
  type Similar = string[] | undefined;
  const similarIn = (similar: Similar) =>
    similar && similar.length > 0 ? inArray(agents.id, similar) : undefined;

  /** Every match of a text query: full text, plus the similar names its cut admits. */
  const matchesUnder = (base: SQL | undefined, text: TextParts, similar: Similar) => {
    const named = similarIn(similar);
    return and(base, named ? sql`(${text.fullText} or ${named})` : text.fullText);
  };

  /**
   * The ranked matches, part by part: as one condition the planner reads every full-text match (21,000
   * for "statistics": 250 ms) and tests each, where each part alone has an index that finds just it.
   */
  function rankedMatches(base: SQL | undefined, text: TextParts, cut: Cut, similar: Similar) {
    const parts = [
      sql`select ${agents.id} from ${agents} where ${and(matchesUnder(base, text, similar), sql`${agents.seq} > ${cut.window}`)}`,
    ];
    if (cut.names !== undefined && text.nameMatch)
      parts.push(
        sql`select ${agents.id} from ${agents} where ${and(base, text.nameMatch, sql`${agents.seq} > ${cut.names}`)}`,
      );
    const named = similarIn(similar);
    if (named) parts.push(sql`select ${agents.id} from ${agents} where ${and(base, named)}`);
    return sql`${agents.id} in (${sql.join(parts, sql` union all `)})`;
  }

  /** Whether a match is in the ranked part (the seq test first: it spares the others most rows). */
  function rankedUnder(text: TextParts, cut: Cut, similar: Similar) {
    const parts = [sql`${agents.seq} > ${cut.window}`];
    if (cut.names !== undefined && text.nameMatch)
      parts.push(sql`(${agents.seq} > ${cut.names} and ${text.nameMatch})`);
    const named = similarIn(similar);
    if (named) parts.push(named);
    return sql`coalesce((${sql.join(parts, sql` or `)}), false)`;
  }

  /**
   * Total and top facet values over the matches, exact while they number at most `exactCount`. Past
   * that, facets are counted over the first `exactCount + 1` matches the scan meets and scaled to the
   * planner's estimate of the total (never below what was seen), and the summary says so.
   */
  async function computeSummary(where: SQL | undefined, taken?: FacetSample[]): Promise<Summary> {
    const sample = limits.exactCount + 1;
    // Counted here rather than by unnest + group by: the bounded sample is a few thousand keys, which a
    // Map counts in a fraction of what the executor spends per unnested row.
    const rows =
      taken ??
      (await database.rows<FacetSample>(sql`
        select ${agents.facetKeys} as keys, ${agents.provider} as provider from ${agents} where ${where}
        limit ${sample}`));
    const seen = rows.length;
    const totalIsEstimate = seen >= sample;
    const counted = new Map<string, number>();
    for (const row of rows) {
      for (const key of row.keys) counted.set(key, (counted.get(key) ?? 0) + 1);
      if (row.provider !== null) {
        const key = `provider:${row.provider}`;
        counted.set(key, (counted.get(key) ?? 0) + 1);
      }
    }
    let total = seen;
    if (totalIsEstimate) total = Math.max(Math.round(await estimatedRows(where)), sample);
    const scale = totalIsEstimate ? total / seen : 1;
    const byFacet = new Map<keyof FacetCounts, Map<string, number>>();
    for (const [key, n] of counted) {
      const colon = key.indexOf(":");
      const facet = FACET_OF_PREFIX[key.slice(0, colon) as keyof typeof FACET_OF_PREFIX];
      if (!facet) continue;
      const values = byFacet.get(facet) ?? new Map<string, number>();
      byFacet.set(facet, values);
      values.set(key.slice(colon + 1), n);
    }
    const facets = emptyFacets();
    // Ordered by what was counted: rounding scaled counts could tie values the sample told apart.
    for (const [facet, values] of byFacet)
      facets[facet] = topFacetValues(values).map(({ value, count }) => ({
        value,
        count: Math.max(1, Math.round(count * scale)),
      }));
    return { total, totalIsEstimate, facets };
  }

  /** The remembered counts of a query when still fresh, and what to remember new ones under. */
  async function rememberedCounts(query: BackendQuery, tokens: string[]) {
    const key = `${visibilityKey(query.caller)}|${tokens.join(" ")}|${JSON.stringify(query.filters)}`;
    const [{ maxSeq }] = (await database.rows<{ maxSeq: number | null }>(
      sql`select max(${agents.seq})::float8 as "maxSeq" from ${agents}`,
    )) as [{ maxSeq: number | null }];
    const cached = countsCache.get(key);
    // An entry still being computed counts as fresh: concurrent requests share one computation.
    const fresh =
      cached && cached.maxSeq === (maxSeq ?? 0) && performance.now() - cached.at < FACET_CACHE_TTL_MS;
    return {
      key,
      maxSeq: Number(maxSeq ?? 0),
      summary: fresh && !query.consistent ? cached.summary : undefined,
    };
  }

  function remember(key: string, maxSeq: number, summary: Promise<Summary>) {
    const entry: CountsEntry = { maxSeq, at: Number.POSITIVE_INFINITY, summary };
    if (countsCache.size >= FACET_CACHE_ENTRIES) countsCache.delete(countsCache.keys().next().value!);
    countsCache.delete(key);
    countsCache.set(key, entry);
    // Fresh from when the counts were read, not when asked for; a failed computation is not kept.
    summary.then(
      () => {
        entry.at = performance.now();
      },
      () => {
        if (countsCache.get(key) === entry) countsCache.delete(key);
      },
    );
  }

  type PageRow = SearchRow & { score: number };

  /** The records of ranked hits, in the given order, with their scores. */
  async function rowsOf(ranked: { id: string; score: number }[]): Promise<PageRow[]> {
    if (ranked.length === 0) return [];
    const rows = await db
      .select(rowColumns)
      .from(agents)
      .where(
        inArray(
          agents.id,
          ranked.map((hit) => hit.id),
        ),
      );
    const byId = new Map(rows.map((row) => [row.id, row as SearchRow]));
    return ranked.flatMap((hit) => {
      const row = byId.get(hit.id);
      return row ? [{ ...row, score: Number(hit.score) }] : [];
    });
  }

  let tableRows = { n: 0, at: Number.NEGATIVE_INFINITY };

  // A request's condition is one object from the scan choice to the estimated total: plan it once.
  const estimates = new WeakMap<SQL, Promise<number>>();

  /** The planner's estimate of how many rows a condition selects (no execution). */
  function estimatedRows(where: SQL | undefined): Promise<number> {
    const known = where && estimates.get(where);
    if (known) return known;
    const filter = where ? sql`where ${where}` : sql``;
    const estimate = database
      .rows(sql`explain (format json) select 1 from ${agents} ${filter}`)
      .then((rows) => plannedRows(rows));
    if (where) estimates.set(where, estimate);
    return estimate;
  }

  /**
   * Whether the newest `wanted` matches are best found by walking seq backwards (common words: a few
   * rows per match) rather than by collecting every match from the text index and sorting (rare words).
   * The planner makes this choice itself but, assuming matches spread evenly, walks backwards for
   * words matching a few percent of agents, reading tens of thousands of rows; this picks by the
   * break-even point, matches x matches = wanted x rows, from the same estimates.
   */
  async function readNewestFirst(where: SQL | undefined, wanted: number) {
    if (performance.now() - tableRows.at > 60_000)
      tableRows = { n: await estimatedRows(undefined), at: performance.now() };
    const matches = await estimatedRows(where);
    return matches * matches > wanted * tableRows.n;
  }

  type Ranked = { id: string; seq: number; score: number };
  type TextPage = {
    rows: PageRow[];
    cut?: Cut;
    matches: SQL | undefined;
    sample?: FacetSample[];
  };

  /**
   * The newest `limit` rows of a condition with their scores. The scores are taken in an outer query
   * so that only the rows kept are scored, not every candidate the sort sees.
   */
  async function newestScored(
    where: SQL | undefined,
    limit: number,
    score: SQL,
    similarity = TRIGRAM_DEFAULT,
  ) {
    type Row = { id: string; seq: number; score: number; keys: string[]; provider: string | null };
    // `seq + 0`: left to itself the planner walks seq backwards through tens of thousands of rows to
    // find a few hundred names, where the trigram index finds them at once.
    const statement = sql`
      select ${agents.id} as id, ${agents.seq}::float8 as seq, ${score} as score, ${agents.facetKeys} as keys,
        ${agents.provider} as provider
      from ${agents}
      where ${agents.id} in (
        select ${agents.id} from ${agents} where ${where} order by ${agents.seq} + 0 desc limit ${limit})`;
    // The trigram index applies the threshold itself, so a higher one spares it the candidates, not only
    // the results; it holds for this transaction only.
    const rows =
      similarity === TRIGRAM_DEFAULT
        ? await database.rows<Row>(statement)
        : await db.transaction(async (tx) => {
            await tx.execute(
              sql`select set_config('pg_trgm.word_similarity_threshold', ${String(similarity)}, true)`,
            );
            return database.rows<Row>(statement, tx);
          });
    return rows
      .map((row) => ({ ...row, seq: Number(row.seq), score: Number(row.score) }))
      .sort((x, y) => y.seq - x.seq);
  }

  /**
   * One page of a text query. Relevance order over every match costs a rank per match (tens of thousands
   * for a common word), so only some matches are ranked: the newest `rankWindow` full-text matches (all
   * of them for any query that selective), plus the newest `nameWindow` older ones with every query word
   * in the name, so a name beats a description at any size; plus, when no match has the query in its
   * name (or full text finds very little), the newest `fuzzyWindow` similar names, for a misspelt name.
   * Every other match follows the ranked ones, newest first, with score 0. Each part is fixed by a seq
   * boundary that the cursor carries, so later pages rank the same matches and list the same rest.
   */
  async function textPage(
    query: BackendQuery,
    base: SQL | undefined,
    text: TextParts,
    wantSample: boolean,
  ): Promise<TextPage> {
    const take = query.limit + 1;
    const after = query.after;
    const score = sql<number>`greatest(${text.score}, ${MIN_RANKED})`;
    if (after) {
      // A cursor without a window (Elasticsearch's, or a page that ranked every match) ranks everything.
      const cut: Cut = {
        window: after.window ?? 0,
        names: after.names,
        fuzzy: after.fuzzy,
        similarity: after.similarity,
      };
      const similar =
        cut.fuzzy === undefined
          ? undefined
          : (
              await newestScored(
                and(
                  base,
                  text.fuzzyName(cut.similarity ?? TRIGRAM_DEFAULT),
                  sql`${agents.seq} > ${cut.fuzzy}`,
                ),
                limits.fuzzyWindow,
                score,
                cut.similarity,
              )
            ).map((row) => row.id);
      const matches = matchesUnder(base, text, similar);
      let ranked: { id: string; score: number }[] = [];
      if (after.score > UNRANKED)
        ranked = (
          await db
            .select({ id: agents.id, score })
            .from(agents)
            .where(
              and(
                rankedMatches(base, text, cut, similar),
                sql`(${score}, ${agents.seq}) < (${after.score}::float8, ${after.seq})`,
              ),
            )
            .orderBy(desc(score), desc(agents.seq))
            .limit(take)
        ).map((row) => ({ id: row.id, score: Number(row.score) }));
      const rows = await rowsOf(ranked);
      return { rows: await withRest(rows, take, matches, text, cut, similar, after), cut, matches };
    }

    // One scan of the newest full-text matches serves the ranking window (the row past it marks the
    // boundary) and, when counts are wanted, the facet sample: the same rows are not read twice.
    const scanned = wantSample ? Math.max(limits.rankWindow, limits.exactCount) + 1 : limits.rankWindow + 1;
    const fullText = and(base, text.fullText);
    const newestFirst = await readNewestFirst(fullText, scanned);
    // `seq + 0` is not what agents_seq_key orders: the planner then collects the matches from the
    // text index and sorts them, instead of walking seq backwards past every non-match.
    const order = newestFirst ? sql`${agents.seq} desc` : sql`${agents.seq} + 0 desc`;
    const rows = await database.rows<{
      id: string | null;
      seq: number | null;
      score: number | null;
      boundary: number | null;
      scanned: number | null;
      named: boolean | null;
      sid: string | null;
      keys: string[] | null;
      provider: string | null;
    }>(sql`
      with s as materialized (
        select ${agents.id} as id, ${agents.seq} as seq, ${agents.facetKeys} as keys,
          ${agents.provider} as provider
        from ${agents} where ${fullText} order by ${order} limit ${scanned}
      ), w as (
        select id, seq from s order by seq desc limit ${limits.rankWindow + 1}
      ), b as (
        select min(seq) as boundary from w having count(*) > ${limits.rankWindow}
      ), x as (
        select ${agents.id} as id, ${agents.seq} as seq, ${score} as score, ${text.nameLike} as named
        from ${agents} join w on w.id = ${agents.id}
        where w.seq > coalesce((select boundary from b), -1)
      ), r as (
        select id, seq, score from x order by 3 desc, 2 desc limit ${take}
      )
      select r.id, r.seq::float8 as seq, r.score, (select boundary::float8 from b) as boundary,
        (select count(*)::int from s) as scanned, (select bool_or(named) from x) as named,
        null::uuid as sid, null::text[] as keys, null::text as provider
      from r
      ${wantSample ? sql`union all select null, null, null, null, null, null, s.id, s.keys, s.provider from s` : sql``}`);
    const hits = rows.filter((row) => row.id !== null);
    const found = rows.find((row) => row.scanned !== null)?.scanned ?? 0;
    const marker = hits[0]?.boundary;
    const cut: Cut = { window: marker === null || marker === undefined ? 0 : Number(marker) };
    const candidates: Ranked[] = hits.map((row) => ({
      id: row.id!,
      seq: Number(row.seq),
      score: Number(row.score),
    }));
    let named = hits.some((row) => row.named === true);
    // Older than the window, a name with every query word: found by the trigram index on the name, so
    // it costs what the names hold (hundreds of rows for a common word), not what the descriptions do.
    if (cut.window > 0 && text.nameMatch) {
      const older = await newestScored(
        // `seq + 0`: the seq index would only add every older row to a bitmap of a few hundred.
        and(base, text.nameMatch, sql`${agents.seq} + 0 <= ${cut.window}`),
        limits.nameWindow + 1,
        score,
      );
      if (older.length > 0) {
        named = true;
        cut.names = older.length > limits.nameWindow ? older[limits.nameWindow]!.seq : 0;
        candidates.push(...older.slice(0, limits.nameWindow));
      }
    } else if (cut.window > 0) named = true; // words too short to look up by name: leave typos alone
    let similar: Awaited<ReturnType<typeof newestScored>> = [];
    if ((!named && text.words > 1) || found < limits.fuzzyBelow) {
      // Full text finding little means a misspelt word; finding no match with the query in its name, for
      // several words, may mean a misspelt name whose words other agents use (one word that many agents
      // use is a word, not a misspelling). That second case asks for a name like the
      // whole query: at pg_trgm's 0.6, one long word shared ("data pipeline" for every "... Pipeline
      // ..." name) is enough, and the index hands over hundreds of names to check.
      const similarity = found < limits.fuzzyBelow ? TRIGRAM_DEFAULT : NAMELESS_SIMILARITY;
      similar = await newestScored(
        and(base, text.fuzzyName(similarity)),
        limits.fuzzyWindow + 1,
        score,
        similarity,
      );
      if (similarity !== TRIGRAM_DEFAULT) cut.similarity = similarity;
      cut.fuzzy = similar.length > limits.fuzzyWindow ? similar[limits.fuzzyWindow]!.seq : 0;
      similar = similar.slice(0, limits.fuzzyWindow);
      candidates.push(...similar);
    }
    // Each part is sorted by score already or small: the page is the best `take` of their union.
    const seen = new Set<string>();
    const ranked = candidates
      .sort((x, y) => y.score - x.score || y.seq - x.seq)
      .filter((hit) => !seen.has(hit.id) && seen.add(hit.id))
      .slice(0, take);
    const matches = matchesUnder(
      base,
      text,
      similar.map((row) => row.id),
    );
    let sample: FacetSample[] | undefined;
    if (wantSample) {
      const inScan = rows.filter((row) => row.id === null);
      sample = inScan.map((row) => ({ keys: row.keys!, provider: row.provider }));
      // A scan that read every full-text match plus the similar names is every match: still exact.
      if (inScan.length < scanned) {
        const ids = new Set(inScan.map((row) => row.sid));
        for (const row of similar)
          if (!ids.has(row.id)) sample.push({ keys: row.keys, provider: row.provider });
      }
    }
    const page = await rowsOf(ranked);
    return {
      rows: await withRest(
        page,
        take,
        matches,
        text,
        cut,
        similar.map((row) => row.id),
      ),
      cut,
      matches,
      sample,
    };
  }

  /** Fills a page past the ranked matches with the rest, newest first, each after the cursor's. */
  async function withRest(
    rows: PageRow[],
    take: number,
    matches: SQL | undefined,
    text: TextParts,
    cut: Cut,
    similar: Similar,
    after?: BackendQuery["after"],
  ): Promise<PageRow[]> {
    if (cut.window === 0 || rows.length >= take) return rows;
    const rest = await db
      .select({ ...rowColumns, score: sql<number>`${UNRANKED}::float8` })
      .from(agents)
      .where(
        and(
          matches,
          sql`${agents.seq} <= ${cut.window}`,
          sql`not ${rankedUnder(text, cut, similar)}`,
          after?.score === UNRANKED ? sql`${agents.seq} < ${after.seq}` : undefined,
        ),
      )
      .orderBy(desc(agents.seq))
      .limit(take - rows.length);
    return [...rows, ...rest.map((row) => ({ ...(row as SearchRow), score: UNRANKED }))];
  }

  async function page(
    query: BackendQuery,
    base: SQL | undefined,
    text: TextParts | undefined,
    wantSample: boolean,
  ): Promise<TextPage> {
    if (text) return textPage(query, base, text, wantSample);
    const after = query.after ? sql`${agents.seq} < ${query.after.seq}` : undefined;
    const rows = await db
      .select({ ...rowColumns, score: sql<number>`0::float8` })
      .from(agents)
      .where(and(base, after))
      .orderBy(desc(agents.seq))
      .limit(query.limit + 1);
    return { rows: rows.map((row) => ({ ...(row as SearchRow), score: 0 })), matches: base };
  }

  return {
    name: "postgres",

    async search(query: BackendQuery): Promise<SearchPage> {
      const tokens = queryTokens(query.text);
      const base = and(isNull(agents.deletedAt), visibleTo(query.caller), ...filterConditions(query.filters));
      const remembered = query.withFacets ? await rememberedCounts(query, tokens) : undefined;
      // The page first: it settles whether the typo-tolerant name match takes part, which the counts
      // follow, and the first page of a text query reads the facet sample in the same scan.
      const text = tokens.length > 0 ? textParts(tokens) : undefined;
      const wantSample = remembered !== undefined && remembered.summary === undefined && !query.after;
      const { rows, cut, matches, sample } = await page(query, base, text, wantSample);
      let summary: Summary | undefined;
      if (remembered?.summary) summary = await remembered.summary;
      else if (remembered) {
        const computed = computeSummary(matches, sample);
        remember(remembered.key, remembered.maxSeq, computed);
        summary = await computed;
      }
      const hits = rows.slice(0, query.limit);
      return {
        hits: hits.map(({ score: hitScore, ...row }) => ({
          id: row.id,
          score: Number(hitScore),
          seq: row.seq,
          row: row as SearchRow,
        })),
        hasMore: rows.length > query.limit,
        total: summary?.total ?? 0,
        totalIsEstimate: summary?.totalIsEstimate ?? false,
        facets: summary?.facets ?? emptyFacets(),
        window: cut && cut.window > 0 ? cut.window : undefined,
        names: cut?.names,
        fuzzy: cut?.fuzzy,
        similarity: cut?.similarity,
      };
    },

    async index() {
      // The search document is written with the row, in the same transaction: nothing to do.
    },

    async health() {
      const started = performance.now();
      await database.ping();
      return { status: "ok", latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    },

    /** Rebuilds every row's search document and facet keys from its columns, in batches, in place. */
    async reindexAll(progress?: ReindexProgress) {
      const [{ n: total }] = (await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents}`,
      )) as [{ n: number }];
      let done = 0;
      let lastSeq = -1;
      progress?.(0, Number(total));
      for (;;) {
        const batch = await database.rows<{ seq: number }>(sql`
          update ${agents} set
            ${sql.identifier("search_doc")} = ${searchDocumentFromColumns()},
            ${sql.identifier("facet_keys")} =
              array(select 'skill:' || unnest(${agents.skills})) || array(select 'tag:' || unnest(${agents.tags})) ||
              array(select 'in:' || unnest(${agents.inputModes})) || array(select 'out:' || unnest(${agents.outputModes}))
          where ${agents.id} in (
            select ${agents.id} from ${agents} where ${gt(agents.seq, lastSeq)} order by ${agents.seq} limit 1000
          )
          returning ${agents.seq}::float8 as seq`);
        if (batch.length === 0) break;
        done += batch.length;
        lastSeq = Math.max(...batch.map((row) => Number(row.seq)));
        progress?.(done, Number(total));
      }
      countsCache.clear();
      return { indexed: done };
    },

    async refresh() {
      // Always current: the index is the row.
    },
  };
}
