import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { SECURITY_HEADERS } from "../src/infra/web";
import { buildWebBundle, type WebBundle } from "../src/modules/web/bundle";
import { PAGE_CSP } from "../src/modules/web/routes";
import {
  interfacesOf,
  securityRequirementsOf,
  securitySchemesOf,
  skillsOf,
  streamingOf,
  tagsOf,
} from "../src/web/card";
import { safeUrl } from "../src/web/dom";
import { mergeSkillSpellings, queryOf, stateFromUrl } from "../src/web/search";
import { niceMax } from "../src/web/stats";
import { createTestApp, type TestApp } from "./support/app";

const FIXTURES = join(import.meta.dir, "../../shared/fixtures/agent-cards");
const readCard = (path: string) => JSON.parse(readFileSync(join(FIXTURES, path), "utf8"));
const MAX_JS_GZIP_BYTES = 50 * 1024;

describe("web page: served by the app", () => {
  let t: TestApp;
  let html: string;
  let assetPaths: string[];

  beforeAll(async () => {
    t = await createTestApp("pglite");
    const res = await t.request("/");
    expect(res.status).toBe(200);
    html = await res.text();
    assetPaths = [...html.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  test("GET /agents/:id: JSON for API clients, the page for browsers, alike through app.handle and a served app", async () => {
    const writer = await t.client(["agents:write"], "page writer");
    const created = await t.request("/v1/agents", {
      method: "POST",
      json: { card: readCard("valid/weather-0.3.json"), visibility: "public" },
      token: writer.token,
    });
    expect(created.status).toBe(201);
    const { id } = (await created.json()) as { id: string };
    t.app.listen({ port: 0, hostname: "127.0.0.1" });
    try {
      const served = `http://127.0.0.1:${t.app.server!.port}`;
      for (const send of [
        (path: string, accept: string) =>
          t.app.handle(new Request(`http://localhost${path}`, { headers: { accept } })),
        (path: string, accept: string) => fetch(`${served}${path}`, { headers: { accept } }),
      ]) {
        const json = await send(`/agents/${id}`, "application/json");
        expect(json.status).toBe(200);
        expect(json.headers.get("content-type")).toStartWith("application/json");
        expect(((await json.json()) as { name?: string }).name).toBe(readCard("valid/weather-0.3.json").name);
        const page = await send(`/agents/${id}`, "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8");
        expect(page.status).toBe(200);
        expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
        expect(page.headers.get("content-security-policy")).toBe(PAGE_CSP);
        expect(page.headers.get("vary")).toContain("Accept");
        expect(await page.text()).toBe(html);
      }
    } finally {
      await t.app.stop(true);
    }
  });

  test("happy: / is HTML revalidated on every load, with the page's own CSP", async () => {
    const res = await t.request("/");
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(res.headers.get("cache-control")).toBe("no-cache");
    expect(res.headers.get("etag")).toMatch(/^"[^"]+"$/);
    expect(res.headers.get("content-security-policy")).toBe(PAGE_CSP);
    expect(html).toContain('<main id="main"');
    expect(html).toContain('lang="en"');
    expect(html).toContain('name="viewport"');
  });

  test("happy: /agents/:id and /about answer the same page; If-None-Match gives 304", async () => {
    for (const path of ["/agents/0190c0de-0000-7000-8000-000000000000", "/agents/anything", "/about"]) {
      const res = await t.request(path);
      expect(res.status, path).toBe(200);
      expect(await res.text()).toBe(html);
      expect(res.headers.get("content-security-policy")).toBe(PAGE_CSP);
    }
    const etag = (await t.request("/")).headers.get("etag")!;
    const again = await t.request("/", { headers: { "if-none-match": etag } });
    expect(again.status).toBe(304);
    expect(await again.text()).toBe("");
  });

  test("happy: script and stylesheet are fingerprinted and cached for a year", async () => {
    expect(assetPaths.some((p) => p.endsWith(".js"))).toBe(true);
    expect(assetPaths.some((p) => p.endsWith(".css"))).toBe(true);
    for (const path of assetPaths) {
      expect(path).toMatch(/^\/assets\/[A-Za-z0-9_]+-[a-z0-9]{8,}\.(js|css)$/);
      const res = await t.request(path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("cache-control")).toBe("public, max-age=31536000, immutable");
      expect(res.headers.get("content-type")).toContain(path.endsWith(".js") ? "javascript" : "text/css");
      const etag = res.headers.get("etag")!;
      expect((await t.request(path, { headers: { "if-none-match": etag } })).status).toBe(304);
    }
  });

  test("happy: assets are sent gzipped to clients that accept it, identical once inflated", async () => {
    const js = assetPaths.find((p) => p.endsWith(".js"))!;
    const plain = await t.request(js);
    expect(plain.headers.get("content-encoding")).toBeNull();
    const plainBytes = new Uint8Array(await plain.arrayBuffer());
    const zipped = await t.request(js, { headers: { "accept-encoding": "gzip, br" } });
    expect(zipped.headers.get("content-encoding")).toBe("gzip");
    expect(zipped.headers.get("vary")).toContain("Accept-Encoding");
    const zippedBytes = new Uint8Array(await zipped.arrayBuffer());
    expect(zippedBytes.byteLength).toBeLessThan(plainBytes.byteLength);
    expect(Bun.gunzipSync(zippedBytes)).toEqual(plainBytes);
  });

  test("happy: every route of the page is rate limited as a read, like other GETs", async () => {
    for (const path of ["/", assetPaths[0]!])
      expect((await t.request(path)).headers.get("ratelimit-limit"), path).toBeTruthy();
  });

  test("errors: an unknown or old asset is a 404 problem, and names cannot escape the bundle", async () => {
    for (const path of [
      "/assets/index-00000000.js",
      "/assets/nope.css",
      "/assets/..%2F..%2Fpackage.json",
      "/assets/index.html",
      "/assets/.env",
      "/assets/index.js.map",
    ]) {
      const res = await t.request(path);
      expect(res.status, path).toBe(404);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
    }
    const long = await t.request(`/assets/${"a".repeat(150)}.js`);
    expect([400, 404]).toContain(long.status);
  });

  test("security: the page's CSP allows only this origin: no inline code, no third parties", () => {
    const directives = new Map(
      PAGE_CSP.split(";").map((d) => {
        const [name, ...values] = d.trim().split(/\s+/);
        return [name!, values] as const;
      }),
    );
    expect(directives.get("default-src")).toEqual(["'none'"]);
    expect(directives.get("script-src")).toEqual(["'self'"]);
    expect(directives.get("style-src")).toEqual(["'self'"]);
    expect(directives.get("connect-src")).toEqual(["'self'"]);
    expect(directives.get("frame-ancestors")).toEqual(["'none'"]);
    expect(directives.get("base-uri")).toEqual(["'none'"]);
    expect(PAGE_CSP).not.toMatch(/unsafe-|https?:|\*/);
  });

  test("security: the HTML has no inline script or style and loads nothing from other origins", () => {
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/\bsrc="\/assets\//);
      expect(body!.trim()).toBe("");
    }
    expect(html).not.toMatch(/<style\b|\sstyle="|\son[a-z]+="/i);
    for (const [, url] of html.matchAll(/<(?:script|link|img|iframe)\b[^>]*(?:src|href)="([^"]+)"/g))
      expect(url, url).toMatch(/^\//);
  });

  test("security: the API keeps its own strict CSP and the other security headers stay", async () => {
    const api = await t.request("/v1/search");
    expect(api.headers.get("content-security-policy")).toBe(SECURITY_HEADERS["content-security-policy"]!);
    const page = await t.request("/");
    for (const name of ["x-content-type-options", "x-frame-options", "referrer-policy", "x-request-id"])
      expect(page.headers.get(name), name).toBeTruthy();
  });

  test("security: the page never keeps a token in localStorage", () => {
    const sources = readdirSync(join(import.meta.dir, "../src/web"))
      .filter((f) => f.endsWith(".ts"))
      .map((f) => readFileSync(join(import.meta.dir, "../src/web", f), "utf8"))
      .join("\n");
    expect(/localStorage\s*[.[]/.test(sources)).toBe(false);
    expect(/sessionStorage\.setItem/.test(sources)).toBe(true);
    // Data is put in the page as text only.
    expect(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/.test(sources)).toBe(false);
  });
});

describe("web page: bundle", () => {
  let bundle: WebBundle;
  beforeAll(async () => {
    bundle = await buildWebBundle();
  });

  test(`happy: all JavaScript together is under ${MAX_JS_GZIP_BYTES / 1024} KB gzipped`, () => {
    const js = [...bundle.assets].filter(([name]) => name.endsWith(".js"));
    expect(js.length).toBeGreaterThan(0);
    const gzipped = js.reduce((sum, [, file]) => sum + Bun.gzipSync(file.body).byteLength, 0);
    const raw = js.reduce((sum, [, file]) => sum + file.body.byteLength, 0);
    console.log(`[web] JavaScript: ${raw} bytes, ${gzipped} bytes gzipped (limit ${MAX_JS_GZIP_BYTES})`);
    expect(gzipped).toBeLessThan(MAX_JS_GZIP_BYTES);
  });

  test("happy: file names change with their content and the build is deterministic", async () => {
    const again = await buildWebBundle();
    expect([...again.assets.keys()].sort()).toEqual([...bundle.assets.keys()].sort());
    for (const [name, file] of bundle.assets) {
      const hash = /-([a-z0-9]+)\.[a-z0-9]+$/.exec(name)![1]!;
      expect(file.etag).toBe(`"${hash}"`);
    }
  });
});

/** WCAG 2.x relative luminance and contrast ratio of two #rrggbb colours. */
function luminance(hex: string): number {
  const [r, g, b] = [1, 3, 5].map((i) => {
    const c = Number.parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r! + 0.7152 * g! + 0.0722 * b!;
}
export function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi! + 0.05) / (lo! + 0.05);
}

/** The colour custom properties of the light (:root) and dark (prefers-color-scheme) palettes. */
function palettes(): Record<"light" | "dark", Record<string, string>> {
  const css = readFileSync(join(import.meta.dir, "../src/web/styles.css"), "utf8");
  const read = (block: string) =>
    Object.fromEntries(
      [...block.matchAll(/--([a-z0-9-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)].map((m) => [m[1]!, m[2]!]),
    );
  const light = /:root\s*\{([^}]*)\}/.exec(css)![1]!;
  const dark = /prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^}]*)\}/.exec(css)![1]!;
  return { light: read(light), dark: read(dark) };
}

/** [foreground, background, minimum]: 4.5 for text, 3 for graphics and component boundaries (WCAG 1.4.11). */
const PAIRS: [string, string, number][] = [
  ["text", "bg", 4.5],
  ["text", "surface", 4.5],
  ["muted", "bg", 4.5],
  ["muted", "surface", 4.5],
  ["accent", "bg", 4.5],
  ["accent", "surface", 4.5],
  ["btn-fg", "btn-bg", 4.5],
  ["chip-fg", "chip-bg", 4.5],
  ["chip-on-fg", "chip-on-bg", 4.5],
  ["ok-fg", "ok-bg", 4.5],
  ["ok-fg", "bg", 4.5],
  ["warn-fg", "warn-bg", 4.5],
  ["bad-fg", "bad-bg", 4.5],
  ["info-fg", "info-bg", 4.5],
  ["neutral-fg", "neutral-bg", 4.5],
  ["code-fg", "code-bg", 4.5],
  ["accent", "chip-bg", 4.5],
  ["field-border", "bg", 3],
  ["field-border", "chip-bg", 3],
  ["focus", "bg", 3],
  ["focus", "surface", 3],
  ["chart-bar", "surface", 3],
  ["chart-ok", "surface", 3],
  ["chart-warn", "surface", 3],
  ["chart-bad", "surface", 3],
  ["chart-neutral", "surface", 3],
];

describe("web page: colour contrast (WCAG AA)", () => {
  test("the contrast formula matches known values", () => {
    expect(contrast("#000000", "#ffffff")).toBeCloseTo(21, 5);
    expect(contrast("#ffffff", "#ffffff")).toBeCloseTo(1, 5);
    expect(contrast("#767676", "#ffffff")).toBeCloseTo(4.54, 2);
  });

  for (const [scheme, colours] of Object.entries(palettes()))
    test(`${scheme} scheme: every text and UI colour pair meets AA`, () => {
      const failing: string[] = [];
      for (const [fg, bg, min] of PAIRS) {
        expect(colours[fg], `--${fg} in ${scheme}`).toBeDefined();
        expect(colours[bg], `--${bg} in ${scheme}`).toBeDefined();
        const ratio = contrast(colours[fg]!, colours[bg]!);
        if (ratio < min) failing.push(`--${fg} on --${bg}: ${ratio.toFixed(2)} < ${min}`);
      }
      expect(failing).toEqual([]);
    });
});

describe("web page: reading cards", () => {
  test("1.0 cards: interfaces from supportedInterfaces, wrapped security schemes and requirements", () => {
    const card = readCard("valid/translator-1.0.json");
    expect(interfacesOf(card)).toEqual([
      {
        url: "https://translate.example.org/a2a",
        transport: "JSONRPC",
        protocolVersion: "1.0",
        primary: true,
      },
      {
        url: "https://translate.example.org/a2a/grpc",
        transport: "GRPC",
        protocolVersion: "1.0",
        primary: false,
      },
    ]);
    const [scheme] = securitySchemesOf(card);
    expect(scheme!.name).toBe("apiKey");
    expect(scheme!.type).toBe("API key");
    expect(scheme!.details).toEqual([
      { label: "sent in", value: "header" },
      { label: "parameter", value: "X-API-Key" },
    ]);
    expect(securityRequirementsOf(card)).toEqual(["apiKey"]);
    expect(streamingOf(card)).toBe(true);
    expect(skillsOf(card)[0]!.examples).toEqual(["Translate this contract into German"]);
  });

  test("0.3 cards: primary url with its preferred transport, additional interfaces without repeats", () => {
    const card = readCard("valid/weather-0.3.json");
    expect(interfacesOf(card).map((i) => [i.transport, i.url, i.primary])).toEqual([
      ["JSONRPC", "https://weather.example.com/a2a/v1", true],
      ["HTTP+JSON", "https://weather.example.com/a2a/rest", false],
    ]);
    const [scheme] = securitySchemesOf(card);
    expect(scheme!.type).toBe("OAuth 2.0");
    expect(scheme!.details).toContainEqual({
      label: "token URL",
      value: "https://auth.example.com/token",
      url: true,
    });
    expect(securityRequirementsOf(card)).toEqual(["oauth (forecast:read)"]);
    expect(tagsOf(card)).toEqual(["weather", "temperature", "wind", "forecast"]);
  });

  test("every real-world card in the fixtures reads without throwing", () => {
    const files = readdirSync(join(FIXTURES, "real")).filter((f) => f.endsWith(".json"));
    expect(files.length).toBeGreaterThan(5);
    for (const file of files) {
      const card = readCard(`real/${file}`);
      expect(interfacesOf(card).length, file).toBeGreaterThan(0);
      expect(Array.isArray(skillsOf(card))).toBe(true);
      securitySchemesOf(card);
      securityRequirementsOf(card);
    }
  });

  test("hostile or odd cards: wrong types are ignored, not shown or thrown", () => {
    const card = {
      name: 1,
      skills: [null, 3, { id: "x", tags: "no", examples: [1, "ok"] }],
      securitySchemes: [],
    };
    expect(skillsOf(card)).toEqual([
      {
        id: "x",
        name: "x",
        description: undefined,
        tags: [],
        examples: ["ok"],
        inputModes: [],
        outputModes: [],
      },
    ]);
    expect(interfacesOf(card)).toEqual([]);
    expect(securitySchemesOf(card)).toEqual([]);
  });

  test("security: only http(s) URLs become links", () => {
    expect(safeUrl("https://example.com/a")).toBe("https://example.com/a");
    expect(safeUrl("http://example.com")).toBe("http://example.com/");
    for (const bad of [
      "javascript:alert(1)",
      "JaVaScRiPt:alert(1)",
      "data:text/html,<b>",
      "vbscript:x",
      "/relative",
      5,
    ])
      expect(safeUrl(bad), String(bad)).toBeUndefined();
  });
});

describe("web page: search state and charts", () => {
  test("the address round-trips the query and filters; unknown parameters are dropped", () => {
    const state = stateFromUrl("?q=weathr+oracle&tag=weather&streaming=true&evil=1");
    expect(state).toEqual({ q: "weathr oracle", filters: { tag: "weather", streaming: "true" } });
    expect(queryOf(state).toString()).toBe("q=weathr+oracle&tag=weather&streaming=true");
    expect(queryOf({ q: "  ", filters: {} }).toString()).toBe("");
  });

  test("skill spellings by id and by name merge into one chip", () => {
    expect(
      mergeSkillSpellings([
        { value: "current-conditions", count: 2 },
        { value: "current conditions", count: 2 },
        { value: "alerts", count: 1 },
      ]),
    ).toEqual([
      { value: "current conditions", count: 2 },
      { value: "alerts", count: 1 },
    ]);
  });

  test("chart axes end on round numbers", () => {
    expect([0, 1, 2, 3, 7, 10, 11, 26, 99, 101, 4000].map(niceMax)).toEqual([
      1, 1, 2, 5, 10, 10, 20, 50, 100, 200, 5000,
    ]);
  });
});
