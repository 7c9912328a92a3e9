import { and, inArray, type SQL, sql } from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import { attributeConditions, LISTED_COLUMNS, visibleTo, wantedFacetKeys } from "../../modules/agents/repo";
import type { Caller } from "../../modules/auth/model";
import { emptyFacets, type FacetCounts } from "../../modules/search/model";
import type { Database } from "../db/client";
import { agentSearch, agents, facetValues } from "../db/schema";
import { queryTokens } from "./text";
import {
  type BackendQuery,
  FACET_SIZE,
  type ReindexProgress,
  type SearchBackend,
  type SearchPage,
  type SearchRow,
} from "./types";

/** The search rows: what every matching, ranking and counting statement reads (see agentSearch). */
const S = agentSearch;

/**
 * The prefixes of the keys facet_values numbers (an agent's facet keys, and "provider:<name>") and the
 * response facet of each, by the prefix's first letter (each is different).
 */
const FACET_PREFIXES: Record<string, [prefix: string, facet: keyof FacetCounts]> = {
  s: ["skill:", "skills"],
  t: ["tag:", "tags"],
  i: ["in:", "inputModes"],
  o: ["out:", "outputModes"],
  p: ["provider:", "providers"],
};
/** The response facets, in the order of their codes in the backend's memory of facet values. */
const FACETS = Object.values(FACET_PREFIXES).map(([, facet]) => facet);
/** The code of a facet value whose key has no known prefix. */
const NOT_A_FACET = 255;

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
  /**
   * How a first text page finds its newest matches: walking seq backwards ("walk"), collecting them
   * from the text index ("collect") or from the filters' indexes ("filters"). Unset, as in production:
   * chosen per query from the planner's estimates. Set by the tests, whose few agents would always
   * take one way, to run each way over the same corpus.
   */
  scan?: "walk" | "collect" | "filters";
};

export const DEFAULT_SEARCH_LIMITS: PostgresSearchLimits = {
  exactCount: 500,
  // 100 rather than 200: the walk that finds a common word's window and the scoring of it are most of a
  // broad query's cost, and halving the window cut 16 % of Postgres CPU and a fifth of the p95 of the
  // broad kinds at 100k agents. Name matches are ranked apart (nameWindow), so a name still wins.
  rankWindow: 100,
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
/** Planner estimates kept across requests (see estimatedRows). */
const ESTIMATE_CACHE_ENTRIES = 2000;
const ESTIMATE_TTL_MS = 60_000;
/** Facet values remembered by number and by key (facetValuesOf, facetIdsOf): a few MB. */
const FACET_KEYS_KEPT = 200_000;

type Summary = { total: number; totalIsEstimate: boolean; facets: FacetCounts };
type CountsEntry = { maxSeq: number; at: number; summary: Promise<Summary> };

/**
 * Facet values counted over some matches, by number (agent_search.facet_ids: the facet keys plus
 * "provider:<name>"): `seen` matches, each counted once per value it has; `complete` when they are every
 * match. A count per number in an array: a sample is thousands of small numbers, and a Map keyed by the
 * texts cost a millisecond a search.
 */
class Tally {
  seen = 0;
  counts: Uint32Array;
  /** The numbers counted at least once, in the order first met. */
  readonly counted: number[] = [];
  /** `counts`: zeroed, sized for the numbers expected (it grows past them). */
  constructor(
    public complete: boolean,
    counts: Uint32Array,
  ) {
    this.counts = counts;
  }

  /** Zeroes what was counted and hands the array over: the tally is not used again. */
  release(): Uint32Array {
    const { counts } = this;
    for (const id of this.counted) counts[id] = 0;
    return counts;
  }

  /**
   * Counts a sample as the statements send it (sampleOf): `<matches>,` then the numbers of every
   * match's values, comma-separated (a match without values leaves an empty field). Read in place: a
   * sample of 500 matches is some 60 KB, and splitting it would allocate a string per number.
   */
  addSample(sample: string | null | undefined) {
    if (!sample) return;
    let i = sample.indexOf(",");
    this.seen += Number(sample.slice(0, i < 0 ? sample.length : i));
    if (i < 0) return;
    let { counts } = this;
    const { counted } = this;
    const end = sample.length;
    let id = -1;
    for (i++; i <= end; i++) {
      const digit = i < end ? sample.charCodeAt(i) - 48 : -1;
      if (digit >= 0 && digit <= 9) {
        id = id < 0 ? digit : id * 10 + digit;
        continue;
      }
      if (id < 0) continue;
      if (id >= counts.length) {
        const grown = new Uint32Array(Math.max(id + 1, counts.length * 2));
        grown.set(counts);
        counts = grown;
        this.counts = grown;
      }
      const before = counts[id]!;
      counts[id] = before + 1;
      if (before === 0) counted.push(id);
      id = -1;
    }
  }
}

function visibilityKey(caller: Caller): string {
  if (caller.kind !== "client") return "public";
  return caller.admin ? "admin" : `client:${caller.clientId}`;
}

const byCountThenValue = (a: [string, number], b: [string, number]) =>
  b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

/**
 * The positions (0 to `count` - 1) of the `size` first items in an order, in that order. Kept in a sorted
 * array rather than sorting every item: a facet sample has thousands of skill values seen once, and
 * nearly all of them lose to the array's last entry in one comparison.
 */
function mostCounted(count: number, before: (a: number, b: number) => number, size: number): number[] {
  const top: number[] = [];
  for (let item = 0; item < count; item++) {
    if (top.length === size && before(item, top[size - 1]!) >= 0) continue;
    let lo = 0;
    let hi = top.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (before(top[mid]!, item) <= 0) lo = mid + 1;
      else hi = mid;
    }
    top.splice(lo, 0, item);
    if (top.length > size) top.pop();
  }
  return top;
}

/** The FACET_SIZE most frequent values, ties by value. */
export function topFacetValues(counts: Iterable<[string, number]>): { value: string; count: number }[] {
  const entries = [...counts];
  return mostCounted(entries.length, (a, b) => byCountThenValue(entries[a]!, entries[b]!), FACET_SIZE).map(
    (i) => ({ value: entries[i]![0], count: entries[i]![1] }),
  );
}

/**
 * How a facet sample travels, over rows with an `ids` column (facet_ids): one text value, the number of
 * matches and then every number (see Tally.addSample). Never an array per match: reading a few hundred
 * arrays through the driver cost more than the query.
 */
const sampleOf = sql`count(*) || ',' || coalesce(string_agg(array_to_string(ids, ','), ','), '')`;

/**
 * Resolves once the database driver has sent the statements issued before it: postgres.js holds a small
 * statement back until setImmediate, so work started right after issuing one would run before it is even
 * sent instead of while Postgres executes it. Immediates queued from an immediate run in the next turn.
 */
const afterQueuedWrites = () => new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)));

/** A statement awaited later: its failure is not reported as unhandled while other work runs first. */
function awaitedLater<T>(pending: Promise<T>): Promise<T> {
  pending.catch(() => {});
  return pending;
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
/** How many times the rows the planner's estimate needs a newest-first walk may read (firstTextPage). */
const WALK_SLACK = 3;
/**
 * The relative costs behind the choice of scan (firstTextPage), measured at 100k agents (µs of Postgres
 * CPU): walking seq backwards reads on through the same pages with one test per row; collecting a match
 * fetches a page of its own (then sorts); an index posting of a word is read for less.
 */
const SCAN_COST = { walkedRow: 0.45, fetchedRow: 2, posting: 0.5 };

/**
 * Search on Postgres itself (and PGlite): the weighted `search_doc` tsvector of each agent's search row
 * (agent_search, written by triggers in the writing statement), plus pg_trgm word similarity on the
 * lower-cased name so a misspelt name still matches. Every matching, ranking and counting statement
 * reads the narrow search rows; only the page's hits are read from agents. Read-your-writes always.
 */
export function createPostgresSearch(
  database: Database,
  limits: PostgresSearchLimits = DEFAULT_SEARCH_LIMITS,
): SearchBackend {
  const { db } = database;
  const countsCache = new Map<string, CountsEntry>();

  function textParts(tokens: string[], filtered: boolean) {
    const phrase = tokens.join(" ");
    const last = tokens.length - 1;
    // Each word must occur in some weighted part; `simple` finds names, skills and tags as written,
    // `english` finds stemmed description words. Stop words vanish from the english query. The last word
    // matches as a prefix (the one being typed); earlier ones whole: a prefix makes the text index merge
    // the postings of every word it starts (all of data*, for "data"), several times the cost of a word.
    const termOf = (token: string, i: number) => (i === last ? `${token}:*` : token);
    const terms = tokens.map(termOf);
    const perToken = terms.map(
      (term) => sql`(to_tsquery('simple', ${term}) || to_tsquery('english', ${term}))`,
    );
    const tsquery = sql`(${sql.join(perToken, sql` && `)})`;
    const fullText = sql`${S.searchDoc} @@ ${tsquery}`;
    /** A query's parts, one per word, with the last word's prefix as the whole words it starts. */
    const lastAsWords = (parts: SQL[], stemmed: boolean) =>
      parts.map((part, i) =>
        i === last ? sql`agent_search_prefix(${tokens[i]!}, ${sql.raw(String(stemmed))})` : part,
      );
    // The same matches for a scan the text index drives: the last word's prefix as the whole words it
    // starts (agent_search_prefix, migration 0013), which the index skips through instead of reading
    // every posting of them. Computed once per statement (a subquery, not per row), and only where the
    // index finds the rows: tested row by row, one prefix is cheaper than a list of words.
    const indexedParts = lastAsWords(perToken, true);
    const fullTextIndexed = sql`${S.searchDoc} @@ (select ${sql.join(indexedParts, sql` && `)})`;
    // The same test in a form no index serves, for when another index should find the rows.
    const fullTextUnindexed = sql`coalesce(${S.searchDoc} @@ ${tsquery}, false)`;
    // The operator lets the trigram index find candidates at pg_trgm's threshold. A higher similarity
    // asks agent_search_similar_names for them, which sets the threshold for its own scan: the index
    // then spares the candidates, not only the results (at 0.6, "data pipeline" hands over hundreds of
    // "... Pipeline ..." names to check, where 0.75 finds a few). The explicit test makes a page's
    // similar names the same whatever threshold the index used for them.
    // A higher similarity is asked when the query's words are all real words (full text found them):
    // then agent_search_similar_names also asks a name to share with each of them a trigram other than
    // the two that open it (migrations 0012, 0015). Word similarity compares trigram sets, so a name
    // lacking a short word reaches 0.75 on a long one alone ("kyc spreadsheet": every "... Spreadsheet
    // ..." name; "data dashboard": every "... Dashboard ...", whose words open like "data"), while a
    // misspelt word keeps some of its inner trigrams.
    // The phrase of `<%` goes in as a subquery's value: given a constant, the planner estimates the
    // operator by testing the phrase against a sample of names (0.8 of 1 ms planning a typo's similar
    // names, against 0.2), and the trigram index is the way to the rows whatever the estimate.
    const fuzzyName = (similarity: number) =>
      similarity === TRIGRAM_DEFAULT
        ? sql`(select ${phrase}::text) <% ${S.name}`
        : sql`(${S.id} in (select agent_search_similar_names(${phrase}, ${similarity}::real))
          and word_similarity(${phrase}, ${S.name}) >= ${similarity})`;

    // Every word in the name, tested on the name's own words, which an index holds (agent_search_name_words):
    // `search_doc @@ 'word:A'` is served by the text index only with a recheck of every row that has the
    // word anywhere, and substrings through the trigram index hand over names with the word inside
    // another (Stone for "one") to be parsed one by one.
    const nameParts = tokens.map((token, i) => sql`to_tsquery('simple', ${termOf(token, i)})`);
    const nameQuery = sql.join(nameParts, sql` && `);
    // Without filters the name index is the only way to the names, whatever the planner estimates: the
    // last word's prefix goes in as the whole words it starts, as for fullTextIndexed (a common name
    // word's prefix, "companion:*", made the index merge its postings: 3 ms, where the words take 1.3),
    // computed once in a subquery, which also spares planning its estimate (0.3-0.4 ms). With filters
    // the estimate decides whether their index joins the name index's (a tag's 5,000 postings for 900
    // names), so the planner is given the query itself.
    const wordsOfNames = sql.join(lastAsWords(nameParts, false), sql` && `);
    const nameMatch = filtered
      ? sql`to_tsvector('simple', ${S.name}) @@ (${nameQuery})`
      : sql`to_tsvector('simple', ${S.name}) @@ (select ${wordsOfNames})`;
    // Whether a match may have the query in its name, only to decide on the typo pass: substrings are
    // enough there, and cheaper than parsing each name.
    const nameLike = (name: SQL) =>
      sql`(${sql.join(
        tokens.map((token) => sql`${name} like ${`%${token}%`}`),
        sql` and `,
      )})`;
    // Rank weights {D, C, B, A}: a name hit outweighs a skill or tag hit, which outweighs a description
    // hit. Strict word similarity (whole words of the name) rewards near-misses without letting a long
    // name win on one shared word: "pricnig translator" ranks "Pricing Translator" above every
    // "... Translator Pro". An exact name wins outright. Rounded so the keyset cursor compares exactly
    // the value it was given; never below MIN_RANKED, so a ranked match sorts above the unranked rest.
    const scoreOf = (
      doc: SQL,
      name: SQL,
    ) => sql<number>`greatest(round((ts_rank('{0.05,0.2,0.4,1.0}', ${doc}, ${tsquery})
      + 0.5 * strict_word_similarity(${phrase}, ${name})
      + (${name} = ${phrase})::int)::numeric, 6)::float8, ${MIN_RANKED})`;
    const score = scoreOf(sql`${S.searchDoc}`, sql`${S.name}`);
    return {
      terms,
      /**
       * One word's part of fullText, alone, for the planner's estimate only (kept per word: see
       * estimatedMatches). The last word as the whole words it starts, which the planner evaluates and
       * estimates one by one from the documents' statistics: a prefix it estimates from a formula, about
       * twice the matches ("spreadsheet:*": 37,429 where 20,763 match; as words, 20,898), and walks it
       * chose on that found too few and collected after.
       */
      termMatch: (i: number) => sql`${S.searchDoc} @@ ${indexedParts[i]!}`,
      fullText,
      fullTextIndexed,
      fullTextUnindexed,
      fuzzyName,
      nameLike,
      nameMatch,
      score,
      scoreOf,
      words: tokens.length,
    };
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
    similar && similar.length > 0 ? inArray(S.id, similar) : undefined;

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
      sql`select ${S.id} from ${S} where ${and(matchesUnder(base, text, similar), sql`${S.seq} > ${cut.window}`)}`,
    ];
    if (cut.names !== undefined)
      parts.push(
        sql`select ${S.id} from ${S} where ${and(base, text.nameMatch, sql`${S.seq} > ${cut.names}`)}`,
      );
    const named = similarIn(similar);
    if (named) parts.push(sql`select ${S.id} from ${S} where ${and(base, named)}`);
    return sql`${S.id} in (${sql.join(parts, sql` union all `)})`;
  }

  /** Whether a match is in the ranked part (the seq test first: it spares the others most rows). */
  function rankedUnder(text: TextParts, cut: Cut, similar: Similar) {
    const parts = [sql`${S.seq} > ${cut.window}`];
    if (cut.names !== undefined) parts.push(sql`(${S.seq} > ${cut.names} and ${text.nameMatch})`);
    const named = similarIn(similar);
    if (named) parts.push(named);
    return sql`coalesce((${sql.join(parts, sql` or `)}), false)`;
  }

  /**
   * What facet value numbers stand for (the facet, and the value without its prefix), as far as searches
   * have met them, in arrays indexed by number: a sample names thousands, each looked up on every search
   * that counts it. A number names one value for good (facet_values never renumbers), so what was read
   * once stays right; numbers not met yet are read in one statement. Past FACET_KEYS_KEPT the memory
   * starts again, and fills as searches go. A search keeps the memory it filled, whatever others do.
   */
  type FacetNames = {
    /** By number: 0 when not read yet, else 1 + the facet's position in FACETS, or NOT_A_FACET. */
    codes: Uint8Array;
    values: string[];
    known: number;
  };
  const emptyNames = (): FacetNames => ({ codes: new Uint8Array(1024), values: [], known: 0 });
  let facetNames = emptyNames();
  async function facetNamesOf(ids: readonly number[]): Promise<FacetNames> {
    const unread = (names: FacetNames) => ids.filter((id) => !(names.codes[id]! > 0));
    let missing = unread(facetNames);
    if (missing.length === 0) return facetNames;
    if (facetNames.known + missing.length > FACET_KEYS_KEPT) {
      facetNames = emptyNames();
      missing = unread(facetNames);
    }
    const names = facetNames;
    // One text parameter, not one per number: a statement's text stays the same, prepared once.
    const rows = await database.rows<{ id: number; key: string }>(
      sql`select ${facetValues.id} as id, ${facetValues.key} as key from ${facetValues}
        where ${facetValues.id} = any(string_to_array(${missing.join(",")}, ',')::int[])`,
    );
    for (const row of rows) {
      const id = Number(row.id);
      const { key } = row;
      if (id >= names.codes.length) {
        const grown = new Uint8Array(Math.max(id + 1, names.codes.length * 2));
        grown.set(names.codes);
        names.codes = grown;
      }
      const prefix = FACET_PREFIXES[key[0] ?? ""];
      if (names.codes[id] === 0) names.known++;
      if (prefix && key.startsWith(prefix[0])) {
        names.codes[id] = 1 + FACETS.indexOf(prefix[1]);
        names.values[id] = key.slice(prefix[0].length);
      } else names.codes[id] = NOT_A_FACET;
    }
    return names;
  }

  /**
   * Tallies sized for the numbers met so far: a sample's numbers run up to the count of facet values, a
   * few hundred KB at 100k agents. The arrays of summarized tallies are kept zeroed for the next ones:
   * allocating one per search (zero-filled, outside the JS heap) brought on a garbage collection of the
   * whole heap every few searches, a third of this process's CPU per search in a profile.
   */
  let tallyCapacity = 1024;
  const spareCounts: Uint32Array[] = [];
  const SPARE_COUNTS_KEPT = 8;
  const newTally = (complete: boolean) => {
    let counts = spareCounts.pop();
    while (counts && counts.length < tallyCapacity) counts = spareCounts.pop();
    return new Tally(complete, counts ?? new Uint32Array(tallyCapacity));
  };

  /** The numbers of facet keys a filter wants (undefined when one has none), remembered once read. */
  const facetIdsByKey = new Map<string, number>();
  async function facetIdsOf(keys: string[]): Promise<number[] | undefined> {
    let missing = keys.filter((key) => !facetIdsByKey.has(key));
    if (missing.length > 0) {
      if (facetIdsByKey.size + missing.length > FACET_KEYS_KEPT) {
        facetIdsByKey.clear();
        missing = keys;
      }
      // `= any(array(...))`, not `in (select ...)`: the planner guesses a hundred keys for the set and
      // hashes them against every facet value (22,000 at 100k agents: 3 ms) instead of looking each up.
      const rows = await database.rows<{ id: number; key: string }>(
        sql`select ${facetValues.id} as id, ${facetValues.key} as key from ${facetValues}
          where ${facetValues.key} = any(array(select jsonb_array_elements_text(${JSON.stringify(missing)}::jsonb)))`,
      );
      for (const { id, key } of rows) facetIdsByKey.set(key, Number(id));
    }
    const ids: number[] = [];
    for (const key of keys) {
      const id = facetIdsByKey.get(key);
      if (id === undefined) return undefined;
      ids.push(id);
    }
    return ids;
  }

  /**
   * Total and top facet values from a tally, exact when it counted every match. Otherwise facets were
   * counted over a sample and are scaled to the planner's estimate of the total (never below what was
   * seen), and the summary says so.
   */
  async function summarize(tally: Tally, where: SQL | undefined): Promise<Summary> {
    tallyCapacity = Math.max(tallyCapacity, tally.counts.length);
    const totalIsEstimate = !tally.complete;
    const [estimate, names] = await Promise.all([
      totalIsEstimate ? estimatedRows(where) : 0,
      facetNamesOf(tally.counted),
    ]);
    const total = totalIsEstimate ? Math.max(Math.round(estimate), tally.seen) : tally.seen;
    const scale = totalIsEstimate ? total / tally.seen : 1;
    // A sample has thousands of values, most of them skills seen once: grouped by facet, and only the
    // winners take the shape of the response.
    const groups = FACETS.map(() => ({ ids: [] as number[], values: [] as string[] }));
    for (const id of tally.counted) {
      const code = names.codes[id]!;
      const group = groups[code - 1];
      if (!group) continue;
      group.ids.push(id);
      group.values.push(names.values[id]!);
    }
    const { counts } = tally;
    const facets = emptyFacets();
    for (const [code, { ids, values }] of groups.entries()) {
      // Positions in the group compared by count, then by value: no lookup per comparison (a sample's
      // thousands of skills seen once each tie with the last value kept).
      const before = (a: number, b: number) => {
        const byCount = counts[ids[b]!]! - counts[ids[a]!]!;
        if (byCount !== 0) return byCount;
        const x = values[a]!;
        const y = values[b]!;
        return x < y ? -1 : x > y ? 1 : 0;
      };
      // Ordered by what was counted: rounding scaled counts could tie values the sample told apart.
      facets[FACETS[code]!] = mostCounted(ids.length, before, FACET_SIZE).map((i) => ({
        value: values[i]!,
        count: Math.max(1, Math.round(counts[ids[i]!]! * scale)),
      }));
    }
    if (spareCounts.length < SPARE_COUNTS_KEPT) spareCounts.push(tally.release());
    return { total, totalIsEstimate, facets };
  }

  /** The facet values of up to `exactCount + 1` matches (any order) and the seq they were read at. */
  async function tallyOf(where: SQL | undefined): Promise<{ tally: Tally; maxSeq: number }> {
    const [row] = (await database.rows<{ sample: string | null; maxSeq: number | null }>(sql`
      select ${sampleOf} as sample, ${maxSeqOf} as "maxSeq" from (
        select ${S.facetIds} as ids from ${S} where ${where ?? sql`true`} limit ${limits.exactCount + 1}) m`)) as [
      { sample: string | null; maxSeq: number | null },
    ];
    const tally = newTally(false);
    tally.addSample(row.sample);
    tally.complete = tally.seen <= limits.exactCount;
    return { tally, maxSeq: Number(row.maxSeq ?? 0) };
  }

  const countsKey = (query: BackendQuery, tokens: string[]) =>
    `${visibilityKey(query.caller)}|${tokens.join(" ")}|${JSON.stringify(query.filters)}`;
  const maxSeqOf = sql`(select max(${agents.seq}) from ${agents})::float8`;

  /**
   * The remembered counts of a query when still fresh. Only asks for the highest seq when there is an
   * entry to compare it with: a request computing its counts takes the seq from its own statement.
   */
  async function rememberedSummary(key: string): Promise<Promise<Summary> | undefined> {
    const cached = countsCache.get(key);
    if (!cached || performance.now() - cached.at >= FACET_CACHE_TTL_MS) return undefined;
    const [{ maxSeq }] = (await database.rows<{ maxSeq: number | null }>(
      sql`select ${maxSeqOf} as "maxSeq"`,
    )) as [{ maxSeq: number | null }];
    // An entry still being computed counts as fresh: concurrent requests share one computation.
    return cached.maxSeq === Number(maxSeq ?? 0) ? cached.summary : undefined;
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
      .select(LISTED_COLUMNS)
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

  /** The records of the newest `limit` matches of a condition on the search rows, newest first, unranked. */
  async function newestRows(where: SQL | undefined, limit: number, score: number): Promise<PageRow[]> {
    const rows = await db
      .select(LISTED_COLUMNS)
      .from(agents)
      .where(
        sql`${agents.id} in (select ${S.id} from ${S} where ${where ?? sql`true`} order by ${S.seq} desc limit ${limit})`,
      )
      .orderBy(sql`${agents.seq} desc`);
    return rows.map((row) => ({ ...(row as SearchRow), score }));
  }

  let tableRows = { n: 0, at: Number.NEGATIVE_INFINITY };

  /**
   * Planner estimates, by condition. Within a request, by the condition object (the scan choice and the
   * estimated total ask about the same one). Across requests, by its text and parameters for a minute:
   * the same words with the same filters, for the same kind of caller, come back often, and the
   * statistics behind an estimate move far more slowly than that.
   */
  const estimates = new WeakMap<SQL, Promise<number>>();
  const recentEstimates = new Map<string, { at: number; rows: Promise<number> }>();
  const dialect = new PgDialect();

  const explainOf = (where: SQL | undefined) =>
    sql`explain (format json) select 1 from ${S} ${where ? sql`where ${where}` : sql``}`;

  /** A planner estimate kept across requests under `key`, asked for when missing or a minute old. */
  function recentEstimate(key: string, where: SQL | undefined): Promise<number> {
    const recent = recentEstimates.get(key);
    if (recent && performance.now() - recent.at < ESTIMATE_TTL_MS) return recent.rows;
    const estimate = database.rows(explainOf(where)).then((rows) => plannedRows(rows));
    if (recentEstimates.size >= ESTIMATE_CACHE_ENTRIES)
      recentEstimates.delete(recentEstimates.keys().next().value!);
    recentEstimates.delete(key);
    recentEstimates.set(key, { at: performance.now(), rows: estimate });
    estimate.catch(() => recentEstimates.delete(key));
    return estimate;
  }

  /** The planner's estimate of how many search rows a condition selects (no execution). */
  function estimatedRows(where: SQL | undefined): Promise<number> {
    const known = where && estimates.get(where);
    if (known) return known;
    const rendered = dialect.sqlToQuery(explainOf(where));
    const estimate = recentEstimate(`${rendered.sql}\u0000${JSON.stringify(rendered.params)}`, where);
    if (where) estimates.set(where, estimate);
    return estimate;
  }

  /**
   * The planner's estimates for a first text page: of the rows `base` selects, of the rows the words
   * match, and of their matches (both), built from estimates kept per part across requests: `base` by
   * kind of caller and filters (`baseKey`), each word alone. The planner itself multiplies the
   * selectivities of the words of an AND query, and of conditions on different columns, so the product
   * is the estimate it would give for the whole; but words and filters recur far more often than their
   * combinations, so most queries need no EXPLAIN round trip (about 1 ms each) before their page.
   */
  async function estimatedMatches(base: SQL | undefined, baseKey: string, text: TextParts) {
    const [rows, selected, ...words] = await Promise.all([
      searchRowCount(),
      base ? recentEstimate(`base\u0000${baseKey}`, base) : searchRowCount(),
      ...text.terms.map((term, i) => recentEstimate(`term\u0000${term}`, text.termMatch(i))),
    ]);
    const all = Math.max(rows, 1);
    const postings = words.reduce((product, word) => (product * word) / all, all);
    return { selected, postings, matches: (selected * postings) / all };
  }

  type Scan = NonNullable<PostgresSearchLimits["scan"]>;

  /**
   * How to find the newest `wanted` matches of a text query (`matches`: the planner's estimate of them
   * all): walk seq backwards (common words: a few rows per match), collect every match from the text
   * index and sort (rarer words), or, with filters, collect the agents the filters select and test the
   * words on each (a selective tag or provider with a common word). The planner makes this choice
   * itself but, assuming matches spread evenly, walks backwards for words matching a few percent of
   * agents, reading tens of thousands of rows, and intersects a common word's postings (21,000 for
   * `statistics`) with a filter's few hundred rows; this weighs the three from the same estimates.
   */
  async function chooseScan(
    estimate: { selected: number; postings: number; matches: number },
    wanted: number,
    filtered: boolean,
  ) {
    const rows = await searchRowCount();
    const { matches } = estimate;
    const [selected, postings] = filtered
      ? [estimate.selected, estimate.postings]
      : [Number.POSITIVE_INFINITY, matches];
    const costs: [Scan, number][] = [
      ["walk", ((wanted * rows) / Math.max(matches, 1)) * SCAN_COST.walkedRow],
      ["collect", postings * SCAN_COST.posting + matches * SCAN_COST.fetchedRow],
      ["filters", selected * SCAN_COST.fetchedRow],
    ];
    return costs.reduce((best, next) => (next[1] < best[1] ? next : best));
  }

  /** The planner's estimate of all search rows, asked again after a minute. */
  async function searchRowCount() {
    if (performance.now() - tableRows.at > 60_000)
      tableRows = { n: await estimatedRows(undefined), at: performance.now() };
    return tableRows.n;
  }

  type Ranked = { id: string; seq: number; score: number };
  /** `ids`: the facet value numbers, comma-separated (null unless asked for). */
  type Similarity = Ranked & { ids: string | null; textMatch: boolean };
  type TextPage = {
    /** In flight while the counts are worked out: the page's records are one more round trip. */
    rows: Promise<PageRow[]>;
    cut?: Cut;
    matches: SQL | undefined;
    tally?: Tally;
    maxSeq?: number;
  };

  /**
   * The newest `limit` search rows of a condition with their scores and, for similar names (which may
   * not be full-text matches, and then add to the facet counts), whether each is a full-text match and
   * its facet value numbers. The scores are taken in an outer query so that only the rows kept are
   * scored.
   * `seq + 0`: left to itself the planner walks seq backwards through tens of thousands of rows to find
   * a few hundred names, where the name indexes find them at once.
   */
  function newestScoredStatement(where: SQL | undefined, limit: number, text: TextParts, similar: boolean) {
    const ids = similar ? sql`array_to_string(${S.facetIds}, ',')` : sql`null::text`;
    return sql`
      select ${S.id} as id, ${S.seq}::float8 as seq, ${text.score} as score, ${ids} as ids,
        ${similar ? text.fullText : sql`true`} as "textMatch"
      from ${S}
      where ${S.id} in (select ${S.id} from ${S} where ${where} order by ${S.seq} + 0 desc limit ${limit})`;
  }

  const bySeqDesc = <T extends { seq: number }>(rows: T[]) => rows.sort((x, y) => y.seq - x.seq);

  /** The newest `limit` names at least `similarity` like the query, with more than the condition. */
  async function similarNames(where: SQL | undefined, limit: number, text: TextParts, similarity: number) {
    const rows = await database.rows<Similarity>(
      newestScoredStatement(and(where, text.fuzzyName(similarity)), limit, text, true),
    );
    return bySeqDesc(rows.map((row) => ({ ...row, seq: Number(row.seq), score: Number(row.score) })));
  }

  /**
   * A later page of a text query: the ranked parts the cursor names, scored again, then the rest.
   * A cursor without a window (Elasticsearch's, or a page that ranked every match) ranks everything.
   */
  async function laterTextPage(
    query: BackendQuery,
    base: SQL | undefined,
    text: TextParts,
  ): Promise<TextPage> {
    const after = query.after!;
    const take = query.limit + 1;
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
            await similarNames(
              and(base, sql`${S.seq} > ${cut.fuzzy}`),
              limits.fuzzyWindow,
              text,
              cut.similarity ?? TRIGRAM_DEFAULT,
            )
          ).map((row) => row.id);
    const matches = matchesUnder(base, text, similar);
    let ranked: { id: string; score: number }[] = [];
    if (after.score > UNRANKED)
      ranked = (
        await database.rows<{ id: string; score: number }>(sql`
          select ${S.id} as id, ${text.score} as score from ${S}
          where ${rankedMatches(base, text, cut, similar)}
            and (${text.score}, ${S.seq}) < (${after.score}::float8, ${after.seq})
          order by 2 desc, ${S.seq} desc limit ${take}`)
      ).map((row) => ({ id: row.id, score: Number(row.score) }));
    const rows = rowsOf(ranked).then((page) => withRest(page, take, matches, text, cut, similar, after));
    return { rows, cut, matches };
  }

  /**
   * The first page of a text query: one statement (textStatement), then one more when similar names
   * take part. Relevance order over every match costs a rank per match (tens of thousands for a common
   * word), so only some matches are ranked: the newest `rankWindow` full-text matches (all of them for
   * any query that selective), plus the newest `nameWindow` older ones with every query word in the
   * name, so a name beats a description at any size; plus, when full text finds very little (or when no
   * match has the query in its name), the newest `fuzzyWindow` similar names, for a misspelt name. Every
   * other match follows the ranked ones, newest first, with score 0. Each part is fixed by a seq
   * boundary that the cursor carries, so later pages rank the same matches and list the same rest. The
   * scan of the newest full-text matches serves the ranking window and, when counts are wanted, the
   * facet sample: the same rows are not read twice. Totals and facets are exact up to `exactCount`
   * matches when they are collected, up to `rankWindow` when walked (a walk is taken only when the
   * planner expects thousands, and proves them by finding the window in the rows that rate needs).
   */
  async function firstTextPage(
    query: BackendQuery,
    base: SQL | undefined,
    baseKey: string,
    text: TextParts,
    wantSample: boolean,
  ): Promise<TextPage> {
    const take = query.limit + 1;
    const window = limits.rankWindow + 1;
    const fullText = and(base, text.fullText)!;
    const estimated = await estimatedMatches(base, baseKey, text);
    const estimate = estimated.matches;
    // The estimated total asks about this very condition.
    estimates.set(fullText, Promise.resolve(estimate));
    const filtered = Object.keys(query.filters).length > 0;
    const [scan, alternative] = limits.scan
      ? [limits.scan, limits.scan === "filters" ? "filters" : "collect"]
      : await chooseScan(estimated, window, filtered).then(async (best) => [
          best[0],
          // What a walk that found too few falls back to: the cheaper way of collecting.
          best[0] === "walk" ? (await chooseScan(estimated, Number.POSITIVE_INFINITY, filtered))[0] : best[0],
        ]);
    if (scan === "walk") {
      // Walking seq backwards for a common word: a few rows per match, and only the ranking window's
      // worth of matches (they are the facet sample too). Capped at a few times the rows the planner's
      // estimate needs: a walk that finds too few was misled (rarer words than estimated, matches
      // bunched in old agents) and the matches are collected from the text index instead.
      const cap = Math.ceil((WALK_SLACK * window * (await searchRowCount())) / Math.max(estimate, 1));
      const walked = await textStatement(
        sql`select * from (select ${S.id} as id, ${S.seq} as seq, ${S.facetIds} as ids,
            ${S.searchDoc} as doc, ${S.name} as name, ${text.fullText} as hit
          from ${S} ${base ? sql`where ${base}` : sql``} order by ${S.seq} desc limit ${cap}) c
          where hit order by seq desc limit ${window}`,
        true,
        base,
        text,
        take,
        wantSample,
      );
      if (walked.found >= window) return textPageOf(walked, base, text, fullText, take, wantSample, window);
    }
    // Collecting every match and sorting (`seq + 0` is not what the seq index orders). Its newest
    // `exactCount + 1` give exact counts for up to `exactCount` matches; past that, the ranking window
    // is the facet sample, as for a walk. The sort carries no documents: the window's are read again.
    // The matches come from the text index or, through the filters' indexes, from the agents the
    // filters select, the words tested on each (in a form the text index does not serve, or the planner
    // intersects both indexes).
    const scanned = wantSample ? Math.max(limits.rankWindow, limits.exactCount) + 1 : window;
    const viaFilters = base !== undefined && alternative === "filters";
    const collected = await textStatement(
      sql`select ${S.id} as id, ${S.seq} as seq, ${S.facetIds} as ids
        from ${S} where ${and(base, viaFilters ? text.fullTextUnindexed : text.fullTextIndexed)}
        order by ${S.seq} + 0 desc limit ${scanned}`,
      false,
      base,
      text,
      take,
      wantSample,
    );
    return textPageOf(collected, base, text, fullText, take, wantSample, scanned);
  }

  /** What textStatement returns: one row, the parts as JSON arrays (parsed natively, not per column). */
  type TextRow = {
    /** [id, seq, score] of the best `take` of the ranking window, and of the older names. */
    ranked: string;
    older: string;
    boundary: number | null;
    found: number;
    named: boolean | null;
    sample: string | null;
    maxSeq: number | null;
  };

  /**
   * The statement behind a first text page: `scan`, the newest full-text matches (id, seq, facet
   * value numbers, search document and name), gives the ranking window, scored from its own rows; the best
   * `take` of it come back as `ranked`. Older than the window, a name with every query word (`older`):
   * found by the index of the names' words, so it costs what the names hold (hundreds of rows for a
   * common word), not what the descriptions do. Similar names (`similar`) when full text finds very
   * little. Each part runs only when it applies (the conditions on b and s are evaluated once, before
   * the part's scan). With them: the window's boundary, the matches scanned, whether a ranked match has
   * the query in its name, the facet sample (every match scanned when they are at most `exactCount`,
   * else the ranking window's) and the seq it was read at.
   */
  async function textStatement(
    scan: SQL,
    walked: boolean,
    base: SQL | undefined,
    text: TextParts,
    take: number,
    wantSample: boolean,
  ): Promise<TextRow> {
    const older = newestScoredStatement(
      and(
        base,
        text.nameMatch,
        sql`${S.seq} + 0 <= (select boundary from b)`,
        sql`(select boundary from b) is not null`,
      ),
      limits.nameWindow + 1,
      text,
      false,
    );
    const [row] = (await database.rows<TextRow>(sql`
      with s as materialized (${scan}),
      w as (${
        // A walk's scan is the window already: sorting it again copied every document it carries.
        walked ? sql`select * from s` : sql`select * from s order by seq desc limit ${limits.rankWindow + 1}`
      }),
      b as (select min(seq) as boundary from w having count(*) > ${limits.rankWindow}),
      x as (${
        walked
          ? sql`select id, seq, ${text.scoreOf(sql`doc`, sql`name`)} as score, ${text.nameLike(sql`name`)} as named
            from w where seq > coalesce((select boundary from b), -1)`
          : sql`select w.id, w.seq, ${text.score} as score, ${text.nameLike(sql`${S.name}`)} as named
            from w join ${S} on ${S.id} = w.id where w.seq > coalesce((select boundary from b), -1)`
      })
      select
        (select coalesce(json_agg(json_build_array(id, seq, score)), '[]')::text
          from (select * from x order by score desc, seq desc limit ${take}) r) as ranked,
        (select coalesce(json_agg(json_build_array(id, seq, score)), '[]')::text from (${older}) o) as older,
        (select boundary::float8 from b) as boundary, (select count(*)::int from s) as found,
        (select bool_or(named) from x) as named,
        ${wantSample ? sql`(select ${sampleOf} from s where (select count(*) from s) <= ${limits.exactCount} or seq >= (select boundary from b))` : sql`null`} as sample,
        ${wantSample ? maxSeqOf : sql`null`} as "maxSeq"`)) as [TextRow];
    return row;
  }

  /** The page, its cut and its facet sample from what textStatement returned (see firstTextPage). */
  async function textPageOf(
    meta: TextRow,
    base: SQL | undefined,
    text: TextParts,
    fullText: SQL | undefined,
    take: number,
    wantSample: boolean,
    scanned: number,
  ): Promise<TextPage> {
    const found = Number(meta.found);
    const cut: Cut = { window: meta.boundary === null ? 0 : Number(meta.boundary) };
    const ranks = (json: string) =>
      (JSON.parse(json) as [string, number, number][]).map(([id, seq, score]) => ({ id, seq, score }));
    const candidates: Ranked[] = ranks(meta.ranked);
    const olderNames = bySeqDesc(ranks(meta.older));
    let named = meta.named === true;
    if (olderNames.length > 0) {
      named = true;
      cut.names = olderNames.length > limits.nameWindow ? olderNames[limits.nameWindow]!.seq : 0;
      candidates.push(...olderNames.slice(0, limits.nameWindow));
    }
    let similarPending: Promise<Similarity[]> | undefined;
    if (found < limits.fuzzyBelow) {
      // Full text finding little means a misspelt word.
      similarPending = awaitedLater(similarNames(base, limits.fuzzyWindow + 1, text, TRIGRAM_DEFAULT));
    } else if (!named && text.words > 1) {
      // Finding no match with the query in its name, for several words, may mean a misspelt name whose
      // words other agents use (one word that many agents use is a word, not a misspelling). That case
      // asks for a name like the whole query: at pg_trgm's 0.6, one long word shared ("data pipeline"
      // for every "... Pipeline ..." name) is enough, and the index hands over hundreds of names to check.
      cut.similarity = NAMELESS_SIMILARITY;
      similarPending = awaitedLater(similarNames(base, limits.fuzzyWindow + 1, text, NAMELESS_SIMILARITY));
    }
    const page = (similar: Similarity[]) => {
      // Each part is sorted by score already or small: the page is the best `take` of their union.
      const seen = new Set<string>();
      const ranked = [...candidates, ...similar]
        .sort((x, y) => y.score - x.score || y.seq - x.seq)
        .filter((hit) => !seen.has(hit.id) && seen.add(hit.id))
        .slice(0, take);
      const similarIds = similar.map((row) => row.id);
      // The very condition estimated already when there are no similar names: not planned again.
      const matches = similarIds.length > 0 ? matchesUnder(base, text, similarIds) : fullText;
      const rows = awaitedLater(
        rowsOf(ranked).then((hits) => withRest(hits, take, matches, text, cut, similarIds)),
      );
      return { rows, matches };
    };
    // The sample is counted while a statement is out: the similar names' or else the page's records.
    const early = similarPending ? undefined : page([]);
    let tally: Tally | undefined;
    if (wantSample) {
      tally = newTally(found < scanned);
      if (meta.sample) {
        await afterQueuedWrites();
        tally.addSample(meta.sample);
      }
    }
    let similar: Similarity[] = [];
    if (similarPending) {
      similar = await similarPending;
      cut.fuzzy = similar.length > limits.fuzzyWindow ? similar[limits.fuzzyWindow]!.seq : 0;
      similar = similar.slice(0, limits.fuzzyWindow);
    }
    const { rows: pageRows, matches } = early ?? page(similar);
    // Similar names are matches too. A scan that read every full-text match plus the similar names that
    // are not full-text matches is every match: still exact.
    if (tally?.complete) {
      const extra = similar.filter((row) => !row.textMatch);
      tally.addSample(`${extra.length},${extra.map((row) => row.ids ?? "").join(",")}`);
    }
    return {
      rows: pageRows,
      cut,
      matches,
      tally,
      maxSeq: meta.maxSeq === null ? undefined : Number(meta.maxSeq),
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
    const rest = await newestRows(
      and(
        matches,
        sql`${S.seq} <= ${cut.window}`,
        sql`not ${rankedUnder(text, cut, similar)}`,
        after?.score === UNRANKED ? sql`${S.seq} < ${after.seq}` : undefined,
      ),
      take - rows.length,
      UNRANKED,
    );
    return [...rows, ...rest];
  }

  /** A page without text: everything the filters select, newest first; its facet sample beside it. */
  async function browsePage(
    query: BackendQuery,
    base: SQL | undefined,
    wantSample: boolean,
  ): Promise<TextPage> {
    const after = query.after ? sql`${S.seq} < ${query.after.seq}` : undefined;
    const rows = newestRows(and(base, after), query.limit + 1, 0);
    if (!wantSample) return { rows, matches: base };
    return { rows, matches: base, ...(await tallyOf(base)) };
  }

  return {
    name: "postgres",

    async search(query: BackendQuery): Promise<SearchPage> {
      const tokens = queryTokens(query.text);
      const wanted = wantedFacetKeys(query.filters);
      const wantedIds = wanted.length > 0 ? await facetIdsOf(wanted) : [];
      const base = and(
        visibleTo(query.caller, S),
        // A value no agent has ever had has no number: nothing has it.
        wantedIds === undefined
          ? sql`false`
          : wantedIds.length > 0
            ? sql`${S.facetIds} @> ${`{${wantedIds.join(",")}}`}::int[]`
            : undefined,
        ...attributeConditions(query.filters, S),
      );
      const key = countsKey(query, tokens);
      const baseKey = `${visibilityKey(query.caller)}|${JSON.stringify(query.filters)}`;
      const remembered = query.withFacets && !query.consistent ? await rememberedSummary(key) : undefined;
      // The page first: it settles whether the typo-tolerant name match takes part, which the counts
      // follow, and the first page reads the facet sample in the same statement.
      const text = tokens.length > 0 ? textParts(tokens, Object.keys(query.filters).length > 0) : undefined;
      const wantSample = query.withFacets && remembered === undefined && !query.after;
      const {
        rows: pending,
        cut,
        matches,
        tally,
        maxSeq,
      } = text
        ? query.after
          ? await laterTextPage(query, base, text)
          : await firstTextPage(query, base, baseKey, text, wantSample)
        : await browsePage(query, base, wantSample);
      const counts = async (): Promise<Summary | undefined> => {
        if (remembered) return remembered;
        if (!query.withFacets) return undefined;
        // A later page asked for counts: read a sample of its own (and the seq it was read at).
        const { tally: counted, maxSeq: seqAt } = tally
          ? { tally, maxSeq: maxSeq ?? 0 }
          : await tallyOf(matches);
        const computed = summarize(counted, matches);
        remember(key, seqAt, computed);
        return computed;
      };
      const [rows, summary] = await Promise.all([pending, counts()]);
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
      // The search rows are written by triggers in the writing statement: nothing to do.
    },

    async health() {
      const started = performance.now();
      await database.ping();
      return { status: "ok", latencyMs: Math.round((performance.now() - started) * 100) / 100 };
    },

    /**
     * Rebuilds every search row from its agent (document, facets, name, filters), in batches in seq
     * order, then removes search rows whose agent is gone. Safe while serving: each batch locks the
     * agents it copies (a concurrent write waits for the batch, or the batch reads what it wrote), and
     * never puts back a row older than the one a concurrent write left.
     */
    async reindexAll(progress?: ReindexProgress) {
      const [{ n: total }] = (await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents} where ${agents.deletedAt} is null`,
      )) as [{ n: number }];
      // Every live agent's facet values numbered first: a batch's statement cannot see values it numbers
      // itself. Agents written meanwhile have theirs numbered by the writing statement.
      await database.rows(sql`select facet_values_add(array(
        select distinct unnest(${agents.facetKeys} || ('provider:' || ${agents.provider}))
        from ${agents} where ${agents.deletedAt} is null))`);
      let done = 0;
      let lastSeq = -1;
      progress?.(0, Number(total));
      for (;;) {
        const batch = await database.rows<{ seq: number }>(sql`
          with source as (
            select * from ${agents}
            where ${agents.deletedAt} is null and ${agents.seq} > ${lastSeq}
            order by ${agents.seq} limit 1000 for share
          ), written as (
            insert into ${S} (id, seq, visibility, owner, status, health, streaming, signature, provider, name,
              facet_ids, search_doc)
            select id, seq, visibility, owner, status, health, streaming, signature, provider, lower(name),
              agent_search_facet_ids(facet_keys, provider),
              agent_search_document(name, description, skills, tags)
            from source
            on conflict (id) do update set seq = excluded.seq, visibility = excluded.visibility,
              owner = excluded.owner, status = excluded.status, health = excluded.health,
              streaming = excluded.streaming, signature = excluded.signature, provider = excluded.provider,
              name = excluded.name, facet_ids = excluded.facet_ids,
              search_doc = excluded.search_doc
            where ${S.seq} <= excluded.seq
          )
          select seq::float8 as seq from source`);
        if (batch.length === 0) break;
        done += batch.length;
        lastSeq = Math.max(...batch.map((row) => Number(row.seq)));
        progress?.(done, Number(total));
      }
      await database.rows(sql`
        delete from ${S} where not exists (
          select 1 from ${agents} where ${agents.id} = ${S.id} and ${agents.deletedAt} is null)`);
      countsCache.clear();
      return { indexed: done };
    },

    async refresh() {
      // Always current: the search rows are written with the change.
    },
  };
}
