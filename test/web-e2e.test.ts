import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { createTestApp, json, type TestApp } from "./support/app";
import { chromiumAvailability, collectProblems, launchChromium, screenshotPath } from "./support/browser";

/**
 * The discovery page end to end in headless Chromium (Debian's package, driven by playwright-core):
 * the app listens on a port over embedded PGlite, agents are seeded through the API, and the page is
 * used like a person would: typing, filtering, paging, opening an agent, pasting a token.
 */

type Seed = {
  name: string;
  tags: string[];
  provider: string;
  streaming?: boolean;
  description?: string;
};

const skillOf = (name: string, tags: string[]) => ({
  id: name.toLowerCase().replace(/[^a-z0-9]+/g, "-"),
  name,
  description: `${name}, done well.`,
  tags,
  examples: [`Please ${name.toLowerCase()} for me`],
});

const PUBLIC: Seed[] = [
  // Markup in a name must show as text, never become elements (published first: it lands on page 2).
  { name: "Markup <b>Bold</b> Agent", tags: ["testing"], provider: "Mischief & Co" },
  { name: "Storm Tracker", tags: ["weather", "alerts"], provider: "Skyline Labs", streaming: true },
  { name: "Travel Concierge", tags: ["travel", "weather"], provider: "Wayfarer" },
  { name: "Invoice Parser", tags: ["finance", "documents"], provider: "Numbers Inc" },
  { name: "Ledger Keeper", tags: ["finance", "accounting"], provider: "Numbers Inc" },
  { name: "Stock Ticker", tags: ["finance", "markets"], provider: "Numbers Inc", streaming: true },
  { name: "Recipe Planner", tags: ["food", "planning"], provider: "Kitchen Co" },
  { name: "Flight Finder", tags: ["travel", "flights"], provider: "Wayfarer" },
  { name: "Hotel Booker", tags: ["travel", "booking"], provider: "Wayfarer" },
  { name: "Code Reviewer", tags: ["code", "review"], provider: "DevTools Ltd" },
  { name: "Meeting Summarizer", tags: ["meetings", "summaries"], provider: "Office Bots" },
  { name: "Email Triage", tags: ["email", "productivity"], provider: "Office Bots" },
  { name: "Contract Clause Finder", tags: ["legal", "documents"], provider: "Lex Machina" },
  { name: "Image Captioner", tags: ["images", "accessibility"], provider: "Pixel Works" },
  { name: "Speech Transcriber", tags: ["audio", "accessibility"], provider: "Pixel Works", streaming: true },
  { name: "Currency Converter", tags: ["finance", "travel"], provider: "Numbers Inc" },
  { name: "Tax Helper", tags: ["finance", "legal"], provider: "Lex Machina" },
  { name: "News Digest", tags: ["news", "summaries"], provider: "Daily Press" },
  { name: "Poetry Muse", tags: ["writing", "creative"], provider: "Muse Labs" },
  { name: "Chess Coach", tags: ["games", "coaching"], provider: "Muse Labs" },
  { name: "Fitness Planner", tags: ["health", "planning"], provider: "Kitchen Co" },
  { name: "Plant Doctor", tags: ["garden", "images"], provider: "Pixel Works" },
  { name: "Job Matcher", tags: ["jobs", "matching"], provider: "Office Bots" },
  { name: "Sales Forecaster", tags: ["sales", "finance"], provider: "Numbers Inc" },
  { name: "Support Desk", tags: ["support", "email"], provider: "Office Bots" },
];

/** The agent the test finds by a misspelt query; published first, then given a second version. */
const WEATHER = {
  protocolVersion: "0.3.0",
  name: "Weather Oracle",
  description: "Current conditions, forecasts and severe-weather alerts for any city on Earth.",
  url: "https://weather-oracle.example.com/a2a/v1",
  preferredTransport: "JSONRPC",
  additionalInterfaces: [
    { url: "https://weather-oracle.example.com/a2a/v1", transport: "JSONRPC" },
    { url: "https://weather-oracle.example.com/a2a/rest", transport: "HTTP+JSON" },
  ],
  provider: { organization: "Skyline Labs", url: "https://skyline.example.com" },
  version: "1.0.0",
  documentationUrl: "https://weather-oracle.example.com/docs",
  capabilities: { streaming: true, pushNotifications: false },
  securitySchemes: {
    skylineOAuth: {
      type: "oauth2",
      flows: {
        clientCredentials: {
          tokenUrl: "https://auth.skyline.example.com/token",
          scopes: { "forecast:read": "Read forecasts" },
        },
      },
    },
  },
  security: [{ skylineOAuth: ["forecast:read"] }],
  defaultInputModes: ["text/plain", "application/json"],
  defaultOutputModes: ["application/json"],
  skills: [
    {
      id: "current-conditions",
      name: "Current conditions",
      description: "Temperature, wind and precipitation right now.",
      tags: ["weather", "temperature"],
      examples: ["What is the weather in Lisbon right now?"],
    },
    {
      id: "severe-alerts",
      name: "Severe weather alerts",
      description: "Warnings for storms, floods and heat.",
      tags: ["weather", "alerts"],
      examples: ["Any storm warnings for Miami tonight?"],
      outputModes: ["application/json"],
    },
  ],
};

const PRIVATE_NAME = "Secret Ledger Auditor";

const cardOf = (seed: Seed, index: number) => ({
  protocolVersion: "0.3.0",
  name: seed.name,
  description: seed.description ?? `${seed.name} helps with ${seed.tags.join(" and ")}.`,
  url: `https://agent-${index}.example.com/a2a`,
  provider: { organization: seed.provider, url: `https://provider-${index}.example.com` },
  version: "1.0.0",
  capabilities: { streaming: seed.streaming === true },
  defaultInputModes: ["text/plain"],
  defaultOutputModes: index % 3 === 0 ? ["application/json"] : ["text/plain"],
  skills: [skillOf(seed.name, seed.tags)],
});

const availability = chromiumAvailability();

if (!availability.ok && process.env.CI) {
  // CI installs chromium (.ci/run): its absence there is a broken pipeline, not a reason to skip.
  test("web e2e: chromium must be installed in CI", () => {
    throw new Error(availability.reason);
  });
} else if (!availability.ok) {
  console.warn(`[web-e2e] skipped locally: ${availability.reason}`);
  test.skip(`web e2e (skipped: ${availability.reason})`, () => {});
} else {
  describe("web page end to end (headless Chromium)", () => {
    let t: TestApp;
    let base: string;
    let browser: Browser;
    let context: BrowserContext;
    let page: Page;
    let problems: string[];
    let weatherId: string;
    let privateId: string;
    let ownerToken: string;
    const publicTotal = PUBLIC.length + 1;

    const resultNames = () => page.locator(".result .result-name a").allTextContents();
    const status = () => page.locator("#result-status");

    beforeAll(async () => {
      const launching = launchChromium();
      t = await createTestApp("pglite");
      t.app.listen({ port: 0, hostname: "127.0.0.1" });
      base = `http://127.0.0.1:${t.app.server!.port}`;
      const publisher = await t.client(["agents:write"], "publisher");
      const owner = await t.client(["agents:write"], "owner");
      ownerToken = owner.token;

      const publish = async (token: string, body: unknown) => {
        const res = await t.request("/v1/agents", { method: "POST", token, json: body });
        expect(res.status, await res.clone().text()).toBe(201);
        return (await json<{ id: string }>(res)).id;
      };
      weatherId = await publish(publisher.token, { card: WEATHER });
      const v2 = await t.request(`/v1/agents/${weatherId}`, {
        method: "PUT",
        token: publisher.token,
        json: { card: { ...WEATHER, version: "1.1.0" } },
      });
      expect(v2.status).toBe(200);
      for (const [index, seed] of PUBLIC.entries())
        await publish(publisher.token, { card: cardOf(seed, index) });
      privateId = await publish(owner.token, {
        visibility: "private",
        card: cardOf({ name: PRIVATE_NAME, tags: ["finance", "audit"], provider: "Numbers Inc" }, 99),
      });

      browser = await launching;
      context = await browser.newContext({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
      await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: base });
      page = await context.newPage();
      page.setDefaultTimeout(10_000);
      problems = collectProblems(page);
    }, 60_000);

    afterAll(async () => {
      await browser?.close();
      await t?.close();
    });

    test("the page loads with the first page of agents, facets and no CSP or script errors", async () => {
      const res = await page.goto(`${base}/`);
      expect(res?.status()).toBe(200);
      await expect(status().textContent()).resolves.toBeDefined();
      await page.waitForFunction(() => document.querySelectorAll(".result").length > 0);
      await expect(status().textContent()).resolves.toBe(`Showing 20 of ${publicTotal} agents.`);
      expect(await page.locator(".result").count()).toBe(20);
      expect(await page.locator('button[data-filter="tag"]').count()).toBeGreaterThan(3);
      expect(await page.locator('button[data-filter="provider"]').count()).toBeGreaterThan(3);
      expect(await page.locator('button[data-filter="inputMode"]').count()).toBeGreaterThan(0);
      expect(await page.locator('button[data-filter="streaming"]').count()).toBe(2);
      expect(await page.locator('button[data-filter="health"]').count()).toBe(3);
      expect(await page.title()).toBe("A2A Agent Registry");
    });

    test("search as you type: a misspelt query puts the intended agent first", async () => {
      // "/" jumps to the search box from anywhere on the page.
      await page.locator("h1").focus();
      await page.keyboard.press("/");
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("q");
      await page.keyboard.type("weathr oracle", { delay: 25 });
      await page.waitForFunction(() =>
        document.querySelector("#result-status")?.textContent?.includes("“weathr oracle”"),
      );
      const names = await resultNames();
      expect(names[0]).toBe("Weather Oracle");
      expect(new URL(page.url()).searchParams.get("q")).toBe("weathr oracle");
    });

    test("a tag filter from the facets narrows the results", async () => {
      await page.locator('button[data-filter="tag"][data-value="weather"]').click();
      await page.waitForFunction(() => new URL(location.href).searchParams.get("tag") === "weather");
      await page.waitForFunction(() => !document.querySelector("#results")?.hasAttribute("aria-busy"));
      expect((await resultNames())[0]).toBe("Weather Oracle");
      // Without the query, the filter alone: every agent tagged "weather", and nothing else.
      await page.locator("#q").fill("");
      await page.waitForFunction(() =>
        /^3 agents\.$/.test(document.querySelector("#result-status")?.textContent ?? ""),
      );
      expect((await resultNames()).sort()).toEqual(["Storm Tracker", "Travel Concierge", "Weather Oracle"]);
      for (const tags of await page.locator(".result .tag-list").allTextContents())
        expect(tags).toContain("weather");
      const chip = page.locator('button[data-filter="tag"][data-value="weather"]');
      expect(await chip.getAttribute("aria-pressed")).toBe("true");
      expect(await page.locator(".active-filters").textContent()).toContain("tags: weather");
      await page.screenshot({ path: screenshotPath("search.png") });
    });

    test("the agent page shows skills, interfaces, security, versions, source and the raw card", async () => {
      await page.locator(".result-name a", { hasText: "Weather Oracle" }).click();
      await page.waitForURL(`${base}/agents/${weatherId}`);
      await page.waitForSelector(".agent-view h1");
      expect(await page.locator(".agent-view h1").textContent()).toBe("Weather Oracle");
      expect(await page.title()).toContain("Weather Oracle");
      const header = await page.locator(".agent-header").textContent();
      expect(header).toContain("Skyline Labs");
      expect(header).toContain("version 1.1.0");
      expect(header).toContain("unsigned");
      expect(header).toContain("health unknown");

      const skills = page.locator("section[aria-labelledby=skills-h]");
      expect(await skills.locator(".skill h3").allTextContents()).toEqual([
        "Current conditionscurrent-conditions",
        "Severe weather alertssevere-alerts",
      ]);
      const skillText = await skills.textContent();
      expect(skillText).toContain("What is the weather in Lisbon right now?");
      expect(skillText).toContain("temperature");
      expect(skillText).toContain("alerts");

      const interfaces = await page.locator("section[aria-labelledby=interfaces-h]").textContent();
      expect(interfaces).toContain("JSONRPC");
      expect(interfaces).toContain("HTTP+JSON");
      expect(interfaces).toContain("https://weather-oracle.example.com/a2a/rest");
      expect(interfaces).toContain("streaming");
      const security = await page.locator("section[aria-labelledby=security-h]").textContent();
      expect(security).toContain("skylineOAuth");
      expect(security).toContain("OAuth 2.0");
      expect(security).toContain("https://auth.skyline.example.com/token");
      expect(security).toContain("forecast:read");

      const versions = await page.locator("section[aria-labelledby=versions-h] tbody tr").allTextContents();
      expect(versions.length).toBe(2);
      expect(versions[0]).toContain("1.1.0");
      expect(versions[0]).toContain("current");
      expect(versions[1]).toContain("1.0.0");
      const source = await page.locator("section[aria-labelledby=source-h]").textContent();
      expect(source).toContain("published here");

      const raw = JSON.parse((await page.locator("pre.raw-card").textContent()) ?? "");
      expect(raw).toEqual({ ...WEATHER, version: "1.1.0" });
      expect(await page.locator("#card-link").getAttribute("href")).toBe(`/v1/agents/${weatherId}/card`);
      const card = await page.request.get(`${base}/v1/agents/${weatherId}/card`);
      expect(card.status()).toBe(200);
      expect(await card.json()).toEqual(raw);

      await page.locator("#copy-card").click();
      await page.waitForFunction(() =>
        document.querySelector(".copy-status")?.textContent?.startsWith("Copied"),
      );
      expect(JSON.parse(await page.evaluate(() => navigator.clipboard.readText()))).toEqual(raw);
      await page.screenshot({ path: screenshotPath("agent.png"), fullPage: true });

      // Back returns to the filtered search, restored from the address.
      await page.goBack();
      await page.waitForFunction(() =>
        /^3 agents\.$/.test(document.querySelector("#result-status")?.textContent ?? ""),
      );
    });

    test("load more fetches the next keyset page and appends it", async () => {
      await page.goto(`${base}/`);
      await page.waitForFunction(() => document.querySelectorAll(".result").length === 20);
      const more = page.locator("#load-more");
      expect(await more.isVisible()).toBe(true);
      const further = page.waitForRequest((r) => r.url().includes("cursor="));
      await more.click();
      const request = await further;
      expect(new URL(request.url()).searchParams.get("facets")).toBe("false");
      await page.waitForFunction((n) => document.querySelectorAll(".result").length === n, publicTotal);
      expect(await more.isHidden()).toBe(true);
      expect(await status().textContent()).toBe(`${publicTotal} agents.`);
      const ids = await page
        .locator(".result")
        .evaluateAll((els) => els.map((e) => e.getAttribute("data-agent-id")));
      expect(new Set(ids).size).toBe(publicTotal);
      // The first appended result has focus, so keyboard users carry on where they were.
      expect(await page.evaluate(() => document.activeElement?.closest(".result") !== null)).toBe(true);
      const names = await resultNames();
      expect(names).not.toContain(PRIVATE_NAME);
      // Markup in a name is text: no <b> element was created from it.
      expect(names).toContain("Markup <b>Bold</b> Agent");
      expect(await page.locator(".result b").count()).toBe(0);
    });

    test("a private agent never shows without a token, and shows with its owner's token", async () => {
      // Anonymous: absent from search, its page says not found, and stats do not count it.
      await page.goto(`${base}/?q=${encodeURIComponent("secret ledger auditor")}`);
      await page.waitForFunction(() =>
        document.querySelector("#result-status")?.textContent?.includes("“secret"),
      );
      expect(await resultNames()).not.toContain(PRIVATE_NAME);
      await page.goto(`${base}/agents/${privateId}`);
      await page.waitForSelector(".agent-view h1");
      expect(await page.locator(".agent-view h1").textContent()).toBe("Agent not found");
      await page.goto(`${base}/about`);
      await page.waitForSelector("#stat-total");
      expect(await page.locator("#stat-total").textContent()).toBe(String(publicTotal));

      // The owner's token, pasted into the token field.
      await page.locator(".token-panel summary").click();
      await page.locator("#token-input").fill(ownerToken);
      await page.locator("#token-form button[type=submit]").click();
      expect(await page.locator("#token-state").textContent()).toBe("token in use");
      await page.waitForFunction(
        (n) => document.querySelector("#stat-total")?.textContent === String(n),
        publicTotal + 1,
      );
      const storage = await page.evaluate(() => ({
        session: sessionStorage.getItem("a2a-registry.token"),
        local: Object.keys(localStorage).length,
      }));
      expect(storage.session).toBe(ownerToken);
      expect(storage.local).toBe(0);
      expect(await page.locator("#token-input").inputValue()).toBe("");

      await page.goto(`${base}/?q=${encodeURIComponent("secret ledger auditor")}`);
      await page.waitForFunction(() => document.querySelectorAll(".result").length > 0);
      expect((await resultNames())[0]).toBe(PRIVATE_NAME);
      expect(await page.locator(".result").first().textContent()).toContain("private");
      await page.goto(`${base}/agents/${privateId}`);
      await page.waitForSelector(".agent-view h1");
      expect(await page.locator(".agent-view h1").textContent()).toBe(PRIVATE_NAME);

      // Forgetting the token hides it again.
      await page.locator(".token-panel summary").click();
      await page.locator("#token-forget").click();
      await page.waitForFunction(
        () => document.querySelector(".agent-view h1")?.textContent === "Agent not found",
      );
      expect(await page.evaluate(() => sessionStorage.getItem("a2a-registry.token"))).toBeNull();
    });

    test("the stats panel draws registrations over time and agents by status", async () => {
      await page.goto(`${base}/about`);
      await page.waitForSelector("#chart-registrations");
      const bars = page.locator("#chart-registrations rect.bar");
      expect(await bars.count()).toBe(30);
      // Everything was registered today: the last day holds every visible agent.
      expect(await bars.last().getAttribute("data-count")).toBe(String(publicTotal));
      expect(await page.locator("#chart-totals polyline").count()).toBe(1);
      expect(await page.locator("#chart-status title").textContent()).toContain(`active ${publicTotal}`);
      expect(await page.locator("#stat-deprecated").textContent()).toBe("0");
      await page.screenshot({ path: screenshotPath("stats.png"), fullPage: true });
    });

    test("keyboard: a skip link first, visible focus; phone: no sideways scrolling", async () => {
      await page.goto(`${base}/`);
      await page.waitForSelector(".result");
      await page.keyboard.press("Tab");
      const focused = await page.evaluate(() => {
        const el = document.activeElement as HTMLElement;
        const style = getComputedStyle(el);
        return { text: el.textContent, outline: style.outlineStyle, width: style.outlineWidth };
      });
      expect(focused.text).toBe("Skip to content");
      expect(focused.outline).not.toBe("none");
      expect(focused.width).not.toBe("0px");
      await page.keyboard.press("Enter");
      expect(await page.evaluate(() => document.activeElement?.id)).toBe("main");

      const phone = await browser.newContext({
        viewport: { width: 390, height: 844 },
        deviceScaleFactor: 2,
        isMobile: true,
        hasTouch: true,
      });
      try {
        const mobile = await phone.newPage();
        const mobileProblems = collectProblems(mobile);
        await mobile.goto(`${base}/agents/${weatherId}`);
        await mobile.waitForSelector(".agent-view h1");
        expect(await mobile.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(
          true,
        );
        await mobile.goto(`${base}/`);
        await mobile.waitForSelector(".result");
        expect(await mobile.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth)).toBe(
          true,
        );
        // Filters fold away on a narrow screen so results come first.
        expect(await mobile.locator("details.filters").getAttribute("open")).toBeNull();
        await mobile.screenshot({ path: screenshotPath("search-phone.png") });
        expect(mobileProblems).toEqual([]);
      } finally {
        await phone.close();
      }
    });

    test("no console errors, CSP violations or uncaught exceptions during the run", () => {
      expect(problems).toEqual([]);
    });
  });
}
