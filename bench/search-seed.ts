/**
 * Seeds the search corpus straight into the database, in multi-row INSERTs, deriving every column with
 * the code a publish runs: analyzeCard (generation, url, name, description, version, facets), cardHash,
 * facetKeysOf from the agents repo, the agents_feed_stamp trigger for seq and ever_public, the
 * agent_search triggers for each agent's search row; plus the first agent_versions row of each agent,
 * as publish writes it. 100k publishes
 * through the API would take minutes; this takes the write path's CPU work without its round trips.
 *
 * What differs from 100k real publishes, on purpose: no audit rows (search never reads them); health
 * is set as the health checker would leave it (80% up, 5% down, 15% unknown) and 2% are deprecated, as
 * a PATCH would; ~10% are private, ~30% of those with entitlements for other clients.
 */
import { sql } from "drizzle-orm";
import type { PgInsertValue } from "drizzle-orm/pg-core";
import { agentSearch, agents, agentVersions, clients, entitlements } from "../src/infra/db/schema";
import type { Database } from "../src/infra/db/client";
import { analyzeCard, cardHash } from "../src/modules/agents/card";
import { facetKeysOf } from "../src/modules/agents/repo";
import { agentIdOf, type GeneratedAgent, generateAgent, OWNER_COUNT, ownerId } from "./search-corpus";

export const SEED_BATCH = 1000;

/** What the query mix needs to know about the corpus without generating it again. */
export type SeededCorpus = {
  names: string[];
  visibility: Array<"public" | "private">;
  owners: string[];
  privateOf: Map<string, number>;
};

export type SeedTimings = {
  clientsS: number;
  insertS: number;
  maintenanceS: number;
  rows: { agents: number; versions: number; entitlements: number; clients: number };
};

function buildBatch(from: number, to: number, corpus: SeededCorpus) {
  const agentRows: Array<PgInsertValue<typeof agents>> = [];
  const versionRows: Array<typeof agentVersions.$inferInsert> = [];
  const entitlementRows: Array<typeof entitlements.$inferInsert> = [];
  for (let i = from; i < to; i++) {
    const generated = generateAgent(i);
    const analysis = analyzeCard(generated.card);
    if (!analysis.ok)
      throw new Error(`generated card ${i} is invalid: ${JSON.stringify(analysis.errors.slice(0, 3))}`);
    const hash = cardHash(generated.card);
    const id = agentIdOf(i);
    // The columns service.ts cardColumns() derives from the analysis, one for one.
    const columns = {
      name: analysis.name,
      description: analysis.description,
      url: analysis.primaryUrl,
      generation: analysis.generation,
      protocolVersion: analysis.protocolVersion,
      latestVersion: analysis.version,
      cardRaw: generated.text,
      cardHash: hash,
      skills: analysis.facets.skills,
      tags: analysis.facets.tags,
      inputModes: analysis.facets.inputModes,
      outputModes: analysis.facets.outputModes,
      streaming: analysis.facets.streaming,
      provider: analysis.facets.provider,
    };
    agentRows.push({
      id,
      owner: generated.owner,
      visibility: generated.visibility,
      status: generated.status,
      statusMessage: generated.statusMessage,
      cardUrl: null,
      ...columns,
      health: generated.health,
      checkedAt: generated.health === "unknown" ? null : new Date(Date.now() - ((i * 7919) % 3_600_000)),
      // As agentsRepo.insertPublished: the facet keys from the same helper, seq from the sequence (the
      // trigger replaces it, as it does for a publish).
      facetKeys: facetKeysOf(columns),
      seq: sql`nextval('agent_seq')`,
    });
    versionRows.push({
      agentId: id,
      version: analysis.version,
      cardRaw: generated.text,
      cardHash: hash,
    });
    for (const clientId of generated.entitled) entitlementRows.push({ agentId: id, clientId });
    describe(corpus, i, generated);
  }
  return { agentRows, versionRows, entitlementRows };
}

function describe(corpus: SeededCorpus, i: number, generated: GeneratedAgent) {
  corpus.names[i] = generated.name;
  corpus.visibility[i] = generated.visibility;
  corpus.owners[i] = generated.owner;
  if (generated.visibility === "private")
    corpus.privateOf.set(generated.owner, (corpus.privateOf.get(generated.owner) ?? 0) + 1);
}

/**
 * What the query mix needs of a corpus seeded by an earlier run into a kept database: the corpus is
 * deterministic, so it is generated again rather than read back. Throws when the database holds a
 * different number of agents (another size, or a seeding that did not finish). The publishing clients
 * get `secret`, as seedCorpus would have given them.
 */
export async function reuseCorpus(
  database: Database,
  options: { count: number; secret: string },
): Promise<{ corpus: SeededCorpus; timings: SeedTimings }> {
  const [counted] = (await database.rows<{ agents: number; versions: number; entitlements: number }>(sql`
    select (select count(*) from ${agents})::int as agents, (select count(*) from ${agentVersions})::int as versions,
      (select count(*) from ${entitlements})::int as entitlements`)) as [
    { agents: number; versions: number; entitlements: number },
  ];
  if (Number(counted.agents) !== options.count)
    throw new Error(
      `the kept database holds ${counted.agents} agents, not ${options.count}: drop it (or name another) to seed afresh`,
    );
  const corpus: SeededCorpus = { names: [], visibility: [], owners: [], privateOf: new Map() };
  for (let i = 0; i < options.count; i++) describe(corpus, i, generateAgent(i));
  const started = performance.now();
  const secretHash = await Bun.password.hash(options.secret, { algorithm: "argon2id" });
  await database.db.update(clients).set({ secretHash }).where(sql`${clients.clientId} like 'bench-client-%'`);
  return {
    corpus,
    timings: {
      clientsS: (performance.now() - started) / 1000,
      insertS: 0,
      maintenanceS: 0,
      rows: {
        agents: Number(counted.agents),
        versions: Number(counted.versions),
        entitlements: Number(counted.entitlements),
        clients: OWNER_COUNT,
      },
    },
  };
}

/**
 * Inserts `count` agents, `concurrency` batches in flight (1 on PGlite: one connection), after the
 * OWNER_COUNT publishing clients (all with `secret`, hashed once as the auth service hashes secrets).
 * Then VACUUM ANALYZE, the state autovacuum leaves a table in after a burst of publishes.
 */
export async function seedCorpus(
  database: Database,
  options: { count: number; concurrency: number; secret: string; progress?: (done: number) => void },
): Promise<{ corpus: SeededCorpus; timings: SeedTimings }> {
  const corpus: SeededCorpus = { names: [], visibility: [], owners: [], privateOf: new Map() };
  const started = performance.now();
  const secretHash = await Bun.password.hash(options.secret, { algorithm: "argon2id" });
  await database.db.insert(clients).values(
    Array.from({ length: OWNER_COUNT }, (_, k) => ({
      id: Bun.randomUUIDv7(),
      clientId: ownerId(k + 1),
      secretHash,
      name: `bench publisher ${k + 1}`,
      scopes: ["agents:read", "agents:write"],
    })),
  );
  const clientsS = (performance.now() - started) / 1000;

  const insertStarted = performance.now();
  const batches = Math.ceil(options.count / SEED_BATCH);
  let nextBatch = 0;
  let done = 0;
  let versions = 0;
  let entitled = 0;
  const worker = async () => {
    while (nextBatch < batches) {
      const b = nextBatch++;
      const from = b * SEED_BATCH;
      const { agentRows, versionRows, entitlementRows } = buildBatch(
        from,
        Math.min(options.count, from + SEED_BATCH),
        corpus,
      );
      await database.db.transaction(async (tx) => {
        await tx.insert(agents).values(agentRows);
        await tx.insert(agentVersions).values(versionRows);
        if (entitlementRows.length > 0) await tx.insert(entitlements).values(entitlementRows);
      });
      done += agentRows.length;
      versions += versionRows.length;
      entitled += entitlementRows.length;
      options.progress?.(done);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, batches)) }, worker));
  const insertS = (performance.now() - insertStarted) / 1000;

  const maintenanceStarted = performance.now();
  for (const table of ["agents", "agent_search", "agent_versions", "entitlements", "clients"])
    await database.rows(sql.raw(`vacuum analyze ${table}`));
  const maintenanceS = (performance.now() - maintenanceStarted) / 1000;
  return {
    corpus,
    timings: {
      clientsS,
      insertS,
      maintenanceS,
      rows: { agents: done, versions, entitlements: entitled, clients: OWNER_COUNT },
    },
  };
}

/**
 * Checks on a 1% sample that what was seeded is what the registry derives itself: every live agent has
 * its search row, with the document a reindex rebuilds from the agent's columns. Returns the sample
 * size; throws on any mismatch.
 */
export async function verifySeeded(database: Database): Promise<number> {
  const rows = await database.rows<{ sampled: number; differing: number }>(sql`
    select count(*)::int as sampled,
      count(*) filter (where ${agentSearch.searchDoc} is distinct from
        agent_search_document(${agents.name}, ${agents.description}, ${agents.skills}, ${agents.tags}))::int as differing
    from ${agents} left join ${agentSearch} on ${agentSearch.id} = ${agents.id}
    where ${agents.seq} % 100 = 0 and ${agents.deletedAt} is null`);
  const { sampled, differing } = rows[0]!;
  if (Number(differing) > 0)
    throw new Error(`${differing} of ${sampled} sampled agents lack the search row a reindex would write`);
  return Number(sampled);
}
