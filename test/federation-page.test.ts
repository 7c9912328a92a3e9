import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import fc from "fast-check";
import { decryptSecret, encryptSecret } from "../src/modules/federation/crypto";
import { backoffMs } from "../src/modules/federation/engine";
import { cardTexts, copyId, FeedFormatError, preparePage } from "../src/modules/federation/page";

const cardText = readFileSync(
  join(import.meta.dir, "../../shared/fixtures/agent-cards/valid/weather-0.3.json"),
  "utf8",
).trim();

function record(id: string, overrides: Record<string, unknown> = {}) {
  return {
    id,
    name: "Weather",
    visibility: "public",
    status: "active",
    statusMessage: null,
    version: "1.4.2",
    signature: "none",
    health: "up",
    checkedAt: "2026-01-01T00:00:00.000Z",
    source: { registry: "reg-a", originId: id, federated: false },
    createdAt: "2026-01-01T00:00:00.000Z",
    updatedAt: "2026-01-02T00:00:00.000Z",
    ...overrides,
  };
}

/** A page as a registry writes it: the card embedded as its published text. */
function pageText(
  changes: Array<{ seq: number; op: string; id: string; agent?: object; card?: string }>,
  nextSince: number,
  hasMore = false,
) {
  const parts = changes.map(({ card: text, agent, ...change }) => {
    if (!agent) return JSON.stringify(change);
    const head = JSON.stringify({ ...change, agent }).slice(0, -2);
    return `${head},"card":${text ?? cardText}}}`;
  });
  return `{"changes":[${parts.join(",")}],"nextSince":${nextSince},"hasMore":${hasMore}}`;
}

describe("feed pages from peers", () => {
  test("upserts carry the card's exact bytes, derived columns and the peer's registry", () => {
    const spaced = `{ "name" : "Spaced",\n  "url":"https://spaced.example.com/a2a", "version":"1.0.0", "protocolVersion":"0.3.0", "description":"d", "capabilities":{}, "defaultInputModes":["text/plain"], "defaultOutputModes":["text/plain"], "skills":[] }`;
    const text = pageText(
      [
        { seq: 3, op: "upsert", id: "a1", agent: record("a1") },
        { seq: 5, op: "delete", id: "a2" },
        { seq: 7, op: "upsert", id: "a3", agent: record("a3"), card: spaced },
      ],
      9,
    );
    expect(cardTexts(text)).toEqual([cardText, undefined, spaced]);
    const page = preparePage(text, 2, "reg-b");
    expect(page).toMatchObject({
      since: 2,
      nextSince: 9,
      hasMore: false,
      registry: "reg-a",
      deletes: ["a2"],
    });
    expect(page.upserts.map((u) => u.originId)).toEqual(["a1", "a3"]);
    const [first, second] = page.upserts;
    expect(first!.columns).toMatchObject({
      name: "Weather Forecaster",
      url: "https://weather.example.com/a2a/v1",
      generation: "0.3",
      latestVersion: "1.4.2",
      streaming: true,
      provider: "Example Weather Co",
      health: "up",
      cardRaw: cardText,
    });
    expect(first!.columns.facetKeys).toContain("skill:forecast");
    expect(second!.columns.cardRaw).toBe(spaced);
  });

  test("card texts: a repeated member counts as JSON.parse counts it (the last), escaped keys are read", () => {
    const first = '{"name":"First"}';
    const last = '{ "name" : "Last \\"quoted\\" \\\\" }';
    const text = `{"changes":[
      {"seq":1,"op":"upsert","id":"a","agent":{"card":${first},"id":"a","card":${last}}},
      {"seq":2,"op":"upsert","id":"b","agent":{"card":${first}},"agent":{"id":"b"}},
      {"seq":3,"op":"upsert","id":"c","agent":{"c\\u0061rd":${last}}}
    ],"nextSince":3,"hasMore":false}`;
    const parsed = JSON.parse(text) as { changes: Array<{ agent: { card?: unknown } }> };
    expect(cardTexts(text)).toEqual([last, undefined, last]);
    expect(parsed.changes.map((c) => c.agent.card)).toEqual([JSON.parse(last), undefined, JSON.parse(last)]);
    // A later "changes" replaces the earlier one, as it does for JSON.parse.
    expect(cardTexts(`{"changes":[{"agent":{"card":${first}}}],"changes":[{"agent":{}}]}`)).toEqual([
      undefined,
    ]);
  });

  test("card texts: the exact text of every card, whatever its content and spacing (property)", () => {
    const spaced = (value: unknown, space: number) => JSON.stringify(value, null, space);
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            card: fc.option(fc.dictionary(fc.string(), fc.jsonValue()), { nil: undefined }),
            space: fc.integer({ min: 0, max: 3 }),
          }),
          { maxLength: 8 },
        ),
        (changes) => {
          const parts = changes.map(({ card, space }, i) =>
            card === undefined
              ? `{"seq":${i + 1},"op":"delete","id":"x${i}"}`
              : `{"seq":${i + 1},"op":"upsert","id":"x${i}","agent":{"id":"x${i}","card":${spaced(card, space)},"z":[{"card":1}]}}`,
          );
          const text = `{ "changes" : [ ${parts.join(" ,\n")} ], "nextSince": ${changes.length}, "hasMore": false }`;
          const texts = cardTexts(text);
          expect(texts).toHaveLength(changes.length);
          changes.forEach(({ card, space }, i) => {
            expect(texts[i]).toBe(card === undefined ? undefined : spaced(card, space));
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  test("a page breaking the contract is refused whole", () => {
    const bad: Array<[string, number]> = [
      ["<html>", 0],
      ["{}", 0],
      ['{"changes":[],"nextSince":-1,"hasMore":false}', 0],
      ['{"changes":[],"nextSince":5,"hasMore":false}', 9],
      ['{"changes":[],"nextSince":5,"hasMore":true}', 5],
      [pageText([{ seq: 3, op: "upsert", id: "a1", agent: record("a1") }], 9), 3],
      [pageText([{ seq: 12, op: "upsert", id: "a1", agent: record("a1") }], 9), 0],
      [pageText([{ seq: 3, op: "move", id: "a1" }], 9), 0],
      [pageText([{ seq: 3, op: "upsert", id: "a1", agent: record("other") }], 9), 0],
      [
        pageText(
          [
            {
              seq: 3,
              op: "upsert",
              id: "a1",
              agent: record("a1", { source: { registry: "reg-b", originId: "a1", federated: false } }),
            },
          ],
          9,
        ),
        0,
      ],
      [
        pageText(
          [
            {
              seq: 3,
              op: "upsert",
              id: "a1",
              agent: record("a1", { source: { registry: "bad id!", originId: "a1", federated: false } }),
            },
          ],
          9,
        ),
        0,
      ],
      [
        pageText(
          [
            { seq: 3, op: "upsert", id: "a1", agent: record("a1") },
            {
              seq: 4,
              op: "upsert",
              id: "a2",
              agent: record("a2", { source: { registry: "reg-x", originId: "a2", federated: false } }),
            },
          ],
          9,
        ),
        0,
      ],
    ];
    for (const [text, since] of bad) expect(() => preparePage(text, since, "reg-b")).toThrow(FeedFormatError);
  });

  test("records this registry cannot keep are skipped and their copies removed, not the whole page", () => {
    const text = pageText(
      [
        {
          seq: 3,
          op: "upsert",
          id: "a1",
          agent: record("a1", { source: { registry: "reg-a", originId: "a1", federated: true } }),
        },
        { seq: 4, op: "upsert", id: "a2", agent: record("a2"), card: '{"name":"no url"}' },
        { seq: 5, op: "upsert", id: "a3", agent: record("a3") },
      ],
      5,
    );
    const page = preparePage(text, 0, "reg-b");
    expect(page.upserts.map((u) => u.originId)).toEqual(["a3"]);
    expect(page.deletes.sort()).toEqual(["a1", "a2"]);
    expect(page.skipped.map((s) => s.originId).sort()).toEqual(["a1", "a2"]);
  });

  test("what Postgres cannot store as text (NUL, lone surrogates) skips the record, never the page", () => {
    const weather = JSON.parse(cardText) as { skills: Array<Record<string, unknown>> };
    const withNul = JSON.stringify({ ...weather, description: "nul \u0000 inside" });
    const withSurrogate = JSON.stringify({
      ...weather,
      skills: [{ ...weather.skills[0], tags: ["lone \ud800 surrogate"] }],
    });
    // A status message cut at 500 code units between the halves of a pair: kept, made whole.
    const longStatus = `${"x".repeat(499)}\u{1F600} and more`;
    const text = pageText(
      [
        { seq: 1, op: "upsert", id: "a1", agent: record("a1"), card: withNul },
        { seq: 2, op: "upsert", id: "a2", agent: record("a2"), card: withSurrogate },
        { seq: 3, op: "upsert", id: "a3", agent: record("a3", { statusMessage: longStatus }) },
        { seq: 4, op: "delete", id: "bad\u0000id" },
        { seq: 5, op: "upsert", id: "a5", agent: record("a5") },
      ],
      5,
    );
    const page = preparePage(text, 0, "reg-b");
    expect(page.upserts.map((u) => u.originId)).toEqual(["a3", "a5"]);
    // Copies of the skipped records are removed; an id no copy can have is not looked for.
    expect(page.deletes.sort()).toEqual(["a1", "a2"]);
    expect(page.skipped.map((s) => s.originId).sort()).toEqual(["a1", "a2", "bad\u0000id"]);
    expect(page.skipped.find((s) => s.originId === "a1")?.reason).toContain("NUL");
    expect(page.upserts[0]!.columns.statusMessage).toBe("x".repeat(499));
  });

  test("copy ids are stable, distinct per origin and never a v7 (local) id", () => {
    expect(copyId("reg-a", "x")).toBe(copyId("reg-a", "x"));
    expect(copyId("reg-a", "x")).not.toBe(copyId("reg-b", "x"));
    expect(copyId("reg-a", "x")).toMatch(
      /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/,
    );
  });

  test("backoff doubles from the interval, with jitter in [base/2, base], capped", () => {
    expect(backoffMs(1, 1, 900, () => 0)).toBe(500);
    expect(backoffMs(1, 1, 900, () => 1)).toBe(1000);
    expect(backoffMs(1, 3, 900, () => 1)).toBe(4000);
    expect(backoffMs(30, 10, 900, () => 1)).toBe(900_000);
    expect(backoffMs(30, 1000, 900, () => 0.5)).toBe(675_000);
  });

  test("peer secrets: AES-GCM under a key derived from SECRET_KEY, bound to the peer", async () => {
    const key = "k".repeat(40);
    const sealed = await encryptSecret(key, "peer-1", "sec_abc");
    expect(sealed).not.toContain("sec_abc");
    expect(await encryptSecret(key, "peer-1", "sec_abc")).not.toBe(sealed);
    expect(await decryptSecret(key, "peer-1", sealed)).toBe("sec_abc");
    await expect(decryptSecret(key, "peer-2", sealed)).rejects.toThrow(/cannot be decrypted/);
    await expect(decryptSecret("x".repeat(40), "peer-1", sealed)).rejects.toThrow(/SECRET_KEY/);
  });
});
