import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import canonicalize from "canonicalize";
import {
  type CardAnalysis,
  type CardGeneration,
  CARD_LIMITS,
  analyzeCard,
  canonicalCardJson,
  cardHash,
} from "../src/modules/agents/card.ts";

// /work/shared is the sibling of the repository root.
const FIXTURES = new URL("../../shared/fixtures/agent-cards/", import.meta.url);

type Json = Record<string, unknown>;

function fixtureNames(dir: string): string[] {
  return readdirSync(new URL(`${dir}/`, FIXTURES))
    .filter((f) => f.endsWith(".json"))
    .sort();
}

function loadFixture(dir: string, name: string): Json {
  return JSON.parse(readFileSync(new URL(`${dir}/${name}`, FIXTURES), "utf8")) as Json;
}

const minimal = (): Json => loadFixture("valid", "minimal-0.3.json");
const translator = (): Json => loadFixture("valid", "translator-1.0.json");

function expectOk(result: CardAnalysis): Extract<CardAnalysis, { ok: true }> {
  if (!result.ok) throw new Error(`expected a valid card, got ${JSON.stringify(result.errors)}`);
  return result;
}

function errorsOf(result: CardAnalysis): { path: string; message: string }[] {
  if (result.ok) throw new Error("expected an invalid card");
  return result.errors;
}

function pathsOf(result: CardAnalysis): string[] {
  return [...new Set(errorsOf(result).map((e) => e.path))].sort();
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}

const EXPECTED: Record<string, Record<string, [CardGeneration, string]>> = {
  valid: {
    "minimal-0.3.json": ["0.3", "https://echo.example.net/a2a"],
    "translator-1.0.json": ["1.0", "https://translate.example.org/a2a"],
    "weather-0.3.json": ["0.3", "https://weather.example.com/a2a/v1"],
  },
  real: {
    "a2a-ext-v0.3.0-example.json": ["0.2", "https://example.com/agents/eightball"],
    "a2a-spec-v0.3.0-sample.json": ["0.3", "https://georoute-agent.example.com/a2a/v1"],
    "a2a-spec-v1.0-sample.json": ["1.0", "https://georoute-agent.example.com/a2a/v1"],
    "samples-adk-check-prime.json": ["0.2", "http://localhost:8001/a2a/check_prime_agent"],
    "samples-adk-currency.json": ["0.3", "http://localhost:10999"],
    "samples-adk-facts.json": ["0.2", "http://localhost:8001/a2a/facts_agent"],
    "samples-adk-human-in-loop.json": ["0.2", "http://localhost:8000/a2a/human_in_loop"],
    "samples-adk-skills.json": ["1.0", "http://localhost:10999"],
    "samples-air-ticketing.json": ["0.2", "http://localhost:10103/"],
    "samples-car-rental.json": ["0.2", "http://localhost:10105/"],
    "samples-commerce-profile.json": ["0.2", "https://seller.example.com/a2a"],
    "samples-hotel-booking.json": ["0.2", "http://localhost:10104/"],
    "samples-llama-index-file-chat.json": ["0.2", "http://localhost:10010/"],
    "samples-oixa-protocol.json": ["0.2", "http://oixa.io"],
    "samples-orchestrator.json": ["0.2", "http://localhost:10101/"],
    "samples-planner.json": ["0.2", "http://localhost:10102/"],
  },
};

const EXPECTED_INVALID: Record<string, string[]> = {
  "bad-url.json": ["/url"],
  "missing-skills.json": ["/skills"],
  "skill-without-id.json": ["/skills/0/id"],
  "wrong-types.json": ["/capabilities/streaming", "/defaultInputModes", "/description", "/name"],
};

describe("fixtures", () => {
  for (const dir of ["valid", "real"] as const) {
    test(`${dir}/: the expectation table covers every fixture`, () => {
      expect(fixtureNames(dir)).toEqual(Object.keys(EXPECTED[dir]!).sort());
    });
    for (const name of fixtureNames(dir)) {
      test(`${dir}/${name} is accepted`, () => {
        const card = deepFreeze(loadFixture(dir, name));
        const result = expectOk(analyzeCard(card));
        const [generation, primaryUrl] = EXPECTED[dir]![name]!;
        expect(result.generation).toBe(generation);
        expect(result.primaryUrl).toBe(primaryUrl);
        expect(result.name).toBe(card["name"] as string);
        expect(result.version).toBe(card["version"] as string);
        expect(result.description).toBe(card["description"] as string);
        if (generation === "0.2") expect(result.protocolVersion).toBeNull();
        else expect(typeof result.protocolVersion).toBe("string");
      });
    }
  }

  test("invalid/: the expectation table covers every fixture", () => {
    expect(fixtureNames("invalid")).toEqual(Object.keys(EXPECTED_INVALID).sort());
  });
  for (const name of fixtureNames("invalid")) {
    test(`invalid/${name} is rejected at the offending paths`, () => {
      const result = analyzeCard(loadFixture("invalid", name));
      expect(pathsOf(result)).toEqual(EXPECTED_INVALID[name]!);
      for (const error of errorsOf(result)) expect(error.message.length).toBeGreaterThan(0);
    });
  }

  test("messages are human readable", () => {
    const messages = (name: string) =>
      Object.fromEntries(errorsOf(analyzeCard(loadFixture("invalid", name))).map((e) => [e.path, e.message]));
    expect(messages("bad-url.json")["/url"]).toMatch(/not a valid url/i);
    expect(messages("missing-skills.json")["/skills"]).toBe("Required property");
    expect(messages("skill-without-id.json")["/skills/0/id"]).toBe("Required property");
    expect(messages("wrong-types.json")).toEqual({
      "/name": "Expected string",
      "/description": "Expected string",
      "/capabilities/streaming": "Expected boolean",
      "/defaultInputModes": "Expected array",
    });
  });
});

describe("generation detection", () => {
  test("1.0 primary url and protocolVersion come from the first interface", () => {
    const result = expectOk(analyzeCard(translator()));
    expect(result.protocolVersion).toBe("1.0");
    expect(result.primaryUrl).toBe("https://translate.example.org/a2a");
  });

  test("supportedInterfaces wins over a top-level url", () => {
    const card = { ...translator(), url: "https://other.example.org", protocolVersion: "0.3.0" };
    expect(expectOk(analyzeCard(card)).generation).toBe("1.0");
  });

  test("a card with neither url nor supportedInterfaces is rejected at /url", () => {
    const { url: _url, ...card } = minimal();
    const errors = errorsOf(analyzeCard(card));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe("/url");
    expect(errors[0]!.message).toMatch(/supportedInterfaces/);
  });

  test("no endpoint: the other problems of the card are reported as well", () => {
    expect(pathsOf(analyzeCard({ name: 3 }))).toEqual([
      "/capabilities",
      "/name",
      "/skills",
      "/url",
      "/version",
    ]);
  });

  test("0.3 errors are reported against the 0.3 schema (protocolVersion present)", () => {
    const { defaultInputModes: _m, ...card } = minimal();
    expect(pathsOf(analyzeCard(card))).toEqual(["/defaultInputModes"]);
  });

  test("1.0 errors are reported against the 1.0 schema, not as a union mismatch", () => {
    const { description: _d, ...card } = translator();
    const errors = errorsOf(analyzeCard(card));
    expect(errors).toEqual([{ path: "/description", message: "Required property" }]);
  });

  test("legacy 0.2: description, modes and skill description/tags may be missing", () => {
    const card = {
      name: "Old agent",
      url: "https://old.example.com/",
      version: "1",
      capabilities: {},
      skills: [{ id: "s", name: "S" }],
    };
    const result = expectOk(analyzeCard(card));
    expect(result.generation).toBe("0.2");
    expect(result.description).toBe("");
    expect(result.facets).toEqual({
      skills: ["s"],
      tags: [],
      inputModes: [],
      outputModes: [],
      streaming: false,
      provider: null,
    });
  });

  test("legacy 0.2 still requires name, version, capabilities, skills, skill id and name", () => {
    const card = { url: "https://old.example.com/", skills: [{ description: "x" }] };
    expect(pathsOf(analyzeCard(card))).toEqual([
      "/capabilities",
      "/name",
      "/skills/0/id",
      "/skills/0/name",
      "/version",
    ]);
  });

  test("legacy 0.2 optional members are type-checked when present", () => {
    const card = { ...minimal(), description: 5, defaultOutputModes: [1] } as Json;
    delete card["protocolVersion"];
    expect(pathsOf(analyzeCard(card))).toEqual(["/defaultOutputModes/0", "/description"]);
  });
});

describe("variations", () => {
  test("1.0 with empty supportedInterfaces", () => {
    const errors = errorsOf(analyzeCard({ ...translator(), supportedInterfaces: [] }));
    expect(errors).toEqual([{ path: "/supportedInterfaces", message: "Must contain at least one item" }]);
  });

  test("1.0 supportedInterfaces not an array", () => {
    expect(pathsOf(analyzeCard({ ...translator(), supportedInterfaces: "https://x.example" }))).toEqual([
      "/supportedInterfaces",
    ]);
  });

  test("1.0 interface url that is not a URL", () => {
    const card = translator();
    card["supportedInterfaces"] = [
      { url: "https://ok.example.org/a2a", protocolBinding: "JSONRPC", protocolVersion: "1.0" },
      { url: "not a url", protocolBinding: "GRPC", protocolVersion: "1.0" },
    ];
    const errors = errorsOf(analyzeCard(card));
    expect(errors).toHaveLength(1);
    expect(errors[0]!.path).toBe("/supportedInterfaces/1/url");
    expect(errors[0]!.message).toMatch(/not a valid url/i);
  });

  test("1.0 interface missing protocolBinding and protocolVersion", () => {
    const card = { ...translator(), supportedInterfaces: [{ url: "https://x.example.org" }] };
    expect(pathsOf(analyzeCard(card))).toEqual([
      "/supportedInterfaces/0/protocolBinding",
      "/supportedInterfaces/0/protocolVersion",
    ]);
  });

  test("ftp: and other non-http schemes are rejected", () => {
    for (const url of ["ftp://files.example.com/a2a", "file:///etc/passwd", "javascript:alert(1)"]) {
      const errors = errorsOf(analyzeCard({ ...minimal(), url }));
      expect(errors).toHaveLength(1);
      expect(errors[0]!.path).toBe("/url");
      expect(errors[0]!.message).toMatch(/http\(s\)/);
    }
    expect(errorsOf(analyzeCard({ ...minimal(), url: "ftp://x.example.com" }))[0]!.message).toContain("ftp:");
  });

  test("relative urls, urls with spaces and non-string urls are rejected", () => {
    for (const url of [
      "/a2a",
      "example.com/a2a",
      " https://x.example.com",
      "https://x.example.com/a b",
      "",
    ]) {
      expect(pathsOf(analyzeCard({ ...minimal(), url }))).toEqual(["/url"]);
    }
    expect(errorsOf(analyzeCard({ ...minimal(), url: 42 }))).toEqual([
      { path: "/url", message: "Expected string" },
    ]);
  });

  test("hosts are not restricted here (SSRF is checked elsewhere)", () => {
    for (const url of [
      "http://localhost:8080/",
      "http://127.0.0.1/",
      "http://10.0.0.1/a2a",
      "https://[::1]/",
    ]) {
      expect(expectOk(analyzeCard({ ...minimal(), url })).primaryUrl).toBe(url);
    }
  });

  test("provider, documentationUrl and iconUrl must be http(s) URLs when present", () => {
    const card = {
      ...minimal(),
      provider: { organization: "Org", url: "mailto:x@example.com" },
      documentationUrl: "docs",
      iconUrl: "data:image/png;base64,AAAA",
    };
    expect(pathsOf(analyzeCard(card))).toEqual(["/documentationUrl", "/iconUrl", "/provider/url"]);
  });

  test("missing version", () => {
    const { version: _v, ...card } = minimal();
    expect(errorsOf(analyzeCard(card))).toEqual([{ path: "/version", message: "Required property" }]);
    const { version: _v2, ...card10 } = translator();
    expect(pathsOf(analyzeCard(card10))).toEqual(["/version"]);
  });

  test("empty name and version are rejected", () => {
    expect(pathsOf(analyzeCard({ ...minimal(), name: "", version: "" }))).toEqual(["/name", "/version"]);
  });

  test("unknown fields are allowed everywhere and the input is not modified", () => {
    const card = {
      ...translator(),
      "x-vendor": { nested: [1, 2, { deep: true }] },
      contact: "ops@example.org",
      capabilities: { streaming: true, somethingNew: { a: 1 } },
      skills: [
        {
          id: "s",
          name: "S",
          description: "d",
          tags: ["t"],
          custom: null,
        },
      ],
    };
    const before = structuredClone(card);
    const frozen = deepFreeze(card);
    expect(analyzeCard(frozen).ok).toBe(true);
    expect(card).toEqual(before);
    expect(Object.keys(card)).toEqual(Object.keys(before));
  });

  test("an invalid card is not modified either", () => {
    const card = loadFixture("invalid", "wrong-types.json");
    const before = structuredClone(card);
    expect(analyzeCard(deepFreeze(card)).ok).toBe(false);
    expect(card).toEqual(before);
  });

  test("huge description over the limit", () => {
    const description = "x".repeat(CARD_LIMITS.descriptionLength + 1);
    const errors = errorsOf(analyzeCard({ ...minimal(), description }));
    expect(errors).toEqual([
      { path: "/description", message: `Must be at most ${CARD_LIMITS.descriptionLength} characters` },
    ]);
    expect(analyzeCard({ ...minimal(), description: "x".repeat(CARD_LIMITS.descriptionLength) }).ok).toBe(
      true,
    );
  });

  test("name and version length limits", () => {
    const card = {
      ...minimal(),
      name: "n".repeat(CARD_LIMITS.nameLength + 1),
      version: "1".repeat(CARD_LIMITS.versionLength + 1),
    };
    expect(pathsOf(analyzeCard(card))).toEqual(["/name", "/version"]);
  });

  test("300 skills exceed the skills limit", () => {
    const skill = (i: number) => ({ id: `s${i}`, name: `Skill ${i}`, description: "d", tags: ["t"] });
    const card = { ...minimal(), skills: Array.from({ length: 300 }, (_, i) => skill(i)) };
    expect(errorsOf(analyzeCard(card))).toEqual([
      { path: "/skills", message: `Must contain at most ${CARD_LIMITS.skills} items` },
    ]);
    const atLimit = { ...minimal(), skills: Array.from({ length: CARD_LIMITS.skills }, (_, i) => skill(i)) };
    expect(expectOk(analyzeCard(atLimit)).facets.skills).toHaveLength(2 * CARD_LIMITS.skills);
  });

  test("per-skill limits: tags, examples, string length", () => {
    const card = minimal();
    card["skills"] = [
      {
        id: "s",
        name: "n".repeat(CARD_LIMITS.stringLength + 1),
        description: "d",
        tags: Array.from({ length: CARD_LIMITS.tagsPerSkill + 1 }, (_, i) => `t${i}`),
        examples: Array.from({ length: CARD_LIMITS.examplesPerSkill + 1 }, () => "e"),
      },
    ];
    expect(pathsOf(analyzeCard(card))).toEqual(["/skills/0/examples", "/skills/0/name", "/skills/0/tags"]);
  });

  test("too many supportedInterfaces", () => {
    const iface = { url: "https://x.example.org/a2a", protocolBinding: "JSONRPC", protocolVersion: "1.0" };
    const card = { ...translator(), supportedInterfaces: Array.from({ length: 33 }, () => iface) };
    expect(pathsOf(analyzeCard(card))).toEqual(["/supportedInterfaces"]);
  });

  test("deep nesting of 10k levels does not crash and is reported", () => {
    let deep: unknown = "bottom";
    for (let i = 0; i < 10_000; i++) deep = { a: deep };
    const result = analyzeCard({ ...minimal(), extra: deep });
    const errors = errorsOf(result);
    expect(errors).toHaveLength(1);
    // card = depth 1, extra = 2, so the first container past the limit is 31 "a" levels below extra.
    expect(errors[0]!.path).toBe("/extra" + "/a".repeat(CARD_LIMITS.depth - 1));
    expect(errors[0]!.message).toMatch(/nesting/i);

    let deepArray: unknown = [];
    for (let i = 0; i < 10_000; i++) deepArray = [deepArray];
    const arrayErrors = errorsOf(analyzeCard({ ...minimal(), skills: deepArray }));
    // The depth error and the schema error of the same card are both reported.
    expect(arrayErrors.find((e) => /nesting/i.test(e.message))?.path).toBe("/skills" + "/0".repeat(31));
    expect(arrayErrors).toContainEqual({ path: "/skills/0", message: "Expected object" });
  });

  test("nesting up to the depth limit is accepted", () => {
    let deep: unknown = {};
    for (let i = 0; i < CARD_LIMITS.depth - 2; i++) deep = { a: deep };
    expect(analyzeCard({ ...minimal(), extra: deep }).ok).toBe(true); // card=1, extra=2 ... = depth
    expect(analyzeCard({ ...minimal(), extra: { a: deep } }).ok).toBe(false);
  });

  test("a cyclic object does not hang", () => {
    const cyclic: Json = { ...minimal() };
    cyclic["self"] = cyclic;
    expect(pathsOf(analyzeCard(cyclic))[0]).toStartWith("/self/self");
  });

  test("non-object inputs", () => {
    for (const input of [null, undefined, [], [minimal()], "card", "", 42, true]) {
      const errors = errorsOf(analyzeCard(input));
      expect(errors).toHaveLength(1);
      expect(errors[0]!.path).toBe("");
      expect(errors[0]!.message).toMatch(/^Expected object/);
    }
  });

  test("nested non-objects get type errors at their path", () => {
    const card = { ...minimal(), capabilities: [], skills: [null, "x"], provider: "Org" };
    expect(pathsOf(analyzeCard(card))).toEqual(["/capabilities", "/provider", "/skills/0", "/skills/1"]);
  });

  test("errors are capped and de-duplicated", () => {
    const card = { ...minimal(), skills: Array.from({ length: 200 }, () => ({})) };
    const errors = errorsOf(analyzeCard(card));
    expect(errors).toHaveLength(CARD_LIMITS.errors);
    const keys = errors.map((e) => `${e.path} ${e.message}`);
    expect(new Set(keys).size).toBe(keys.length);
  });

  test("JSON pointer escaping in paths", () => {
    let deep: unknown = {};
    for (let i = 0; i < CARD_LIMITS.depth; i++) deep = { "a/b~c": deep };
    const errors = errorsOf(analyzeCard({ ...minimal(), x: deep }));
    expect(errors[0]!.path).toStartWith("/x/a~1b~0c/");
  });
});

describe("facets", () => {
  test("weather card", () => {
    const result = expectOk(analyzeCard(loadFixture("valid", "weather-0.3.json")));
    expect(result.facets).toEqual({
      skills: ["current weather", "current-weather", "forecast", "seven-day forecast"],
      tags: ["forecast", "temperature", "weather", "wind"],
      inputModes: ["application/json", "text/plain"],
      outputModes: ["application/json", "text/plain"],
      streaming: true,
      provider: "Example Weather Co",
    });
  });

  test("skill modes are merged with the defaults; values trimmed, lowercased, de-duplicated, sorted", () => {
    const card = {
      ...minimal(),
      defaultInputModes: [" Text/Plain ", "text/plain"],
      defaultOutputModes: ["TEXT/PLAIN"],
      capabilities: { streaming: false },
      tags: ["Top", 7, "  "],
      skills: [
        {
          id: "B",
          name: "b",
          description: "",
          tags: ["Z", " a "],
          inputModes: ["image/PNG"],
          outputModes: ["x/y"],
        },
        { id: "a", name: "Alpha ", description: "", tags: ["z"] },
      ],
    };
    expect(expectOk(analyzeCard(card)).facets).toEqual({
      skills: ["a", "alpha", "b"],
      tags: ["a", "top", "z"],
      inputModes: ["image/png", "text/plain"],
      outputModes: ["text/plain", "x/y"],
      streaming: false,
      provider: null,
    });
  });

  test("streaming only when capabilities.streaming is true; provider organization", () => {
    const real = expectOk(analyzeCard(loadFixture("real", "a2a-spec-v1.0-sample.json")));
    expect(real.facets.streaming).toBe(true);
    expect(real.facets.provider).toBe("Example Geo Services Inc.");
    expect(real.facets.inputModes).toEqual(["application/json", "text/plain"]);
    expect(real.facets.outputModes).toEqual([
      "application/json",
      "application/vnd.geo+json",
      "image/jpeg",
      "image/png",
      "text/html",
    ]);
    expect(expectOk(analyzeCard(minimal())).facets.streaming).toBe(false);
  });
});

describe("canonical JSON and hash", () => {
  test("canonical JSON does not depend on key order", () => {
    const a = { b: 1, a: { y: [3, { d: 1, c: 2 }], x: "é" }, url: "https://x" };
    const b = { url: "https://x", a: { x: "é", y: [3, { c: 2, d: 1 }] }, b: 1 };
    expect(canonicalCardJson(a)).toBe(canonicalCardJson(b));
    expect(canonicalCardJson(a)).toBe('{"a":{"x":"é","y":[3,{"c":2,"d":1}]},"b":1,"url":"https://x"}');
    expect(cardHash(a)).toBe(cardHash(b));
  });

  test("RFC 8785 number and string serialization", () => {
    expect(canonicalCardJson({ n: 1.0, e: 1e21, f: 0.000001, s: "\u2028\n" })).toBe(
      '{"e":1e+21,"f":0.000001,"n":1,"s":"\u2028\\n"}',
    );
  });

  test("cardHash is sha256 hex of the canonical JSON of the whole card", () => {
    const card = loadFixture("real", "a2a-spec-v1.0-sample.json");
    const hash = cardHash(card);
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
    expect(hash).toBe(cardHash(structuredClone(card)));
    expect(hash).toBe(createHash("sha256").update(canonicalize(card)!).digest("hex"));
    expect(hash).not.toBe(createHash("sha256").update(canonicalCardJson(card)).digest("hex"));
  });

  test("cardHash is stable and changes with content, including signatures", () => {
    const card = minimal();
    const hash = cardHash(card);
    expect(cardHash(minimal())).toBe(hash);
    expect(cardHash({ ...card, version: "0.0.2" })).not.toBe(hash);
    expect(cardHash({ ...card, signatures: [{ protected: "a", signature: "b" }] })).not.toBe(hash);
    const reordered = Object.fromEntries(Object.entries(card).reverse());
    expect(cardHash(reordered)).toBe(hash);
  });

  test("canonicalCardJson drops top-level signatures only and keeps the input intact", () => {
    const card = loadFixture("real", "a2a-spec-v0.3.0-sample.json");
    const before = structuredClone(card);
    const json = canonicalCardJson(deepFreeze(card));
    expect(json).not.toContain('"signatures"');
    const { signatures: _s, ...unsigned } = before;
    expect(JSON.parse(json)).toEqual(unsigned);
    expect(card).toEqual(before);
    expect(canonicalCardJson(unsigned)).toBe(json);

    const nested = { a: { signatures: [1] }, signatures: [2] };
    expect(canonicalCardJson(nested)).toBe('{"a":{"signatures":[1]}}');
    expect(cardHash(card)).not.toBe(cardHash(unsigned));
  });
});
