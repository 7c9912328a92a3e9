/** Card fixtures for the interop suites (compat, import, client, AI Catalog). */
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

export const FIXTURES = join(import.meta.dir, "../../../shared/fixtures/agent-cards");

/** A fixture file's text (trimmed, as a card is stored). */
export const fixtureText = (dir: string, name: string) =>
  readFileSync(join(FIXTURES, dir, name), "utf8").trim();
export const fixture = (dir: string, name: string) =>
  JSON.parse(fixtureText(dir, name)) as Record<string, unknown>;
/** The card files of a fixture directory, sorted. */
export const cardFiles = (dir: string) =>
  readdirSync(join(FIXTURES, dir))
    .filter((f) => f.endsWith(".json"))
    .sort();

let unique = 0;
/** A valid 0.3 card named `<label> <n>` with a url of its own (live urls must be unique). */
export function cardWith(label: string, overrides: Record<string, unknown> = {}) {
  unique++;
  return {
    ...fixture("valid", "weather-0.3.json"),
    name: `${label} ${unique}`,
    url: `https://${label.toLowerCase().replaceAll(" ", "-")}-${unique}-${Date.now()}.example.com/a2a`,
    ...overrides,
  };
}
