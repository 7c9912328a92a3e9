/**
 * The request mix of the search benchmark: a few thousand GET /v1/search paths, deterministic, drawn
 * from the seeded corpus itself (a random agent's words), so queries find what users would look for:
 * common and rare words, names (one with a typo), filters alone and with text, providers.
 */
import type { SeededCorpus } from "./search-seed";
import {
  generateAgent,
  int,
  pick,
  prng,
  type Random,
  STOP_WORDS,
  seedOf,
  TAG_WORDS,
  wordsOf,
} from "./search-corpus";

export const QUERY_KINDS = [
  "word",
  "two-words",
  "typo-name",
  "tag",
  "skill",
  "q+filter",
  "provider",
  "no-facets",
  "browse",
] as const;
export type QueryKind = (typeof QUERY_KINDS)[number];

/** Share of each kind in the mix (sums to 1) and what it is, for the report. */
export const KIND_INFO: Record<QueryKind, { share: number; what: string }> = {
  word: { share: 0.24, what: "`q=<one word>`: a tag, description or name word of a random agent" },
  "two-words": { share: 0.14, what: "`q=<two words>` from the same agent (name, tags, description)" },
  "typo-name": {
    share: 0.1,
    what: "`q=<a unique name of 18+ characters with one typo>`; the bench checks the agent is on page 1",
  },
  tag: { share: 0.1, what: "`tag=<tag>`, no q" },
  skill: { share: 0.06, what: "`skill=<skill id or name>`, no q" },
  "q+filter": {
    share: 0.14,
    what: "`q=<word>` plus one of tag, inputMode, outputMode, streaming=true, health=up",
  },
  provider: { share: 0.06, what: "`provider=<organisation>`, half of them with a q word" },
  "no-facets": { share: 0.1, what: "`q=<word or two>&facets=false`, a third with limit=50" },
  browse: { share: 0.06, what: "no q and no filter: everything, newest first (the largest facet count)" },
};

/**
 * Names at least this long with one edit keep a word similarity of 0.6 or more to the original (all of
 * 1,500 sampled); below it some fall under pg_trgm's threshold (about 1 in 10 of 2-word names).
 */
export const TYPO_MIN_LENGTH = 18;

/** Share of paths sent with the bearer token of a client that owns private agents. */
export const AUTH_SHARE = 0.15;

export type MixPath = {
  kind: QueryKind;
  auth: boolean;
  path: string;
  /** typo-name: the agent that must be on the first page. */
  expectId?: string;
  expectName?: string;
};

const enc = encodeURIComponent;
const searchPath = (params: Array<[string, string]>) =>
  params.length === 0 ? "/v1/search" : `/v1/search?${params.map(([k, v]) => `${k}=${enc(v)}`).join("&")}`;

type Facts = {
  nameWords: string[];
  tags: string[];
  descriptionWords: string[];
  skills: string[];
  inputModes: string[];
  outputModes: string[];
  provider: string | null;
  streaming: boolean;
};

function factsOf(index: number): Facts {
  const { card } = generateAgent(index);
  const skills = card.skills as Array<{ id: string; name: string; tags: string[] }>;
  const words = (text: string) => wordsOf(text).filter((w) => w.length > 2 && !STOP_WORDS.has(w));
  return {
    nameWords: words(String(card.name)),
    tags: [...new Set(skills.flatMap((s) => s.tags))],
    descriptionWords: words(String(card.description)),
    skills: skills.flatMap((s) => [s.id, s.name.toLowerCase()]),
    inputModes: card.defaultInputModes as string[],
    outputModes: card.defaultOutputModes as string[],
    provider: (card.provider as { organization: string } | undefined)?.organization ?? null,
    streaming: (card.capabilities as { streaming: boolean }).streaming,
  };
}

/** One word a user might type about this agent: mostly a tag, else a description or name word. */
function wordOf(r: Random, facts: Facts): string {
  const x = r();
  const tag = pick(r, facts.tags).split(/[^a-z0-9]+/)[0]!;
  if (x < 0.55 || facts.descriptionWords.length === 0) return tag;
  if (x < 0.85) return pick(r, facts.descriptionWords);
  return pick(r, facts.nameWords.length > 0 ? facts.nameWords : [tag]);
}

const LETTERS = "abcdefghijklmnopqrstuvwxyz";

/** The name with one edit (substitution, deletion, transposition or insertion) in a word of 5+ letters. */
function withTypo(r: Random, name: string): string | undefined {
  const words = name.split(" ");
  const candidates = words.flatMap((w, k) => (w.length >= 5 && /^[A-Za-z]+$/.test(w) ? [k] : []));
  if (candidates.length === 0) return undefined;
  const k = pick(r, candidates);
  const word = words[k]!;
  const at = 1 + int(r, word.length - 2);
  let changed: string;
  switch (int(r, 4)) {
    case 0: {
      const letters = LETTERS.replace(word[at]!.toLowerCase(), "");
      changed = word.slice(0, at) + pick(r, [...letters]) + word.slice(at + 1);
      break;
    }
    case 1:
      changed = word.slice(0, at) + word.slice(at + 1);
      break;
    case 2:
      changed = word.slice(0, at) + word[at + 1] + word[at] + word.slice(at + 2);
      break;
    default:
      changed = word.slice(0, at) + pick(r, [...LETTERS]) + word.slice(at);
  }
  if (changed.toLowerCase() === word.toLowerCase()) return undefined;
  words[k] = changed;
  const typed = words.join(" ");
  return r() < 0.5 ? typed.toLowerCase() : typed;
}

/**
 * `count` paths, shuffled; each kind's share as in KIND_INFO, AUTH_SHARE of each with the token.
 * Typo targets are public agents whose name no other agent has, so "found" means that agent; names of
 * TYPO_MIN_LENGTH characters or more only, since pg_trgm's word similarity (threshold 0.6) misses some
 * shorter names with one typo: those are returned apart, to be counted, not measured.
 */
export function buildQueryMix(
  count: number,
  corpus: SeededCorpus,
  idOf: (index: number) => string,
): { paths: MixPath[]; shortNameTypos: MixPath[] } {
  const agents = corpus.names.length;
  const nameCount = new Map<string, number>();
  for (const name of corpus.names) nameCount.set(name, (nameCount.get(name) ?? 0) + 1);
  const r = prng(seedOf(3, count));
  const randomAgent = () => int(r, agents);
  const paths: MixPath[] = [];
  /** A public agent whose name no other agent has, long or short, and its name with a typo. */
  const typoTarget = (long: boolean) => {
    const index = randomAgent();
    const name = corpus.names[index]!;
    if (corpus.visibility[index] !== "public" || nameCount.get(name) !== 1) return undefined;
    if (name.length >= TYPO_MIN_LENGTH !== long) return undefined;
    const typed = withTypo(r, name);
    return typed ? { typed, id: idOf(index), name } : undefined;
  };
  const add = (kind: QueryKind, params: Array<[string, string]>, extra: Partial<MixPath> = {}) =>
    paths.push({ kind, auth: r() < AUTH_SHARE, path: searchPath(params), ...extra });

  for (const kind of QUERY_KINDS) {
    const n = Math.max(1, Math.round(count * KIND_INFO[kind].share));
    for (let made = 0, tries = 0; made < n && tries < n * 50; tries++) {
      const facts = factsOf(randomAgent());
      switch (kind) {
        case "word":
          add(kind, [["q", wordOf(r, facts)]]);
          break;
        case "two-words": {
          const first = r() < 0.5 && facts.nameWords.length > 0 ? pick(r, facts.nameWords) : wordOf(r, facts);
          let second = wordOf(r, facts);
          for (let k = 0; second === first && k < 5; k++) second = wordOf(r, facts);
          if (second === first) continue;
          add(kind, [["q", `${first} ${second}`]]);
          break;
        }
        case "typo-name": {
          const target = typoTarget(true);
          if (!target) continue;
          add(kind, [["q", target.typed]], { expectId: target.id, expectName: target.name });
          break;
        }
        case "tag":
          add(kind, [["tag", pick(r, facts.tags)]]);
          break;
        case "skill":
          add(kind, [["skill", pick(r, facts.skills)]]);
          break;
        case "q+filter": {
          const filter: [string, string] = pick(r, [
            ["tag", pick(r, facts.tags)],
            ["inputMode", pick(r, facts.inputModes)],
            ["outputMode", pick(r, facts.outputModes)],
            ["streaming", String(facts.streaming)],
            ["health", "up"],
          ] as Array<[string, string]>);
          add(kind, [["q", wordOf(r, facts)], filter]);
          break;
        }
        case "provider":
          if (!facts.provider) continue;
          add(
            kind,
            r() < 0.5
              ? [["provider", facts.provider]]
              : [
                  ["q", wordOf(r, facts)],
                  ["provider", facts.provider],
                ],
          );
          break;
        case "no-facets": {
          const q = r() < 0.6 ? wordOf(r, facts) : `${pick(r, TAG_WORDS)} ${wordOf(r, facts)}`;
          add(
            kind,
            r() < 0.33
              ? [
                  ["q", q],
                  ["facets", "false"],
                  ["limit", "50"],
                ]
              : [
                  ["q", q],
                  ["facets", "false"],
                ],
          );
          break;
        }
        case "browse":
          add(kind, []);
          break;
      }
      made++;
    }
  }
  // Fisher-Yates with the same stream: the file interleaves kinds like real traffic.
  for (let i = paths.length - 1; i > 0; i--) {
    const j = int(r, i + 1);
    [paths[i], paths[j]] = [paths[j]!, paths[i]!];
  }
  // Not in the mix: shorter names with one typo, which word similarity sometimes cannot find (reported).
  const shortNameTypos: MixPath[] = [];
  for (let tries = 0; shortNameTypos.length < 100 && tries < 100_000; tries++) {
    const target = typoTarget(false);
    if (target)
      shortNameTypos.push({
        kind: "typo-name",
        auth: false,
        path: searchPath([["q", target.typed]]),
        expectId: target.id,
        expectName: target.name,
      });
  }
  return { paths, shortNameTypos };
}
