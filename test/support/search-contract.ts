import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { json, type TestApp } from "./app";

/**
 * The search contract every backend must keep (GET /v1/search in ARCHITECTURE.md), run against each
 * backend by the suites that import it. The corpus is published through the API, and the expected
 * totals and facets are computed here from the cards themselves, independently of any backend.
 */

type Skill = { id: string; name: string; description: string; tags: string[] };
export type Spec = {
  key: string;
  name: string;
  description: string;
  skills: Skill[];
  provider?: string;
  inputModes?: string[];
  outputModes?: string[];
  streaming?: boolean;
  owner?: "writer" | "other";
  visibility?: "public" | "private";
  entitle?: "reader";
};

export const skill = (id: string, tags: string[], description = `Does ${id}`): Skill => ({
  id,
  name: id.replace(/-/g, " "),
  description,
  tags,
});

export const CORPUS: Spec[] = [
  {
    key: "forecast-name",
    name: "Forecast Pro",
    description: "Answers questions for travellers.",
    skills: [skill("daily-outlook", ["weather", "travel"])],
    provider: "Skyline Labs",
    streaming: true,
  },
  {
    key: "forecast-description",
    name: "Helper Desk",
    description: "General helper that can also forecast rain when asked.",
    skills: [skill("answers", ["support"])],
    provider: "Acme",
  },
  {
    key: "weather",
    name: "Weather Oracle",
    description: "Current conditions for any city.",
    skills: [skill("current-conditions", ["weather"]), skill("alerts", ["weather", "alerts"])],
    provider: "Skyline Labs",
    inputModes: ["text/plain", "application/json"],
    outputModes: ["application/json"],
    streaming: true,
  },
  {
    key: "translator",
    name: "Polyglot Translator",
    description: "Translates documents between forty languages.",
    skills: [skill("translate-text", ["language", "translation"]), skill("detect-language", ["language"])],
    provider: "Acme",
    inputModes: ["text/plain"],
    outputModes: ["text/plain"],
  },
  {
    key: "ledger",
    name: "Ledger Keeper",
    description: "Reconciles invoices and payments.",
    skills: [skill("reconcile", ["finance", "accounting"]), skill("invoice-parse", ["finance", "documents"])],
    provider: "Numbers Inc",
    inputModes: ["application/pdf", "text/plain"],
    outputModes: ["application/json"],
  },
  {
    key: "stocks",
    name: "Stock Ticker",
    description: "Quotes and charts for equities.",
    skills: [skill("quote", ["finance", "markets"])],
    provider: "Numbers Inc",
    streaming: true,
  },
  {
    key: "private-finance",
    name: "Secret Treasury",
    description: "Private treasury forecasting for one company.",
    skills: [skill("cash-forecast", ["finance", "confidential-tag"])],
    provider: "Hidden Provider",
    visibility: "private",
    owner: "writer",
  },
  {
    key: "private-entitled",
    name: "Entitled Weather Vault",
    description: "Weather archive shared with selected partners.",
    skills: [skill("archive-lookup", ["weather", "archive-only-tag"])],
    provider: "Vault Co",
    visibility: "private",
    owner: "other",
    entitle: "reader",
  },
  {
    key: "recipes",
    name: "Kitchen Companion",
    description: "Suggests recipes from what is in the fridge.",
    skills: [skill("suggest-recipe", ["cooking", "food"])],
    provider: "Acme",
    outputModes: ["text/markdown"],
  },
  {
    key: "code",
    name: "Code Reviewer",
    description: "Reviews pull requests and suggests fixes.",
    skills: [skill("review", ["code", "developer-tools"]), skill("explain", ["code"])],
    provider: "Devtools Ltd",
    streaming: false,
  },
];

let run = 0;

export function cardOf(spec: Spec, salt: string) {
  return {
    protocolVersion: "0.3.0",
    name: spec.name,
    description: spec.description,
    url: `https://${spec.key}-${salt}.example.com/a2a`,
    version: "1.0.0",
    capabilities: { streaming: spec.streaming ?? false },
    defaultInputModes: spec.inputModes ?? ["text/plain"],
    defaultOutputModes: spec.outputModes ?? ["text/plain"],
    ...(spec.provider ? { provider: { organization: spec.provider, url: "https://example.com" } } : {}),
    skills: spec.skills,
  };
}

/** Per-agent facet values as the contract defines them: lower-cased, skills by id and by name. */
function facetValuesOf(spec: Spec) {
  const card = cardOf(spec, "x");
  const set = (values: string[]) => [...new Set(values.map((v) => v.trim().toLowerCase()))];
  return {
    tags: set(spec.skills.flatMap((s) => s.tags)),
    skills: set(spec.skills.flatMap((s) => [s.id, s.name])),
    providers: spec.provider ? [spec.provider] : [],
    inputModes: set(card.defaultInputModes),
    outputModes: set(card.defaultOutputModes),
  };
}

type FacetName = "tags" | "skills" | "providers" | "inputModes" | "outputModes";
type FacetList = { value: string; count: number }[];
type SearchBody = {
  items: { agent: { id: string; name: string; visibility: string; status: string }; score: number }[];
  total: number;
  totalIsEstimate: boolean;
  facets: Record<FacetName, FacetList>;
  nextCursor: string | null;
};

export function expectedFacets(specs: Spec[]): Record<FacetName, FacetList> {
  const result = {} as Record<FacetName, FacetList>;
  for (const facet of ["tags", "skills", "providers", "inputModes", "outputModes"] as FacetName[]) {
    const counts = new Map<string, number>();
    for (const spec of specs)
      for (const value of facetValuesOf(spec)[facet]) counts.set(value, (counts.get(value) ?? 0) + 1);
    result[facet] = [...counts]
      .map(([value, count]) => ({ value, count }))
      .sort((a, b) => b.count - a.count || (a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
  }
  return result;
}

export type ContractOptions = {
  /** Builds a fresh app on the backend under test (its own database). */
  makeApp(): Promise<TestApp>;
  /** Relevance depends on the engine's scoring: only suites with a real engine run those cases. */
  relevance: boolean;
  /** The backend that must have answered (no silent fallback to another one). */
  backend: "postgres" | "elasticsearch";
};

export function searchContract(label: string, options: ContractOptions) {
  describe(`search contract [${label}]`, () => {
    let t: TestApp;
    let writer: { clientId: string; token: string };
    let other: { clientId: string; token: string };
    let reader: { clientId: string; token: string };
    let stranger: { clientId: string; token: string };
    let admin: { clientId: string; token: string };
    const ids = new Map<string, string>();
    const salt = `${Date.now().toString(36)}${run++}`;

    const search = async (query: Record<string, string | number | boolean>, token?: string) => {
      const params = new URLSearchParams(Object.entries(query).map(([k, v]) => [k, String(v)]));
      const res = await t.request(`/v1/search?${params}`, { token });
      if (res.status !== 200) throw new Error(`search ${params} -> ${res.status}: ${await res.text()}`);
      return json<SearchBody>(res);
    };
    const namesOf = (body: SearchBody) => body.items.map((item) => item.agent.name);
    const visibleTo = (who: "anonymous" | "writer" | "other" | "reader" | "admin") =>
      CORPUS.filter(
        (spec) =>
          spec.visibility !== "private" ||
          who === "admin" ||
          spec.owner === who ||
          (spec.entitle !== undefined && spec.entitle === who),
      );

    beforeAll(async () => {
      t = await options.makeApp();
      [writer, other, reader, stranger, admin] = await Promise.all([
        t.client(["agents:write"], "writer"),
        t.client(["agents:write"], "other"),
        t.client(["agents:read"], "reader"),
        t.client(["agents:read"], "stranger"),
        t.client(["admin"], "admin"),
      ]);
      const tokens = { writer, other };
      for (const spec of CORPUS) {
        const res = await t.request("/v1/agents", {
          method: "POST",
          token: tokens[spec.owner ?? "writer"].token,
          json: { card: cardOf(spec, salt), visibility: spec.visibility ?? "public" },
        });
        if (res.status !== 201) throw new Error(`seed ${spec.key}: ${res.status} ${await res.text()}`);
        const body = await json<{ id: string }>(res);
        ids.set(spec.key, body.id);
        if (spec.entitle) {
          const grant = await t.request(`/v1/agents/${body.id}/entitlements/${reader.clientId}`, {
            method: "PUT",
            token: tokens[spec.owner ?? "writer"].token,
          });
          if (grant.status >= 300) throw new Error(`grant: ${grant.status} ${await grant.text()}`);
        }
      }
    }, 60_000);
    afterAll(() => t.close());

    describe("happy", () => {
      test("an empty query lists every visible agent, newest first, with exact total and facets", async () => {
        const body = await search({ limit: 100, consistent: true });
        const expected = visibleTo("anonymous");
        expect(body.total).toBe(expected.length);
        // A registry this small is always counted exactly.
        expect(body.totalIsEstimate).toBe(false);
        expect(namesOf(body)).toEqual(expected.map((spec) => spec.name).reverse());
        expect(body.facets).toEqual(expectedFacets(expected));
        expect(body.nextCursor).toBeNull();
        for (const item of body.items) expect(typeof item.score).toBe("number");
      });

      test("items carry the full agent record", async () => {
        const body = await search({ q: "ledger keeper", consistent: true });
        const item = body.items.find((i) => i.agent.name === "Ledger Keeper");
        expect(item).toBeDefined();
        const record = await (await t.request(`/v1/agents/${ids.get("ledger")}`)).json();
        expect(item!.agent).toEqual(record);
      });

      test("tag and skill filters select exactly the agents that have them", async () => {
        const finance = await search({ tag: "finance", consistent: true });
        expect(namesOf(finance).sort()).toEqual(["Ledger Keeper", "Stock Ticker"]);
        expect(finance.total).toBe(2);
        expect(finance.facets).toEqual(
          expectedFacets(
            visibleTo("anonymous").filter((s) => s.skills.some((k) => k.tags.includes("finance"))),
          ),
        );
        // case-insensitive, and skills match by id or by name
        expect(namesOf(await search({ tag: "FINANCE" })).sort()).toEqual(["Ledger Keeper", "Stock Ticker"]);
        expect(namesOf(await search({ skill: "translate-text" }))).toEqual(["Polyglot Translator"]);
        expect(namesOf(await search({ skill: "Translate Text" }))).toEqual(["Polyglot Translator"]);
        // filters combine with each other and with text
        expect(namesOf(await search({ tag: "weather", skill: "alerts" }))).toEqual(["Weather Oracle"]);
        expect(namesOf(await search({ q: "ledger", tag: "markets" }))).toEqual([]);
      });

      test("mode, streaming and provider filters", async () => {
        expect(namesOf(await search({ inputMode: "application/pdf" }))).toEqual(["Ledger Keeper"]);
        expect(namesOf(await search({ outputMode: "text/markdown" }))).toEqual(["Kitchen Companion"]);
        const streaming = await search({ streaming: true, limit: 100 });
        expect(namesOf(streaming).sort()).toEqual(["Forecast Pro", "Stock Ticker", "Weather Oracle"]);
        const notStreaming = await search({ streaming: false, limit: 100 });
        expect(notStreaming.total).toBe(visibleTo("anonymous").length - 3);
        expect(namesOf(await search({ provider: "numbers inc" })).sort()).toEqual([
          "Ledger Keeper",
          "Stock Ticker",
        ]);
      });

      test("keyset pages walk every match once, in order, with a stable total", async () => {
        const all = await search({ limit: 100 });
        const seen: string[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const page: SearchBody = await search({ limit: 3, ...(cursor ? { cursor } : {}) });
          expect(page.total).toBe(all.total);
          expect(page.items.length).toBeLessThanOrEqual(3);
          seen.push(...page.items.map((i) => i.agent.id));
          cursor = page.nextCursor;
          pages++;
        } while (cursor && pages < 20);
        expect(seen).toEqual(all.items.map((i) => i.agent.id));
        expect(new Set(seen).size).toBe(seen.length);
      });

      test("keyset pages of a text query follow relevance order without gaps", async () => {
        const all = await search({ q: "weather", limit: 100 });
        expect(all.items.length).toBeGreaterThan(1);
        const seen: string[] = [];
        let cursor: string | null = null;
        do {
          const page: SearchBody = await search({ q: "weather", limit: 1, ...(cursor ? { cursor } : {}) });
          seen.push(...page.items.map((i) => i.agent.id));
          cursor = page.nextCursor;
        } while (cursor && seen.length < 50);
        expect(seen).toEqual(all.items.map((i) => i.agent.id));
      });

      test("facets=false skips the counting", async () => {
        const body = await search({ q: "weather", facets: false });
        expect(body.items.length).toBeGreaterThan(0);
        expect(body.facets).toEqual({ tags: [], skills: [], providers: [], inputModes: [], outputModes: [] });
      });

      test("writes are searchable at once with consistent=true: status, delete, visibility", async () => {
        const id = ids.get("recipes")!;
        const patched = await t.request(`/v1/agents/${id}`, {
          method: "PATCH",
          token: writer.token,
          json: { status: "deprecated" },
        });
        expect(patched.status).toBe(200);
        expect(namesOf(await search({ status: "deprecated", consistent: true }))).toEqual([
          "Kitchen Companion",
        ]);
        expect(namesOf(await search({ q: "kitchen", status: "active", consistent: true }))).toEqual([]);

        const hidden = await t.request(`/v1/agents/${id}`, {
          method: "PATCH",
          token: writer.token,
          json: { visibility: "private" },
        });
        expect(hidden.status).toBe(200);
        expect(namesOf(await search({ q: "kitchen", consistent: true }))).toEqual([]);
        expect(namesOf(await search({ q: "kitchen", consistent: true }, writer.token))).toEqual([
          "Kitchen Companion",
        ]);

        const removed = await t.request(`/v1/agents/${id}`, { method: "DELETE", token: writer.token });
        expect(removed.status).toBe(204);
        expect(namesOf(await search({ q: "kitchen", consistent: true }, writer.token))).toEqual([]);
        expect(namesOf(await search({ q: "kitchen", consistent: true }, admin.token))).toEqual([]);
        const everything = await search({ limit: 100, consistent: true });
        expect(everything.total).toBe(visibleTo("anonymous").length - 1);
        // put it back for the other cases
        const again = await t.request("/v1/agents", {
          method: "POST",
          token: writer.token,
          json: { card: cardOf(CORPUS.find((s) => s.key === "recipes")!, `${salt}b`) },
        });
        expect(again.status).toBe(201);
        ids.set("recipes", (await json<{ id: string }>(again)).id);
      });

      test("a card update is searchable by its new words", async () => {
        const spec = CORPUS.find((s) => s.key === "code")!;
        const card = {
          ...cardOf(spec, salt),
          version: "1.1.0",
          description: "Reviews code; now also audits zygomorphic dependencies.",
        };
        const res = await t.request(`/v1/agents/${ids.get("code")}`, {
          method: "PUT",
          token: writer.token,
          json: { card },
        });
        expect(res.status).toBe(200);
        expect(namesOf(await search({ q: "zygomorphic", consistent: true }))).toEqual(["Code Reviewer"]);
      });
    });

    if (options.relevance)
      describe("relevance", () => {
        test("a name match ranks above a description match", async () => {
          const body = await search({ q: "forecast" });
          const names = namesOf(body);
          expect(names[0]).toBe("Forecast Pro");
          expect(names).toContain("Helper Desk");
          expect(names.indexOf("Forecast Pro")).toBeLessThan(names.indexOf("Helper Desk"));
          expect(body.items[0]!.score).toBeGreaterThan(body.items.at(-1)!.score);
        });

        test("a typo in a name still finds it first", async () => {
          expect(namesOf(await search({ q: "wether oracle" }))[0]).toBe("Weather Oracle");
          expect(namesOf(await search({ q: "polyglott" }))[0]).toBe("Polyglot Translator");
          expect(namesOf(await search({ q: "Ledgr" }))[0]).toBe("Ledger Keeper");
        });

        test("skills and tags outrank descriptions", async () => {
          const names = namesOf(await search({ q: "language" }));
          expect(names[0]).toBe("Polyglot Translator");
        });

        test("prefixes match while typing", async () => {
          expect(namesOf(await search({ q: "polyg" }))[0]).toBe("Polyglot Translator");
          expect(namesOf(await search({ q: "kitch" }))).toContain("Kitchen Companion");
        });

        test("description words are stemmed", async () => {
          expect(namesOf(await search({ q: "reconciling invoice" }))).toEqual(["Ledger Keeper"]);
        });
      });

    test("the backend under test answered the queries, with no fallback", async () => {
      const metrics = await (await t.request("/metrics")).text();
      const served = new RegExp(
        `a2a_registry_search_queries_total\\{backend="${options.backend}"\\} (\\d+)`,
      ).exec(metrics);
      expect(Number(served?.[1] ?? 0)).toBeGreaterThan(20);
      expect(metrics).toMatch(/a2a_registry_search_fallbacks_total 0\b/);
    });

    describe("errors", () => {
      for (const [query, path] of [
        ["limit=0", "limit"],
        ["limit=101", "limit"],
        ["limit=abc", "limit"],
        ["streaming=maybe", "streaming"],
        ["status=deleted", "status"],
        ["health=sideways", "health"],
        ["signature=forged", "signature"],
        [`q=${"x".repeat(257)}`, "q"],
        ["cursor=not-a-cursor", "cursor"],
        [`cursor=${Buffer.from('{"s":1}').toString("base64url")}`, "cursor"],
      ] as const) {
        test(`400 problem+json for ${query.slice(0, 40)}`, async () => {
          const res = await t.request(`/v1/search?${query}`);
          expect(res.status).toBe(400);
          expect(res.headers.get("content-type")).toContain("application/problem+json");
          const problem = await json<{ code: string; requestId: string; errors?: { path: string }[] }>(res);
          expect(problem.code).toBe("VALIDATION_FAILED");
          expect(problem.requestId).toBeTruthy();
          expect(JSON.stringify(problem.errors ?? [])).toContain(path);
        });
      }

      test("query syntax of any backend is plain text here", async () => {
        for (const q of [
          "a & b | !c",
          "weather:* & (",
          "'\"\\",
          "name:forecast^5",
          "*",
          "~",
          "<->",
          "\u0000",
        ]) {
          const res = await t.request(`/v1/search?q=${encodeURIComponent(q)}`);
          expect([200, 400]).toContain(res.status);
          if (res.status === 400) expect((await json<{ code: string }>(res)).code).toBe("VALIDATION_FAILED");
        }
        expect((await search({ q: "weather:* & (" })).items.length).toBeGreaterThan(0);
      });

      test("a bad token is 401, not an anonymous search", async () => {
        const res = await t.request("/v1/search?q=weather", { token: "not.a.jwt" });
        expect(res.status).toBe(401);
      });
    });

    describe("security", () => {
      test("private agents are absent from hits, totals and facets for anonymous callers", async () => {
        const body = await search({ limit: 100, consistent: true });
        const text = JSON.stringify(body);
        for (const secret of [
          "Secret Treasury",
          "Entitled Weather Vault",
          "confidential-tag",
          "archive-only-tag",
          "Hidden Provider",
          "Vault Co",
        ])
          expect(text).not.toContain(secret);
        expect(text).not.toContain(ids.get("private-finance")!);
        expect(body.total).toBe(visibleTo("anonymous").length);
        const treasury = await search({ q: "treasury" });
        expect(treasury.total).toBe(0);
        expect(treasury.items).toEqual([]);
        expect((await search({ tag: "confidential-tag" })).total).toBe(0);
        expect((await search({ provider: "Hidden Provider" })).total).toBe(0);
      });

      test("other clients do not see someone else's private agents", async () => {
        const body = await search({ limit: 100 }, stranger.token);
        expect(JSON.stringify(body)).not.toContain("Secret Treasury");
        expect(JSON.stringify(body)).not.toContain("archive-only-tag");
        expect(body.total).toBe(visibleTo("anonymous").length);
        expect(body.facets).toEqual(expectedFacets(visibleTo("anonymous")));
      });

      test("owners, entitled clients and admins see exactly what they may", async () => {
        const asWriter = await search({ limit: 100 }, writer.token);
        expect(namesOf(asWriter)).toContain("Secret Treasury");
        expect(namesOf(asWriter)).not.toContain("Entitled Weather Vault");
        expect(asWriter.total).toBe(visibleTo("writer").length);
        expect(asWriter.facets).toEqual(expectedFacets(visibleTo("writer")));

        const asReader = await search({ q: "weather", limit: 100 }, reader.token);
        expect(namesOf(asReader)).toContain("Entitled Weather Vault");
        expect(namesOf(asReader)).not.toContain("Secret Treasury");
        const readerAll = await search({ limit: 100 }, reader.token);
        expect(readerAll.facets).toEqual(expectedFacets(visibleTo("reader")));

        const asAdmin = await search({ limit: 100 }, admin.token);
        expect(asAdmin.total).toBe(CORPUS.length);
        expect(asAdmin.facets).toEqual(expectedFacets(CORPUS));
      });

      test("revoking an entitlement hides the agent from that client's searches", async () => {
        const id = ids.get("private-entitled")!;
        const revoke = await t.request(`/v1/agents/${id}/entitlements/${reader.clientId}`, {
          method: "DELETE",
          token: other.token,
        });
        expect(revoke.status).toBe(204);
        const body = await search({ q: "vault", consistent: true }, reader.token);
        expect(body.total).toBe(0);
        const grant = await t.request(`/v1/agents/${id}/entitlements/${reader.clientId}`, {
          method: "PUT",
          token: other.token,
        });
        expect(grant.status).toBeLessThan(300);
        expect((await search({ q: "vault", consistent: true }, reader.token)).total).toBe(1);
      });
    });
  });
}
