/**
 * Fills a registry's database with N valid public agents in one SQL statement, far faster than
 * publishing through the API (used by the federation tests and bench/federation.ts). Each row is what
 * a publish would store: a valid card kept in canonical JSON (so card_hash is its real sha256), the
 * facets derived from it (the search row follows from the agents triggers), an owner, a seq. Run against a database no registry
 * process has open (PGlite) or any time (Postgres).
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { sql } from "drizzle-orm";
import { openDatabase } from "../../src/infra/db/client";
import { analyzeCard, canonicalCardJson } from "../../src/modules/agents/card";
import { facetKeysOf } from "../../src/modules/agents/repo";

const ROOT = resolve(import.meta.dir, "../..");
const N = "__N__";

/** A text[] literal (drizzle would expand a JS array into a parameter list). */
const textArray = (values: string[]) =>
  values.length === 0
    ? sql`'{}'::text[]`
    : sql`array[${sql.join(
        values.map((v) => sql`${v}`),
        sql`, `,
      )}]::text[]`;

export async function seedAgents(
  target: { dataDir?: string; databaseUrl?: string },
  count: number,
  label = "Seed",
) {
  const base = JSON.parse(
    readFileSync(join(ROOT, "../shared/fixtures/agent-cards/valid/weather-0.3.json"), "utf8"),
  ) as Record<string, unknown>;
  const template = {
    ...base,
    name: `${label} agent ${N}`,
    description: `${label} agent number ${N}: answers weather questions for its city.`,
    url: `https://${label.toLowerCase()}-${N}.example.com/a2a/v1`,
  };
  const analysis = analyzeCard(template);
  if (!analysis.ok) throw new Error("seed template card is invalid");
  // Canonical (sorted keys, no spaces): substituting digits into strings keeps it canonical, so the
  // hash of the stored text is the card's real hash.
  const canonical = canonicalCardJson(template);
  const facets = analysis.facets;
  const facetKeys = facetKeysOf(facets);
  const database = await openDatabase({
    url: target.databaseUrl,
    dataDir: target.dataDir ?? "unused",
    poolMax: 2,
  });
  try {
    await database.migrate();
    const text = sql`replace(${canonical}, ${N}, g::text)`;
    await database.rows(sql`
      insert into agents (id, owner, name, description, url, visibility, status, generation,
        protocol_version, latest_version, card_raw, card_hash, skills, tags, input_modes,
        output_modes, facet_keys, streaming, provider, seq)
      select gen_random_uuid(), 'seed-publisher', replace(${template.name as string}, ${N}, g::text),
        replace(${template.description as string}, ${N}, g::text), replace(${analysis.primaryUrl}, ${N}, g::text),
        'public', 'active', ${analysis.generation}, ${analysis.protocolVersion}, ${analysis.version},
        ${text}, encode(sha256(convert_to(${text}, 'UTF8')), 'hex'),
        ${textArray(facets.skills)}, ${textArray(facets.tags)}, ${textArray(facets.inputModes)},
        ${textArray(facets.outputModes)}, ${textArray(facetKeys)}, ${facets.streaming}, ${facets.provider},
        nextval('agent_seq')
      from generate_series(1, ${count}::int) g`);
    await database.rows(sql`
      insert into agent_versions (agent_id, version, card_raw, card_hash)
      select id, latest_version, card_raw, card_hash from agents
      where owner = 'seed-publisher' and not exists (select 1 from agent_versions v where v.agent_id = agents.id)`);
    await database.rows(sql`analyze agents`);
  } finally {
    await database.close();
  }
}
