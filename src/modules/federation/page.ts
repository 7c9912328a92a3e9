/**
 * A peer's change feed page, checked and turned into rows to write. Runs in the sync worker thread, so
 * the CPU work (parsing, card analysis, hashing) stays off the thread that serves HTTP.
 *
 * Nothing from a peer is trusted: the page must have the contract's shape, seqs must move forward,
 * every record must name one registry (not this one) and its own id, and each card is analysed with the
 * same rules as a local publish. A malformed page fails the run (the peer is marked failed and retried
 * with backoff); a single record this registry cannot accept (its card fails our validation, or it is
 * itself a federated copy) is skipped and counted, so one bad agent cannot stall a peer forever.
 */
import { storableText } from "../../infra/db/client";
import { analyzeCard, cardHash } from "../agents/card";
import { facetKeysOf } from "../agents/repo";

export class FeedFormatError extends Error {
  override name = "FeedFormatError";
}

/** Columns of a federated copy as the peer describes it (ids, seq and search text are added on write). */
export type CopyColumns = {
  name: string;
  description: string;
  url: string;
  visibility: "public" | "private";
  status: "active" | "deprecated";
  statusMessage: string | null;
  generation: "1.0" | "0.3" | "0.2";
  protocolVersion: string | null;
  latestVersion: string;
  cardRaw: string;
  cardHash: string;
  skills: string[];
  tags: string[];
  inputModes: string[];
  outputModes: string[];
  facetKeys: string[];
  streaming: boolean;
  provider: string | null;
  signature: "none" | "valid" | "invalid";
  health: "unknown" | "up" | "down";
  checkedAt: string | null;
  createdAt: string;
  updatedAt: string;
};

export type PreparedUpsert = { seq: number; originId: string; columns: CopyColumns };
export type Skipped = { originId: string; reason: string };

export type PreparedPage = {
  since: number;
  nextSince: number;
  hasMore: boolean;
  /** The registry every record in the page comes from; null when the page carries no records. */
  registry: string | null;
  upserts: PreparedUpsert[];
  /** Origin ids to remove (tombstones, and records skipped: a copy must not outlive what it copied). */
  deletes: string[];
  skipped: Skipped[];
  /** Changes in the page as sent. */
  changes: number;
};

const REGISTRY_ID = /^[A-Za-z0-9._:-]{1,100}$/;
const MAX_ID = 200;

/** A stable id for the copy of (registry, originId): a name-based UUID (version 8) from SHA-256. */
export function copyId(registry: string, originId: string): string {
  const digest = new Bun.CryptoHasher("sha256").update(`${registry}\n${originId}`).digest();
  const b = new Uint8Array(digest.buffer, digest.byteOffset, 16);
  b[6] = (b[6]! & 0x0f) | 0x80;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Buffer.from(b).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---------------------------------------------------------------------------------------------------
// Raw spans: the card's exact text inside the page, so the copy serves the publisher's bytes.
// ---------------------------------------------------------------------------------------------------

const isSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/** Index just past the string whose opening quote is at `start`. */
function skipString(text: string, start: number): number {
  let i = start + 1;
  for (;;) {
    const quote = text.indexOf('"', i);
    if (quote < 0) return text.length;
    // Escaped only when an odd number of backslashes precede it.
    let backslash = quote - 1;
    while (backslash > start && text.charCodeAt(backslash) === 0x5c) backslash--;
    if ((quote - 1 - backslash) % 2 === 0) return quote + 1;
    i = quote + 1;
  }
}

/** Index just past the JSON value starting at `i` (text already accepted by JSON.parse). */
function skipValue(text: string, start: number): number {
  let i = start;
  const n = text.length;
  const first = text.charCodeAt(i);
  if (first === 0x22) return skipString(text, i);
  if (first === 0x7b || first === 0x5b) {
    let depth = 0;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i = skipString(text, i);
        continue;
      }
      if (c === 0x7b || c === 0x5b) depth++;
      else if (c === 0x7d || c === 0x5d) {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    return n;
  }
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 0x2c || c === 0x7d || c === 0x5d || isSpace(c)) break;
    i++;
  }
  return i;
}

function skipSpace(text: string, start: number) {
  let i = start;
  while (i < text.length && isSpace(text.charCodeAt(i))) i++;
  return i;
}

/**
 * Walks the members of the object at `start`: `visit` gets each key and where its value starts, and
 * returns where the value ends when it read into it (else the value is skipped). Returns the index
 * past the object. So a caller descends only where it needs to and each byte is scanned once.
 */
function eachMember(text: string, start: number, visit: (key: string, at: number) => number | undefined) {
  let i = skipSpace(text, start);
  if (text.charCodeAt(i) !== 0x7b) return skipValue(text, i);
  i = skipSpace(text, i + 1);
  while (i < text.length && text.charCodeAt(i) === 0x22) {
    const keyEnd = skipString(text, i);
    const raw = text.slice(i + 1, keyEnd - 1);
    const key = raw.includes("\\") ? (JSON.parse(text.slice(i, keyEnd)) as string) : raw;
    i = skipSpace(text, keyEnd);
    if (text.charCodeAt(i) !== 0x3a) break;
    i = skipSpace(text, i + 1);
    i = skipSpace(text, visit(key, i) ?? skipValue(text, i));
    if (text.charCodeAt(i) === 0x2c) i = skipSpace(text, i + 1);
  }
  return text.charCodeAt(i) === 0x7d ? i + 1 : i;
}

/** Walks the elements of the array at `start` like eachMember; returns the index past the array. */
function eachElement(text: string, start: number, visit: (index: number, at: number) => number) {
  let i = skipSpace(text, start);
  if (text.charCodeAt(i) !== 0x5b) return skipValue(text, i);
  i = skipSpace(text, i + 1);
  for (let index = 0; i < text.length && text.charCodeAt(i) !== 0x5d; index++) {
    i = skipSpace(text, visit(index, i));
    if (text.charCodeAt(i) === 0x2c) i = skipSpace(text, i + 1);
    else break;
  }
  return text.charCodeAt(i) === 0x5d ? i + 1 : i;
}

/**
 * The exact text of changes[k].agent.card for every change (undefined where there is none), in one
 * pass over the page. A repeated member counts as JSON.parse counts it: the last one.
 */
export function cardTexts(pageText: string): Array<string | undefined> {
  let cards: Array<string | undefined> = [];
  eachMember(pageText, 0, (key, at) => {
    if (key !== "changes") return undefined;
    cards = [];
    return eachElement(pageText, at, (index, change) => {
      cards[index] = undefined;
      return eachMember(pageText, change, (member, agent) => {
        if (member !== "agent") return undefined;
        cards[index] = undefined;
        return eachMember(pageText, agent, (field, card) => {
          if (field !== "card") return undefined;
          const end = skipValue(pageText, card);
          cards[index] = pageText.slice(card, end);
          return end;
        });
      });
    });
  });
  return cards;
}

// ---------------------------------------------------------------------------------------------------
// Checking and preparing
// ---------------------------------------------------------------------------------------------------

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function isoOr(value: unknown, fallback: string | null): string | null {
  if (typeof value !== "string") return fallback;
  const time = Date.parse(value);
  return Number.isNaN(time) ? fallback : new Date(time).toISOString();
}

/**
 * A free-text field cut to at most `max` code units, never between the halves of a surrogate pair, and
 * made storable: lone surrogates it came with become U+FFFD, NUL characters are dropped.
 */
function freeText(value: string, max: number) {
  const end = max < value.length && /[\ud800-\udbff]/.test(value[max - 1]!) ? max - 1 : max;
  return value.slice(0, end).toWellFormed().replaceAll("\0", "");
}

function oneOf<T extends string>(value: unknown, allowed: readonly T[]): T | undefined {
  return allowed.includes(value as T) ? (value as T) : undefined;
}

/** A feed page whose envelope was checked: where the next page starts is known before its records are. */
export type ReadPage = {
  text: string;
  since: number;
  changes: unknown[];
  nextSince: number;
  hasMore: boolean;
};

/**
 * Parses a page of a peer's feed read with `since` and checks its envelope (changes array, cursor
 * moving forward). Throws FeedFormatError for a page that breaks the contract.
 */
export function readPage(text: string, since: number): ReadPage {
  let page: unknown;
  try {
    page = JSON.parse(text);
  } catch {
    throw new FeedFormatError(`the feed page is not JSON (starts with ${JSON.stringify(text.slice(0, 40))})`);
  }
  if (!isObject(page) || !Array.isArray(page.changes))
    throw new FeedFormatError("the feed page has no changes array");
  const { changes, nextSince, hasMore } = page;
  if (!isSeq(nextSince)) throw new FeedFormatError("the feed page has no valid nextSince");
  if (typeof hasMore !== "boolean") throw new FeedFormatError("the feed page has no hasMore flag");
  if (nextSince < since) throw new FeedFormatError(`nextSince ${nextSince} goes back before since ${since}`);
  if (hasMore && nextSince === since)
    throw new FeedFormatError("the feed says it has more but its cursor did not move");
  return { text, since, changes, nextSince, hasMore };
}

/**
 * Checks a page of a peer's feed read with `since` and prepares its rows. Throws FeedFormatError for a
 * page that breaks the contract. `ownRegistryId` guards against a peer serving this registry's own id.
 */
export function preparePage(text: string, since: number, ownRegistryId: string): PreparedPage {
  return prepareRecords(readPage(text, since), ownRegistryId);
}

/** The records of a page whose envelope readPage checked, checked and turned into rows (see preparePage). */
export function prepareRecords(page: ReadPage, ownRegistryId: string): PreparedPage {
  const { text, since, changes, nextSince, hasMore } = page;
  const raw = changes.some((c) => isObject(c) && c.op === "upsert") ? cardTexts(text) : [];
  const byOrigin = new Map<string, PreparedUpsert | { seq: number; deleted: true; reason?: string }>();
  const unstorableIds: Skipped[] = [];
  let registry: string | null = null;
  let previous = since;
  for (const [index, change] of changes.entries()) {
    const where = `changes[${index}]`;
    if (!isObject(change)) throw new FeedFormatError(`${where} is not an object`);
    const { seq, op, id } = change;
    if (!isSeq(seq) || seq <= previous || seq > nextSince)
      throw new FeedFormatError(`${where}.seq must increase, above since and up to nextSince`);
    previous = seq;
    if (typeof id !== "string" || id.length === 0 || id.length > MAX_ID)
      throw new FeedFormatError(`${where}.id is not an id`);
    if (!storableText(id)) {
      // No copy can exist under an id this registry cannot store: nothing to write or remove.
      unstorableIds.push({ originId: id, reason: "its id holds a NUL character or a lone surrogate" });
      continue;
    }
    if (op === "delete") {
      byOrigin.set(id, { seq, deleted: true });
      continue;
    }
    if (op !== "upsert") throw new FeedFormatError(`${where}.op must be upsert or delete`);
    const agent = change.agent;
    if (!isObject(agent) || !isObject(agent.source))
      throw new FeedFormatError(`${where}.agent is not an agent record`);
    const source = agent.source;
    if (typeof source.registry !== "string" || !REGISTRY_ID.test(source.registry))
      throw new FeedFormatError(`${where}.agent.source.registry is not a registry id`);
    if (source.registry === ownRegistryId)
      throw new FeedFormatError(
        `the peer serves agents as registry "${ownRegistryId}", which is this registry's own id`,
      );
    if (registry !== null && registry !== source.registry)
      throw new FeedFormatError(`the page mixes registries "${registry}" and "${source.registry}"`);
    registry = source.registry;
    if (agent.id !== id || source.originId !== id)
      throw new FeedFormatError(`${where}: the record's id and source.originId must equal the change id`);
    if (source.federated !== false) {
      // A peer must not re-export copies it holds (that is how loops and shadowed names start).
      byOrigin.set(id, { seq, deleted: true, reason: "the peer re-exported a federated copy" });
      continue;
    }
    const skip = (reason: string) => byOrigin.set(id, { seq, deleted: true, reason });
    const status = agent.status === "deleted" ? "deleted" : oneOf(agent.status, ["active", "deprecated"]);
    const visibility = oneOf(agent.visibility, ["public", "private"] as const);
    if (status === undefined || visibility === undefined)
      throw new FeedFormatError(`${where}.agent has no valid status or visibility`);
    if (status === "deleted") {
      byOrigin.set(id, { seq, deleted: true });
      continue;
    }
    const card = agent.card;
    if (!isObject(card)) {
      skip("the record has no card");
      continue;
    }
    const analysis = analyzeCard(card);
    if (!analysis.ok) {
      skip(
        `its card fails this registry's validation: ${analysis.errors
          .slice(0, 2)
          .map((e) => `${e.path || "/"} ${e.message}`)
          .join("; ")}`,
      );
      continue;
    }
    const facets = analysis.facets;
    // The card's text is stored as it came (escapes included); what is derived from it must be text.
    const derived = [
      analysis.name,
      analysis.description,
      analysis.primaryUrl,
      analysis.version,
      analysis.protocolVersion,
      facets.provider,
      ...facets.skills,
      ...facets.tags,
      ...facets.inputModes,
      ...facets.outputModes,
    ];
    if (!derived.every((value) => value === null || storableText(value))) {
      skip("its card holds a NUL character or a lone surrogate where this registry stores text");
      continue;
    }
    const cardRaw = raw[index]?.trim() || JSON.stringify(card);
    const now = new Date().toISOString();
    byOrigin.set(id, {
      seq,
      originId: id,
      columns: {
        name: analysis.name,
        description: analysis.description,
        url: analysis.primaryUrl,
        visibility,
        status,
        statusMessage: typeof agent.statusMessage === "string" ? freeText(agent.statusMessage, 500) : null,
        generation: analysis.generation,
        protocolVersion: analysis.protocolVersion,
        latestVersion: analysis.version,
        cardRaw,
        cardHash: cardHash(card),
        skills: facets.skills,
        tags: facets.tags,
        inputModes: facets.inputModes,
        outputModes: facets.outputModes,
        facetKeys: facetKeysOf(facets),
        streaming: facets.streaming,
        provider: facets.provider,
        signature: oneOf(agent.signature, ["none", "valid", "invalid"] as const) ?? "none",
        health: oneOf(agent.health, ["unknown", "up", "down"] as const) ?? "unknown",
        checkedAt: isoOr(agent.checkedAt, null),
        createdAt: isoOr(agent.createdAt, now)!,
        updatedAt: isoOr(agent.updatedAt, now)!,
      },
    });
  }

  const prepared: PreparedPage = {
    since,
    nextSince,
    hasMore,
    registry,
    upserts: [],
    deletes: [],
    skipped: [...unstorableIds],
    changes: changes.length,
  };
  for (const [originId, entry] of byOrigin) {
    if ("columns" in entry) prepared.upserts.push(entry);
    else {
      prepared.deletes.push(originId);
      if (entry.reason) prepared.skipped.push({ originId, reason: entry.reason });
    }
  }
  return prepared;
}
