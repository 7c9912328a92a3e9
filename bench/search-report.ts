/** The `search-<backend>` section of BENCHMARKS.md, written by bench/search.ts. */
import type { Explained, KindTiming, Scenario, TypoMiss } from "./search";
import { TYPO_MIN_LENGTH } from "./search-queries";
import type { SeedTimings } from "./search-seed";
import type { CpuSample } from "./support/cpu";
import {
  errorsCell,
  fmtMs,
  fmtRps,
  keyValueLines,
  type RunReport,
  runHeaderLines,
  sectionMarkers,
} from "./support/report";

/** The run facts shared with the read-path report, then what only the search run has. */
export type SearchReport = Pick<
  RunReport,
  "backendKind" | "backendDescription" | "startedAt" | "wallSeconds" | "command" | "registryEnv" | "machine"
> & {
  settings: {
    agents: number;
    paths: number;
    durationS: number;
    warmupS: number;
    connections: number;
    threads: number;
  };
  /** `reusedFrom`: the kept database an earlier run seeded (BENCH_SEARCH_KEEP_DATABASE); no timings then. */
  seed: SeedTimings & { concurrency: number; verifiedSample: number; reusedFrom?: string };
  corpus: {
    agents: number;
    privateAgents: number;
    tagWords: number;
    organizations: number;
    tokenClient: string;
    tokenClientPrivate: number;
    anonymousTotal: number;
    clientTotal: number;
  };
  mix: {
    paths: number;
    byKind: Array<{ kind: string; what: string; count: number; auth: number }>;
    typosChecked: number;
    typoMisses: TypoMiss[];
    /** One-typo queries on names shorter than TYPO_MIN_LENGTH, outside the mix: how many were found. */
    shortNameTypos: { tried: number; found: number };
  };
  scenarios: Scenario[];
  kindTimings: KindTiming[];
  explained: Explained[];
  peakRssKb: number;
  target: { ms: number; agents: number; onPostgres: boolean };
  /** Load averages (1 min) when the run started and when it ended: how shared the machine was. */
  load: { start: number; end: number };
  /** Scenarios skipped, errors, backlogs drained: said next to the results. */
  notes: string[];
};

/** "3.1 ms (registry 1.2 + Postgres 1.9)" per request. */
export function cpuText(cpu: CpuSample, requests: number): string {
  if (requests === 0) return "- (no request finished)";
  const per = (ms: number) => (requests > 0 ? ms / requests : 0);
  const total = per(cpu.registryMs + (cpu.postgresMs ?? 0));
  const parts =
    cpu.postgresMs === undefined
      ? `registry, Postgres inside it or not counted`
      : `registry ${per(cpu.registryMs).toFixed(1)} + Postgres ${per(cpu.postgresMs).toFixed(1)}`;
  return `${total.toFixed(1)} ms (${parts})`;
}

const n = (value: number) => Math.round(value).toLocaleString("en-US");
const pct = (share: number) => `${Math.round(share * 100)}%`;

function targetStatus(report: SearchReport, p95Ms: number): "met" | "missed" | "n/a" {
  if (!report.target.onPostgres || report.settings.agents < report.target.agents) return "n/a";
  return p95Ms < report.target.ms ? "met" : "missed";
}

export function renderSearchSection(report: SearchReport): string {
  const key = `search-${report.backendKind}`;
  const { begin, end } = sectionMarkers(key);
  const { settings, seed, corpus, mix } = report;
  const scenario = (k: string) => report.scenarios.find((s) => s.key === k);
  const ceiling = scenario("e")!;
  const lines: string[] = [begin, `## Search: ${report.backendKind}`, ""];
  lines.push(...runHeaderLines(report));
  lines.push(
    `- Backend: **${report.backendKind}**; one registry process (\`bun src/index.ts\`, WEB_CONCURRENCY=1) with the Postgres search backend (no ELASTICSEARCH_URL), LOG_LEVEL=warn, rate limits raised, federation off.`,
    `- The machine has 2 cores shared by wrk, the registry${report.backendKind === "embedded" ? " (PGlite runs inside it)" : ", Postgres"} and, during this run, other work (1-minute load average ${report.load.start.toFixed(2)} at the start, ${report.load.end.toFixed(2)} at the end). ${
      Math.max(report.load.start, report.load.end) > 4
        ? "**That is several times more runnable work than cores: every latency here is inflated many times over by waiting for a core, and even CPU per request is inflated (context switches, shared caches), though less.** Compare kinds and scenarios with each other, not with the target's absolute figure."
        : "The figures are noisy, by a third between runs or more."
    }`,
    "- Before measuring, the bench checks that sampled paths of every kind answer 200 (anonymous and with the token) and that every typo query finds its agent on the first page; it fails otherwise.",
    `- Scenario (e) is the ceiling: a bare \`Bun.serve\` (bench/baseline.ts) answering every path of the mix with a constant JSON body, at ${settings.connections} connections; "x ceiling" is shown only for runs at that connection count. For search it says little: a search is database work, not HTTP overhead.`,
    `- Latencies are wrk's (its histogram, bench/wrk/common.lua); "latency per kind" is measured by the bench's own fetch, one request at a time, after the wrk runs.`,
    `- "CPU per request" is the CPU time (utime + stime from /proc) the registry process${report.backendKind === "embedded" ? " (PGlite included)" : " and the Postgres backends of the bench database (polled every 50 ms, so very short-lived parallel workers are missed)"} spent during the run, divided by the requests completed: close to the unloaded service time of a CPU-bound request, and much less sensitive to other work on the machine than the latencies${report.backendKind === "embedded" ? "" : " (it can exceed the latency: a parallel query adds its workers' CPU)"}.`,
  );
  lines.push(...keyValueLines("Machine", report.machine));
  lines.push(
    ...keyValueLines("Settings", [
      ["Agents seeded", n(settings.agents)],
      [
        "Paths in the mix",
        `${n(mix.paths)} (${pct(mix.byKind.reduce((sum, k) => sum + k.auth, 0) / mix.paths)} with a bearer token)`,
      ],
      [
        "Duration per scenario",
        `${settings.durationS} s (one warm-up pass of ${settings.warmupS} s before (e) and before (a))`,
      ],
      ["Connections / wrk threads", `${settings.connections} / ${settings.threads}; 1 / 1 for (b) and (c1)`],
      [
        "Seeding",
        seed.reusedFrom
          ? `reused from ${seed.reusedFrom}`
          : `${seed.concurrency} batch${seed.concurrency > 1 ? "es" : ""} of 1,000 agents in flight`,
      ],
    ]),
  );

  const agentsPerS = seed.rows.agents / seed.insertS;
  lines.push(
    "",
    "### Corpus",
    "",
    `- ${n(corpus.agents)} A2A 0.3 cards, generated deterministically (seeded PRNG per agent, bench/search-corpus.ts): names from word combinations (prefix, domain word, role, e.g. "Nimbus Weather Forecaster"), descriptions of 1 to 3 sentences from a vocabulary of a few hundred words, 1 to 8 skills (mean about 3) with 1 to 5 tags each from ${corpus.tagWords} tag words (Zipf-weighted, clustered by the agent's domain), input and output modes from 10 media types, providers from ${corpus.organizations} organisations (8% without), 45% streaming, 40% with security schemes; cards average about 1.4 KB.`,
    `- ${n(corpus.privateAgents)} private (${pct(corpus.privateAgents / corpus.agents)}), owned by ${n(seed.rows.clients)} publishing clients (Zipf), ${n(seed.rows.entitlements)} entitlements to other clients; 2% deprecated; health 80% up, 5% down, 15% unknown (as the health checker would leave it).`,
    `- Seeded straight into the database in multi-row INSERTs (bench/search-seed.ts), every column derived with the publish path's code: analyzeCard, cardHash and facetKeysOf (src/modules/agents), seq and ever_public from the agents trigger, each agent's search row (agent_search) from its triggers, plus each agent's first agent_versions row; no audit rows. Checked afterwards: on a 1% sample (${n(seed.verifiedSample)} agents) every agent has its search row, with the document a reindex rebuilds from the agent.`,
    seed.reusedFrom
      ? `- **Seeding: none in this run**: the ${n(seed.rows.agents)} agents (+ ${n(seed.rows.versions)} versions) were seeded by an earlier run into the kept database ${seed.reusedFrom} (BENCH_SEARCH_KEEP_DATABASE) and reused, migrated to this commit's schema.`
      : `- **Seeding: ${n(seed.rows.agents)} agents (+ ${n(seed.rows.versions)} versions) in ${seed.insertS.toFixed(1)} s = ${n(agentsPerS)} agents/s**, then VACUUM ANALYZE in ${seed.maintenanceS.toFixed(1)} s (clients: ${seed.clientsS.toFixed(1)} s, one argon2id hash).`,
    `- The bearer token belongs to \`${corpus.tokenClient}\`, the publisher with the most private agents (${n(corpus.tokenClientPrivate)}): the browse total is ${n(corpus.anonymousTotal)} for anonymous callers and ${n(corpus.clientTotal)} for it.`,
  );

  lines.push(
    "",
    "### Query mix",
    "",
    `${n(mix.paths)} paths (bench/search-queries.ts), shuffled, each wrk thread starting at its own offset (bench/wrk/paths.lua). Words are drawn from a random agent's card, so most queries match something; ${n(mix.typosChecked)} typo queries were checked before measuring.`,
    "",
    "| kind | paths | with token | what |",
    "| --- | ---: | ---: | --- |",
  );
  for (const k of mix.byKind) lines.push(`| ${k.kind} | ${n(k.count)} | ${n(k.auth)} | ${k.what} |`);

  lines.push(
    "",
    "### Results",
    "",
    "| scenario | request | conns | req/s | x ceiling | p50 | p90 | p95 | p99 | max | requests | errors | CPU per request |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
  );
  for (const s of report.scenarios) {
    const r = s.result;
    const ms = (value: number) => (r.requests === 0 ? "-" : fmtMs(value));
    const ratio =
      s.connections === ceiling.connections && s.key !== "e" ? (r.rps / ceiling.result.rps).toFixed(3) : "-";
    lines.push(
      `| (${s.key}) ${s.label} | \`${s.request}\` | ${s.connections} | ${fmtRps(r.rps)} | ${ratio} | ${ms(r.p50Ms)} | ${ms(r.p90Ms)} | **${ms(r.p95Ms)}** | ${ms(r.p99Ms)} | ${ms(r.maxMs)} | ${n(r.requests)} | ${errorsCell(r)} | ${s.cpu ? cpuText(s.cpu, r.requests) : "-"} |`,
    );
  }

  if (report.notes.length > 0) lines.push("");
  for (const note of report.notes) lines.push(`- ${note}`);
  lines.push(
    "",
    "### Latency per kind, one request at a time",
    "",
    'Up to 30 paths of each kind (the first in the file), each requested once, after the wrk runs; counts are remembered per query for ~1 s, so these mostly compute them. "matches" is the mean `total` (empty with facets=false).',
    "",
    "| kind | n | p50 | p95 | max | CPU per request | matches (mean) | no match |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
  );
  for (const t of report.kindTimings)
    lines.push(
      `| ${t.kind} | ${t.n} | ${fmtMs(t.p50Ms)} | ${fmtMs(t.p95Ms)} | ${fmtMs(t.maxMs)} | ${fmtMs(t.cpuMs / t.n)} | ${t.meanTotal === null || Number.isNaN(t.meanTotal) ? "-" : n(t.meanTotal)} | ${pct(t.emptyShare)} |`,
    );

  const a = scenario("a")!.result;
  const b = scenario("b")!.result;
  // No request finished within the run: wrk has no latency to report, and the target cannot be met.
  const statusOf = (r: typeof a) =>
    r.requests === 0 ? targetStatus(report, Infinity) : targetStatus(report, r.p95Ms);
  const measured = (r: typeof a) =>
    r.requests === 0
      ? `no request finished within ${settings.durationS} s`
      : `p95 ${fmtMs(r.p95Ms)} at ${fmtRps(r.rps)} req/s`;
  const statusA = statusOf(a);
  const statusB = statusOf(b);
  const why =
    report.target.onPostgres && settings.agents >= report.target.agents
      ? ""
      : report.target.onPostgres
        ? ` (n/a: ${n(settings.agents)} agents, the target is stated for ${n(report.target.agents)})`
        : " (n/a: the target is stated for the Postgres backend)";
  lines.push(
    "",
    "### Target (issue 4)",
    "",
    "| target | measured | result |",
    "| --- | --- | --- |",
    `| search p95 < ${report.target.ms} ms with ${n(report.target.agents)} agents on Postgres: the mix at ${settings.connections} connections | ${measured(a)}${why} | ${statusA} |`,
    `| the same, unloaded: the mix at 1 connection | ${measured(b)}${why} | ${statusB} |`,
  );

  if (report.explained.length > 0) {
    lines.push(
      "",
      "### What the slowest kinds spend (EXPLAIN ANALYZE)",
      "",
      "The slowest path of each of the three slowest kinds above, run once more through the registry's own search backend (src/infra/search/pg.ts, counts forced as with consistent=true) on the same database after the registry stopped, and each statement it sent explained with its parameters (bench/search-explain.ts). Plans condensed to node lines (inclusive time, rows) and the details that explain a cost.",
    );
    for (const e of report.explained) {
      const total = e.statements.reduce((sum, s) => sum + s.executionMs, 0);
      lines.push(
        "",
        `**${e.kind}**: \`${decodeURIComponent(e.path)}\`${e.auth ? " (with the token)" : ""}: search ${fmtMs(e.searchMs)} in process; statements ${e.statements.map((s) => `${s.role} ${fmtMs(s.executionMs)}`).join(", ")} (sum ${fmtMs(total)}; they run one after the other, the page's records last).`,
      );
      for (const s of e.statements) {
        lines.push(
          "",
          `${s.role} (execution ${fmtMs(s.executionMs)}, planning ${fmtMs(s.planningMs)}):`,
          "",
          "```text",
        );
        lines.push(...s.condensed);
        lines.push("```");
      }
    }
  }

  const observations: string[] = [];
  const c = (scenario("c") ?? scenario("c1"))!;
  const d = scenario("d")!.result;
  observations.push(
    `Remembered counts: browsing everything answered from the counts kept for ~1 s (d) runs at ${fmtRps(d.rps)} req/s with p95 ${fmtMs(d.p95Ms)}, against ${fmtRps(c.result.rps)} req/s and p95 ${fmtMs(c.result.p95Ms)} when every request counts (${c.key}, ${c.connections} connection${c.connections > 1 ? "s" : ""}).`,
  );
  if (d.rps < 2 * c.result.rps)
    observations.push(
      "The remembered counts barely helped here: pg.ts stamps an entry with the time its computation started and keeps it fresh for 1 s, so when counting takes about a second or more no later request finds it fresh; and concurrent requests for the same key each compute it (no single-flight).",
    );
  const slowest = [...report.kindTimings].sort((x, y) => y.p95Ms - x.p95Ms).slice(0, 3);
  observations.push(
    `Slowest kinds one at a time (p95): ${slowest.map((t) => `${t.kind} ${fmtMs(t.p95Ms)}`).join(", ")}; fastest: ${[
      ...report.kindTimings,
    ]
      .sort((x, y) => x.p95Ms - y.p95Ms)
      .slice(0, 2)
      .map((t) => `${t.kind} ${fmtMs(t.p95Ms)}`)
      .join(", ")}.`,
  );
  const misses = report.mix.typoMisses;
  if (misses.length > 0)
    observations.push(
      `${misses.length} of ${report.mix.typosChecked} typo queries of the mix did not have their agent on page 1 (the bench tolerates up to 1%): ${misses
        .map(
          (m) =>
            `"${m.query}" for "${m.expected}" (page 1 began ${m.got.map((g) => `"${g}"`).join(", ")}; ${n(m.total)} matches)`,
        )
        .join(
          "; ",
        )}. The name part of the score is \`word_similarity\`, the best match of the query against any stretch of the name, so longer names sharing one word can outscore the intended one.`,
    );
  const short = report.mix.shortNameTypos;
  if (short.tried > 0)
    observations.push(
      `Typo tolerance is weaker on short names: of ${short.tried} one-typo queries on names under ${TYPO_MIN_LENGTH} characters (not in the mix, e.g. "mpale coach" for "Maple Coach"), ${short.found} found their agent on page 1 (${pct(short.found / short.tried)}). One edit changes 3 to 4 of the 10 to 16 trigrams of such a name, so \`word_similarity\` can fall under pg_trgm's 0.6 threshold of the \`<%\` operator and the name does not match at all (and its words do not match the full-text query either). The mix's typo queries use names of ${TYPO_MIN_LENGTH}+ characters, all of which were found.`,
    );
  observations.push(`Peak RSS of the registry process: ${(report.peakRssKb / 1024).toFixed(0)} MiB.`);
  lines.push("", "### Observations", "");
  for (const o of observations) lines.push(`- ${o}`);
  lines.push("", end);
  return lines.join("\n");
}
