/**
 * A2A Agent Card analysis: generation detection, validation, facets, canonical JSON and hashing.
 *
 * Three card generations are accepted (see ARCHITECTURE.md, "HTTP contract" / Agents):
 * - 1.0: has `supportedInterfaces`; the primary url is the first interface's `url`.
 * - 0.3: has a top-level `url` and `protocolVersion` (0.3.x, also the late 0.2.6+ cards that already
 *   carry `protocolVersion`); the primary url is the top-level `url`.
 * - 0.2: legacy cards with a top-level `url` but no `protocolVersion` (most agents in the wild).
 *
 * The generation is detected first and the card is then checked against that generation's schema
 * only, so errors always describe the detected generation (never a union mismatch).
 *
 * Cards are kept verbatim by the registry: unknown members are allowed everywhere and the input is never
 * mutated (no Value.Clean / Value.Default), only read.
 */
import { type Static, type TSchema, FormatRegistry, Type } from "@sinclair/typebox";
import { TypeCompiler, type TypeCheck } from "@sinclair/typebox/compiler";
import { type ValueError, ValueErrorType } from "@sinclair/typebox/errors";
import canonicalize from "canonicalize";
import { createHash } from "node:crypto";

// ---------------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------------

export type CardGeneration = "1.0" | "0.3" | "0.2";
/** `path` is a JSON pointer (RFC 6901) into the card, e.g. "/skills/0/id"; "" is the card itself. */
export type CardIssue = { path: string; message: string };
export type CardFacets = {
  skills: string[];
  tags: string[];
  inputModes: string[];
  outputModes: string[];
  streaming: boolean;
  provider: string | null;
};
export type CardAnalysis =
  | {
      ok: true;
      generation: CardGeneration;
      protocolVersion: string | null;
      primaryUrl: string;
      name: string;
      description: string;
      version: string;
      facets: CardFacets;
    }
  | { ok: false; errors: CardIssue[] };

// ---------------------------------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------------------------------

/**
 * Explicit limits, enforced as validation errors (422 INVALID_AGENT_CARD with a path). They bound the
 * cost of storing, indexing and faceting a card; every one is far above what real cards use (the
 * largest fixture has 5 skills, 5 tags per skill, descriptions under 300 characters, depth 6).
 * String lengths are counted in UTF-16 code units (JavaScript `length`).
 */
export const CARD_LIMITS = {
  /** Card `name`: shown in lists and search results, a title not a text. */
  nameLength: 256,
  /** Card `version`: an identifier (versions are addressed as /versions/:version), semver-sized. */
  versionLength: 64,
  /** Card `description` and each skill's `description`: free text, 16 KiB of characters. */
  descriptionLength: 16_384,
  /** Every URL (primary url, interface urls, provider/documentation/icon urls): common browser limit. */
  urlLength: 2_048,
  /** Any other string that the schema types (skill id/name, tags, examples, modes, transports, ...). */
  stringLength: 4_096,
  /** Number of `skills`: each one is indexed and becomes facet values. */
  skills: 256,
  /** `tags` per skill (and the non-spec top-level `tags` taken into facets). */
  tagsPerSkill: 64,
  /** `examples` per skill. */
  examplesPerSkill: 64,
  /** Entries of `defaultInputModes` / `defaultOutputModes` and of each skill's `inputModes` / `outputModes`. */
  modes: 64,
  /** `supportedInterfaces` (1.0) and `additionalInterfaces` (0.3): one per transport and url is plenty. */
  interfaces: 32,
  /** `capabilities.extensions`. */
  extensions: 64,
  /** `signatures` (each one is verified on publish, so this also bounds crypto work). */
  signatures: 16,
  /**
   * Nesting depth of the whole card, unknown members included; the card object itself is depth 1.
   * Checked iteratively, so a hostile card cannot exhaust the stack here or later (canonicalize recurses).
   */
  depth: 32,
  /** At most this many errors are reported for one card. */
  errors: 50,
} as const;

// ---------------------------------------------------------------------------------------------------
// Schemas (TypeBox). Objects allow additional properties (TypeBox default: no `additionalProperties`).
// ---------------------------------------------------------------------------------------------------

const HTTP_URL_FORMAT = "a2a-http-url";

/** Absolute http: or https: URL with a host, parsed with WHATWG `new URL`; no host restrictions here. */
function isHttpUrl(value: string): boolean {
  // The URL parser silently strips surrounding and embedded whitespace/control characters; a card that
  // carries them does not have a URL we could give back verbatim, so reject them instead.
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) <= 0x20) return false;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  return (url.protocol === "http:" || url.protocol === "https:") && url.hostname !== "";
}

if (!FormatRegistry.Has(HTTP_URL_FORMAT)) FormatRegistry.Set(HTTP_URL_FORMAT, isHttpUrl);

const L = CARD_LIMITS;
const HttpUrl = Type.String({ format: HTTP_URL_FORMAT, maxLength: L.urlLength });
const Text = (maxLength: number = L.stringLength) => Type.String({ maxLength });
const NonEmpty = (maxLength: number) => Type.String({ minLength: 1, maxLength });
const Strings = (maxItems: number) => Type.Array(Text(), { maxItems });
const Modes = Strings(L.modes);
/** Any JSON object (its members are not checked: security shapes differ between generations). */
const JsonObject = Type.Record(Type.String(), Type.Unknown());

const AgentProvider = Type.Object({ organization: Text(), url: HttpUrl });

const AgentExtension = Type.Object({
  uri: Text(L.urlLength),
  description: Type.Optional(Text(L.descriptionLength)),
  required: Type.Optional(Type.Boolean()),
  params: Type.Optional(JsonObject),
});

/** Union of the 0.2/0.3 and 1.0 capability members; every one is optional in every generation. */
const AgentCapabilities = Type.Object({
  streaming: Type.Optional(Type.Boolean()),
  pushNotifications: Type.Optional(Type.Boolean()),
  stateTransitionHistory: Type.Optional(Type.Boolean()),
  extendedAgentCard: Type.Optional(Type.Boolean()),
  extensions: Type.Optional(Type.Array(AgentExtension, { maxItems: L.extensions })),
});

const AgentCardSignature = Type.Object({
  protected: Text(L.descriptionLength),
  signature: Text(L.descriptionLength),
  header: Type.Optional(JsonObject),
});

const skillCommon = {
  id: NonEmpty(L.stringLength),
  name: Text(),
  examples: Type.Optional(Strings(L.examplesPerSkill)),
  inputModes: Type.Optional(Modes),
  outputModes: Type.Optional(Modes),
  security: Type.Optional(Type.Array(JsonObject)),
  securityRequirements: Type.Optional(Type.Array(JsonObject)),
};

/** 0.3 and 1.0 skill: id, name, description and tags are required by both specs. */
const AgentSkill = Type.Object({
  ...skillCommon,
  description: Text(L.descriptionLength),
  tags: Strings(L.tagsPerSkill),
});

/** Legacy 0.2 skill: only id and name are required (see AgentCardV02 below). */
const AgentSkillLegacy = Type.Object({
  ...skillCommon,
  description: Type.Optional(Text(L.descriptionLength)),
  tags: Type.Optional(Strings(L.tagsPerSkill)),
});

/** Members shared by every generation, typed the same way everywhere. */
const cardCommon = {
  // Non-empty: the registry lists and searches by name, and addresses versions by `version`.
  name: NonEmpty(L.nameLength),
  version: NonEmpty(L.versionLength),
  provider: Type.Optional(AgentProvider),
  documentationUrl: Type.Optional(HttpUrl),
  iconUrl: Type.Optional(HttpUrl),
  capabilities: AgentCapabilities,
  securitySchemes: Type.Optional(JsonObject),
  signatures: Type.Optional(Type.Array(AgentCardSignature, { maxItems: L.signatures })),
};

/** 0.2/0.3 transport members (1.0 replaced them with `supportedInterfaces`). */
const cardTransport03 = {
  url: HttpUrl,
  preferredTransport: Type.Optional(Text()),
  additionalInterfaces: Type.Optional(
    Type.Array(Type.Object({ url: Text(L.urlLength), transport: Text() }), { maxItems: L.interfaces }),
  ),
  security: Type.Optional(Type.Array(JsonObject)),
  supportsAuthenticatedExtendedCard: Type.Optional(Type.Boolean()),
};

/** A2A 1.0 (a2a.proto `AgentCard`, JSON names are the lowerCamelCase of the proto fields). */
export const AgentCardV10Schema = Type.Object({
  ...cardCommon,
  description: Text(L.descriptionLength),
  supportedInterfaces: Type.Array(
    Type.Object({
      url: HttpUrl,
      protocolBinding: Text(),
      protocolVersion: Text(L.versionLength),
      tenant: Type.Optional(Text()),
    }),
    { minItems: 1, maxItems: L.interfaces },
  ),
  defaultInputModes: Modes,
  defaultOutputModes: Modes,
  skills: Type.Array(AgentSkill, { maxItems: L.skills }),
  securityRequirements: Type.Optional(Type.Array(JsonObject)),
});

/** A2A 0.3.x (official JSON Schema a2a-v0.3.0, `definitions.AgentCard.required`). */
export const AgentCardV03Schema = Type.Object({
  ...cardCommon,
  ...cardTransport03,
  protocolVersion: Text(L.versionLength),
  description: Text(L.descriptionLength),
  defaultInputModes: Modes,
  defaultOutputModes: Modes,
  skills: Type.Array(AgentSkill, { maxItems: L.skills }),
});

/**
 * Legacy A2A 0.2.x card (no `protocolVersion`).
 *
 * Required: name, url, version, capabilities, skills; per skill: id and name. Optional (but typed when
 * present): description, defaultInputModes, defaultOutputModes, skill description and tags.
 * Why: the official 0.2.6/0.3.0 schemas require protocolVersion, description, both mode lists and skill
 * description/tags, but cards written against the early 0.1/0.2 schema (required only name, url,
 * version, capabilities, skills and skill id/name; description was optional and the modes defaulted to
 * ["text"]) are still served. Every real card in fixtures/agent-cards/real/ lacks only
 * `protocolVersion`, so they pass either way; accepting the older minimum costs nothing, and a missing
 * description simply becomes "" and missing modes add no facets. What the registry itself needs (a
 * name to show, an endpoint, a version key, skills to index) stays required. `null` is not accepted for
 * optional members (the SDKs serialize with exclude_none).
 */
export const AgentCardV02Schema = Type.Object({
  ...cardCommon,
  ...cardTransport03,
  provider: Type.Optional(Type.Object({ organization: Text(), url: Type.Optional(HttpUrl) })),
  description: Type.Optional(Text(L.descriptionLength)),
  defaultInputModes: Type.Optional(Modes),
  defaultOutputModes: Type.Optional(Modes),
  skills: Type.Array(AgentSkillLegacy, { maxItems: L.skills }),
});

export type AgentCardV10 = typeof AgentCardV10Schema.static;
export type AgentCardV03 = typeof AgentCardV03Schema.static;
export type AgentCardV02 = typeof AgentCardV02Schema.static;
export type AgentCard = AgentCardV10 | AgentCardV03 | AgentCardV02;
export type AgentSkill = Static<typeof AgentSkillLegacy>;

// Compiled once at module load (the publish path runs these for every card).
const checkV10 = TypeCompiler.Compile(AgentCardV10Schema);
const checkV03 = TypeCompiler.Compile(AgentCardV03Schema);
const checkV02 = TypeCompiler.Compile(AgentCardV02Schema);

// ---------------------------------------------------------------------------------------------------
// Analysis
// ---------------------------------------------------------------------------------------------------

type JsonRecord = Record<string, unknown>;

function isRecord(value: unknown): value is JsonRecord {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function escapePointer(key: string): string {
  return key.replace(/~/g, "~0").replace(/\//g, "~1");
}

/**
 * Iterative depth check (no recursion, stops at the first violation). Returns the JSON pointer of the
 * first container nested deeper than the limit, or null.
 */
function findTooDeep(root: unknown, maxDepth: number): string | null {
  type Frame = { value: unknown; depth: number; key: string; parent: Frame | null };
  const stack: Frame[] = [{ value: root, depth: 1, key: "", parent: null }];
  while (stack.length > 0) {
    const frame = stack.pop()!;
    if (frame.depth > maxDepth) {
      const keys: string[] = [];
      for (let f: Frame | null = frame; f?.parent; f = f.parent) keys.push(escapePointer(f.key));
      return keys.length === 0 ? "" : "/" + keys.reverse().join("/");
    }
    const { value } = frame;
    if (Array.isArray(value)) {
      for (let i = value.length - 1; i >= 0; i--) {
        const child: unknown = value[i];
        if (typeof child === "object" && child !== null) {
          stack.push({ value: child, depth: frame.depth + 1, key: String(i), parent: frame });
        }
      }
    } else if (typeof value === "object" && value !== null) {
      for (const [key, child] of Object.entries(value)) {
        if (typeof child === "object" && child !== null) {
          stack.push({ value: child, depth: frame.depth + 1, key, parent: frame });
        }
      }
    }
  }
  return null;
}

function numberOf(schema: TSchema, key: string): number | undefined {
  const value: unknown = (schema as Record<string, unknown>)[key];
  return typeof value === "number" ? value : undefined;
}

function urlMessage(value: unknown): string {
  if (typeof value === "string" && URL.canParse(value)) {
    const { protocol } = new URL(value);
    if (protocol !== "http:" && protocol !== "https:") {
      return `Must be an absolute http(s) URL (scheme ${protocol} is not allowed)`;
    }
  }
  return "Not a valid URL: must be an absolute http(s) URL";
}

/** Human readable message for one TypeBox error (independent of TypeBox's global error function). */
function messageFor(error: ValueError): string {
  const { schema } = error;
  switch (error.type) {
    case ValueErrorType.ObjectRequiredProperty:
      return "Required property";
    case ValueErrorType.String:
      return "Expected string";
    case ValueErrorType.Boolean:
      return "Expected boolean";
    case ValueErrorType.Array:
      return "Expected array";
    case ValueErrorType.Object:
      return "Expected object";
    case ValueErrorType.StringFormat:
      return urlMessage(error.value);
    case ValueErrorType.StringMinLength:
      return "Must not be empty";
    case ValueErrorType.StringMaxLength:
      return `Must be at most ${numberOf(schema, "maxLength")} characters`;
    case ValueErrorType.ArrayMinItems:
      return numberOf(schema, "minItems") === 1
        ? "Must contain at least one item"
        : `Must contain at least ${numberOf(schema, "minItems")} items`;
    case ValueErrorType.ArrayMaxItems:
      return `Must contain at most ${numberOf(schema, "maxItems")} items`;
    default:
      return error.message;
  }
}

class IssueList {
  readonly items: CardIssue[] = [];
  private readonly seen = new Set<string>();
  get full(): boolean {
    return this.items.length >= CARD_LIMITS.errors;
  }
  add(path: string, message: string): void {
    const key = path + "\u0000" + message;
    if (this.full || this.seen.has(key)) return;
    this.seen.add(key);
    this.items.push({ path, message });
  }
}

function collectSchemaErrors(
  check: TypeCheck<TSchema>,
  card: unknown,
  issues: IssueList,
  skipPath?: string,
): void {
  for (const error of check.Errors(card)) {
    if (issues.full) return;
    if (error.path === skipPath) continue;
    // A missing required member yields "Required property" plus the member's own type error on
    // `undefined`; keep only the former. Optional members are only visited when present.
    if (error.value === undefined && error.type !== ValueErrorType.ObjectRequiredProperty) continue;
    issues.add(error.path, messageFor(error));
  }
}

function detect(card: JsonRecord): { generation: CardGeneration; check: TypeCheck<TSchema> } | null {
  if (card["supportedInterfaces"] !== undefined) return { generation: "1.0", check: checkV10 };
  if (card["url"] !== undefined) {
    return card["protocolVersion"] !== undefined
      ? { generation: "0.3", check: checkV03 }
      : { generation: "0.2", check: checkV02 };
  }
  return null;
}

const NO_ENDPOINT =
  "Required property: an Agent Card needs a top-level url (A2A 0.2/0.3) or supportedInterfaces (A2A 1.0)";

/** Validates a parsed Agent Card (never mutates it) and extracts what the registry indexes. */
export function analyzeCard(card: unknown): CardAnalysis {
  if (!isRecord(card)) {
    const got = card === null ? "null" : Array.isArray(card) ? "array" : typeof card;
    return { ok: false, errors: [{ path: "", message: `Expected object (an Agent Card), got ${got}` }] };
  }
  const issues = new IssueList();
  const tooDeep = findTooDeep(card, CARD_LIMITS.depth);
  if (tooDeep !== null) issues.add(tooDeep, `Nesting deeper than ${CARD_LIMITS.depth} levels`);

  const detected = detect(card);
  if (detected === null) {
    // Neither generation marker: report against the most lenient (legacy) schema, so the endpoint error
    // comes with every other problem of the card, and explain the missing endpoint at /url.
    issues.add("/url", NO_ENDPOINT);
    collectSchemaErrors(checkV02, card, issues, "/url");
    return { ok: false, errors: issues.items };
  }

  const { generation, check } = detected;
  if (!check.Check(card)) collectSchemaErrors(check, card, issues);
  if (issues.items.length > 0) return { ok: false, errors: issues.items };

  switch (generation) {
    case "1.0": {
      const typed = card as AgentCardV10;
      const first = typed.supportedInterfaces[0]!; // minItems: 1
      return success(generation, first.protocolVersion, first.url, typed, card);
    }
    case "0.3": {
      const typed = card as AgentCardV03;
      return success(generation, typed.protocolVersion, typed.url, typed, card);
    }
    case "0.2": {
      const typed = card as AgentCardV02;
      return success(generation, null, typed.url, typed, card);
    }
  }
}

/** The members every validated generation has, in their most lenient (0.2) typing. */
type CardCore = Pick<
  AgentCardV02,
  "name" | "version" | "description" | "capabilities" | "defaultInputModes" | "defaultOutputModes"
> & {
  skills: ReadonlyArray<AgentSkill>;
  provider?: { organization: string } | undefined;
};

function success(
  generation: CardGeneration,
  protocolVersion: string | null,
  primaryUrl: string,
  card: CardCore,
  raw: JsonRecord,
): CardAnalysis {
  return {
    ok: true,
    generation,
    protocolVersion,
    primaryUrl,
    name: card.name,
    description: card.description ?? "",
    version: card.version,
    facets: facetsOf(card, raw),
  };
}

// ---------------------------------------------------------------------------------------------------
// Facets
// ---------------------------------------------------------------------------------------------------

class FacetSet {
  private readonly values = new Set<string>();
  add(value: string): void {
    const normalized = value.trim().toLowerCase();
    if (normalized !== "") this.values.add(normalized);
  }
  addAll(values: ReadonlyArray<string> | undefined): void {
    if (values) for (const value of values) this.add(value);
  }
  sorted(): string[] {
    return [...this.values].sort();
  }
}

function facetsOf(card: CardCore, raw: JsonRecord): CardFacets {
  const skills = new FacetSet();
  const tags = new FacetSet();
  const inputModes = new FacetSet();
  const outputModes = new FacetSet();
  inputModes.addAll(card.defaultInputModes);
  outputModes.addAll(card.defaultOutputModes);
  for (const skill of card.skills) {
    skills.add(skill.id);
    skills.add(skill.name);
    tags.addAll(skill.tags);
    inputModes.addAll(skill.inputModes);
    outputModes.addAll(skill.outputModes);
  }
  // Top-level `tags` is not part of any spec, so it is not validated: it is used when it is an array,
  // taking its string entries within the per-skill tag limits, and ignored otherwise.
  const extraTags = raw["tags"];
  if (Array.isArray(extraTags)) {
    let taken = 0;
    for (const tag of extraTags) {
      if (taken >= CARD_LIMITS.tagsPerSkill) break;
      if (typeof tag === "string" && tag.length <= CARD_LIMITS.stringLength) {
        tags.add(tag);
        taken++;
      }
    }
  }
  const organization = card.provider?.organization.trim();
  return {
    skills: skills.sorted(),
    tags: tags.sorted(),
    inputModes: inputModes.sorted(),
    outputModes: outputModes.sorted(),
    streaming: card.capabilities.streaming === true,
    provider: organization ? organization : null,
  };
}

// ---------------------------------------------------------------------------------------------------
// Canonical JSON and hash
// ---------------------------------------------------------------------------------------------------

function canonical(value: unknown): string {
  const json = canonicalize(value);
  if (json === undefined) throw new TypeError("Value has no JSON representation");
  return json;
}

/**
 * RFC 8785 (JCS) canonical JSON of the card without its top-level `signatures` member: the payload that
 * card signatures (JWS, detached) are computed over. The input is not modified.
 */
export function canonicalCardJson(card: unknown): string {
  if (isRecord(card) && Object.hasOwn(card, "signatures")) {
    const { signatures: _signatures, ...unsigned } = card;
    return canonical(unsigned);
  }
  return canonical(card);
}

/** sha256 (lowercase hex) of the RFC 8785 canonical JSON of the whole card, signatures included. */
export function cardHash(card: unknown): string {
  return createHash("sha256").update(canonical(card)).digest("hex");
}
