import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

/** The publish bodies every bench sends: cards made unique per request from the shared fixtures. */

const REPO = resolve(import.meta.dir, "../..");

const FALLBACK_CARD = {
  protocolVersion: "0.3.0",
  name: "Bench Echo",
  description: "Echoes its input back.",
  url: "https://echo.example.net/a2a",
  version: "1.0.0",
  capabilities: {},
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [{ id: "echo", name: "Echo", description: "Returns the input.", tags: ["bench"] }],
};

/**
 * Card templates with "__N__" where a unique label goes: every url on the card's primary origin moves to
 * `https://__N__.bench.example.com`, and the name gets the label, since live agents need distinct urls.
 * Uses the shared valid fixtures when the checkout has them (so seeded data mixes card generations).
 */
export function cardTemplates(): Array<{ name: string; text: string }> {
  const dir = resolve(REPO, "../shared/fixtures/agent-cards/valid");
  const sources: Array<{ name: string; card: Record<string, unknown> }> = existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith(".json"))
        .sort()
        .map((f) => ({ name: f, card: JSON.parse(readFileSync(join(dir, f), "utf8")) }))
    : [];
  if (sources.length === 0) sources.push({ name: "built-in minimal card", card: FALLBACK_CARD });
  return sources.map(({ name, card }) => {
    const interfaces = (card.supportedInterfaces ?? card.additionalInterfaces) as
      | Array<{ url?: string }>
      | undefined;
    const primary = typeof card.url === "string" ? card.url : interfaces?.[0]?.url;
    if (!primary) throw new Error(`fixture ${name} has no url to make unique`);
    const copy = { ...card, name: `${String(card.name)} __N__` };
    const text = JSON.stringify(copy).split(new URL(primary).origin).join("https://__N__.bench.example.com");
    return { name, text };
  });
}

export const publishBody = (template: string, label: string) =>
  `{"card":${template.split("__N__").join(label)}}`;
