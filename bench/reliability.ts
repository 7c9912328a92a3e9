/**
 * `bun run bench:reliability` (issue 8, "Figures to report in BENCHMARKS.md"): runs the reliability
 * suites (test/fuzz.test.ts, test/access-matrix.test.ts, test/faults.test.ts, test/abuse.test.ts), each in
 * a bun test process of its own, with RELIABILITY_FIGURES_DIR set, so each writes what it counted
 * (test/support/figures.ts), and renders those figures against the issue's targets into the `reliability`
 * section of BENCHMARKS.md, with the soak's headline figures read back from its own section (the soak is
 * not re-run: it takes tens of minutes).
 *
 * Backends: the suites always run on PGlite; with BENCH_DATABASE_URL they run on Postgres as well (passed
 * as TEST_DATABASE_URL), with BENCH_REDIS_URL the limiter is also tried across two instances sharing that
 * Redis (TEST_REDIS_URL: a dedicated db number, not 0). The fault suite always starts Postgres and Redis
 * of its own, whatever is set. FUZZ_RUNS, FUZZ_RUNS_POSTGRES and FUZZ_SEED pass through to the fuzz suite.
 * BENCH_OUTPUT (BENCHMARKS.md). `bun bench/reliability.ts --render <report.json>` rewrites the section from
 * a saved run (the path is printed) without running the suites.
 *
 * The section is written even when a suite fails (its figures then show as missed), and the exit code is
 * non-zero whenever a suite failed or a target was missed.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { FigureRecord } from "../test/support/figures";
import { keyValueLines, sectionMarkers, writeSection } from "./support/report";

const REPO = resolve(import.meta.dir, "..");
export const SECTION_KEY = "reliability";
export const SUITE_FILES = [
  "test/fuzz.test.ts",
  "test/access-matrix.test.ts",
  "test/faults.test.ts",
  "test/abuse.test.ts",
];
/** The issue's targets. */
export const FUZZ_CASES_PER_RUN = 10_000;
export const FLOOD_BUCKET = 50;
const FAULTS_BACKEND = "own-postgres+redis";

export type SoakHeadline = { run: string; rows: Array<{ figure: string; measured: string; result: string }> };

export type ReliabilityReport = {
  startedAt: string;
  wallSeconds: number;
  command: string;
  machine: Array<[string, string]>;
  /** Route-suite backends of this run ("pglite", "postgres"); the fault suite brings its own. */
  backends: string[];
  redis: boolean;
  description: string;
  tests: { exitCode: number; pass: number; fail: number; skip: number; errors?: number; failed?: string[] };
  records: FigureRecord[];
  soak: SoakHeadline | undefined;
};

type Status = "met" | "missed";
type Line = { figure: string; measured: string; target: string; status: Status | "-" };

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const status = (ok: boolean): Status => (ok ? "met" : "missed");

/** The checks a complete run leaves figures for: any absent one is reported, and counts as missed. */
export function expectedChecks(backends: string[], redis: boolean): Array<[string, string, string]> {
  const checks: Array<[string, string, string]> = [];
  for (const backend of backends) {
    checks.push(["fuzz", backend, "hostile-input"]);
    checks.push(["access-matrix", backend, "cells"], ["access-matrix", backend, "aggregates"]);
    checks.push(["abuse", backend, "limiter-in-process"]);
    if (redis) checks.push(["abuse", backend, "limiter-redis-two-instances"]);
  }
  checks.push(["faults", FAULTS_BACKEND, "redis-killed"], ["faults", FAULTS_BACKEND, "postgres-stopped"]);
  return checks;
}

const floodLabel = (check: string) =>
  check === "limiter-in-process" ? "in-process" : "over Redis, two instances";

const num = (r: FigureRecord | undefined, key: string) => Number(r?.figures[key] ?? 0);

/** A row for a count whose target is none at all. */
const noneOf = (r: FigureRecord | undefined, key: string, figure: string): Line => ({
  figure,
  measured: fmt(num(r, key)),
  target: "0",
  status: status(num(r, key) === 0),
});

/** The soak section's run line and the headline rows of its Figures table, as the soak wrote them. */
export function soakHeadline(markdown: string): SoakHeadline | undefined {
  const { begin, end } = sectionMarkers("soak");
  const from = markdown.indexOf(begin);
  const to = markdown.indexOf(end, from);
  if (from < 0 || to < 0) return undefined;
  const section = markdown.slice(from, to);
  const run = /^Run (\S+) \(/m.exec(section)?.[1] ?? "unknown";
  const figures = section.slice(section.indexOf("### Figures"));
  const wanted = [/^requests served/, /^5xx responses/, /^writes acknowledged vs present/, /^RSS slope/];
  const rows: SoakHeadline["rows"] = [];
  for (const line of figures.split("\n").slice(1)) {
    if (line.startsWith("### ")) break;
    const cells = line.split("|").map((c) => c.trim());
    // "| figure | measured | target | result |" -> ["", figure, measured, target, result, ""]
    if (cells.length < 6 || !wanted.some((w) => w.test(cells[1]!))) continue;
    rows.push({ figure: cells[1]!, measured: cells[2]!, result: cells[4]! });
  }
  return rows.length ? { run, rows } : undefined;
}

/** Every figure of the run against its target, the issue's headline figures first. */
export function evaluate(report: ReliabilityReport): {
  headline: Line[];
  details: Array<{ title: string; lines: Line[] }>;
  missing: string[];
  allMet: boolean;
} {
  const find = (suite: string, backend: string, check: string) =>
    report.records.find((r) => r.suite === suite && r.backend === backend && r.check === check);
  const of = (suite: string, check?: string) =>
    report.records.filter((r) => r.suite === suite && (check === undefined || r.check === check));
  const missing = expectedChecks(report.backends, report.redis)
    .filter(([suite, backend, check]) => !find(suite, backend, check))
    .map(([suite, backend, check]) => `${suite} [${backend}] ${check}`);

  const fuzz = of("fuzz");
  const cells = of("access-matrix", "cells");
  const aggregates = of("access-matrix", "aggregates");
  // Redis first, then Postgres: the order the suite runs them in.
  const faults = of("faults").sort((a, b) =>
    a.check === "redis-killed" ? -1 : b.check === "redis-killed" ? 1 : 0,
  );
  const floods = of("abuse");
  const sum = (records: FigureRecord[], key: string) => records.reduce((n, r) => n + num(r, key), 0);

  const served =
    sum(fuzz, "tried") + sum(cells, "statusCells") + sum(aggregates, "compared") + sum(faults, "requests");
  const floodRequests = sum(floods, "requests");
  const fiveXx =
    sum(fuzz, "fiveXx") + sum(cells, "fiveXx") + sum(faults, "fiveXxOther") + sum(floods, "fiveXx");
  const acked = sum(faults, "acknowledged");
  const present = sum(faults, "present");
  const mismatched = sum(faults, "mismatched");
  const tried = sum(fuzz, "tried");
  const expectedCells = sum(cells, "expectedStatusCells");
  const checkedCells = sum(cells, "statusCells");
  const leaks = sum(cells, "leaks") + sum(aggregates, "changed");
  const passed = floods.map((r) => num(r, "passed"));
  const soakSlope = report.soak?.rows.find((r) => r.figure.startsWith("RSS slope"));

  const headline: Line[] = [
    {
      figure: "requests served by the suites",
      measured: `${fmt(served + floodRequests)} (${fmt(floodRequests)} of them the limiter floods)`,
      target: "-",
      status: "-",
    },
    {
      figure: "5xx outside the documented 503s",
      measured: `${fmt(fiveXx)} (documented 503 DEPENDENCY_UNAVAILABLE with Postgres stopped: ${fmt(sum(faults, "documented503"))})`,
      target: "0",
      status: status(fiveXx === 0 && faults.length > 0 && fuzz.length > 0),
    },
    {
      figure: "writes acknowledged vs present after faults (same card bytes)",
      measured: `${fmt(acked)} acknowledged, ${fmt(present)} present, ${fmt(mismatched)} with other bytes`,
      target: "equal",
      status: status(faults.length > 0 && acked > 0 && acked === present && mismatched === 0),
    },
    {
      figure: "fuzz cases tried in this run",
      measured: `${fmt(tried)} (${fuzz.map((r) => `${r.backend} ${fmt(num(r, "tried"))}`).join(", ") || "none"})`,
      target: `>= ${fmt(FUZZ_CASES_PER_RUN)}`,
      status: status(tried >= FUZZ_CASES_PER_RUN),
    },
    {
      figure: "fuzz 5xx found",
      measured: fmt(sum(fuzz, "fiveXx")),
      target: "0",
      status: status(fuzz.length > 0 && sum(fuzz, "fiveXx") === 0),
    },
    {
      figure: "leak matrix cells checked",
      measured: `${fmt(sum(cells, "cells"))} (${cells.map((r) => `${r.backend} ${fmt(num(r, "cells"))}`).join(", ") || "none"}): ${fmt(checkedCells)} route x caller x target cells of ${fmt(expectedCells)} in the table, plus ${fmt(sum(cells, "comparisonCells"))} private-vs-missing comparisons; ${fmt(leaks)} leaks`,
      target: "every cell, 0 leaks",
      status: status(cells.length > 0 && checkedCells === expectedCells && leaks === 0),
    },
    {
      figure: "limiter: requests passed per flood of 10,000 from one client",
      measured:
        floods.map((r) => `${r.backend} ${floodLabel(r.check)} ${fmt(num(r, "passed"))}`).join(", ") ||
        "none",
      target: `exactly ${FLOOD_BUCKET} per flood`,
      status: status(passed.length > 0 && passed.every((n) => n === FLOOD_BUCKET)),
    },
    {
      figure: "RSS slope over the soak",
      measured: soakSlope
        ? `${soakSlope.measured} (soak of ${report.soak!.run})`
        : "no soak section: run `bun run soak`",
      target: "flat (< 10 %/h)",
      status: soakSlope ? status(soakSlope.result === "met") : "missed",
    },
  ];

  const details: Array<{ title: string; lines: Line[] }> = [];
  for (const r of fuzz)
    details.push({
      title: `Fuzz [${r.backend}] (test/fuzz.test.ts, seed ${r.figures.seed}, ${r.figures.seconds} s)`,
      lines: [
        {
          figure: "cases generated",
          measured: `${fmt(num(r, "runs"))}: ${fmt(num(r, "tried"))} sent, ${fmt(num(r, "refusedByClient"))} refused by the client itself`,
          target: "all run",
          status: status(num(r, "tried") + num(r, "refusedByClient") === num(r, "runs")),
        },
        noneOf(r, "fiveXx", "5xx answers"),
        noneOf(
          r,
          "violations",
          "answers violating the property (not 4xx problem+json or documented; stack or SQL text; database changed by a rejected request)",
        ),
        {
          figure: "rejected requests that wrote rows (content fingerprint compared)",
          measured: `${fmt(num(r, "rejectedThatWrote"))}; database ${r.figures.databaseUnchanged ? "unchanged" : "CHANGED"} by the reads`,
          target: "unchanged",
          status: status(r.figures.databaseUnchanged === true),
        },
        {
          figure: "routes exercised",
          measured: `${fmt(num(r, "routesExercised"))} of ${fmt(num(r, "routes"))}`,
          target: "every route",
          status: status(num(r, "routes") > 0 && num(r, "routesExercised") === num(r, "routes")),
        },
      ],
    });
  for (const r of cells) {
    const agg = aggregates.find((a) => a.backend === r.backend);
    details.push({
      title: `Access matrix [${r.backend}] (test/access-matrix.test.ts: ${fmt(num(r, "routes"))} routes x ${fmt(num(r, "callers"))} caller kinds x targets)`,
      lines: [
        {
          figure: "cells checked (status, and no private id/name/url/marker in any header or body)",
          measured: `${fmt(num(r, "statusCells"))} of ${fmt(num(r, "expectedStatusCells"))}`,
          target: "every cell",
          status: status(
            num(r, "statusCells") === num(r, "expectedStatusCells") && num(r, "statusCells") > 0,
          ),
        },
        noneOf(r, "wrong", "cells with another status than expected"),
        noneOf(r, "fiveXx", "5xx answers"),
        {
          figure:
            "leaks: a private agent's id, name, url or marker shown, or it answered unlike a missing agent",
          measured: `${fmt(num(r, "leaks"))} in ${fmt(num(r, "cells"))} checks (the cells above and ${fmt(num(r, "comparisonCells"))} private-vs-missing comparisons)`,
          target: "0",
          status: status(num(r, "leaks") === 0),
        },
        {
          figure:
            "lists, totals, facets, stats, feed, well-known documents as before the private agents existed",
          measured: agg
            ? `${fmt(num(agg, "changed"))} changed of ${fmt(num(agg, "compared"))} compared (${fmt(num(agg, "expected"))} expected)`
            : "no figures",
          target: "0 changed, all compared",
          status: status(!!agg && num(agg, "changed") === 0 && num(agg, "compared") === num(agg, "expected")),
        },
      ],
    });
  }
  for (const r of faults) {
    const pg = r.check === "postgres-stopped";
    const lines: Line[] = [
      {
        figure: "requests (reads, searches, publishes)",
        measured: `${fmt(num(r, "requests"))} (${fmt(num(r, "reads"))} / ${fmt(num(r, "searches"))} / ${fmt(num(r, "publishes"))})`,
        target: "-",
        status: "-",
      },
      {
        figure: `reads served while ${pg ? "Postgres was down (cached agents)" : "Redis was down"}; reads failed`,
        measured: `${fmt(num(r, "readsDuringFault"))}; ${fmt(num(r, "readsFailed"))}`,
        target: "> 0; 0",
        status: status(num(r, "readsDuringFault") > 0 && num(r, "readsFailed") === 0),
      },
      pg
        ? {
            figure: "writes and searches while down: 503 DEPENDENCY_UNAVAILABLE (problem+json, Retry-After)",
            measured: `${fmt(num(r, "documented503"))}; ${fmt(num(r, "unavailableWithoutRetryAfterOrProblemJson"))} of the ${fmt(num(r, "unavailableChecked"))} kept without Retry-After or problem+json; ${fmt(num(r, "failedBeforeOrAfterFault"))} failed before or after the fault`,
            target: "> 0; 0; 0",
            status: status(
              num(r, "documented503") > 0 &&
                num(r, "unavailableWithoutRetryAfterOrProblemJson") === 0 &&
                num(r, "failedBeforeOrAfterFault") === 0,
            ),
          }
        : noneOf(r, "failed", "failed requests of any kind"),
      noneOf(r, "fiveXxOther", "5xx outside the documented 503s"),
      {
        figure: "writes acknowledged vs present (same card bytes)",
        measured: `${fmt(num(r, "acknowledged"))} vs ${fmt(num(r, "present"))} (${fmt(num(r, "mismatched"))} with other bytes)`,
        target: "equal",
        status: status(num(r, "acknowledged") === num(r, "present") && num(r, "mismatched") === 0),
      },
      {
        figure: "registry process",
        measured: `${r.figures.processAlive ? "alive" : "EXITED"}, ${fmt(num(r, "unhandled"))} unhandled errors in its log`,
        target: "alive, 0",
        status: status(r.figures.processAlive === true && num(r, "unhandled") === 0),
      },
    ];
    details.push({
      title: `Faults: ${pg ? "Postgres stopped and started" : "Redis killed and restarted"} under load (test/faults.test.ts, Postgres and Redis of its own)`,
      lines,
    });
  }
  for (const r of floods)
    details.push({
      title: `Abuse [${r.backend}]: limiter ${floodLabel(r.check)} (test/abuse.test.ts)`,
      lines: [
        {
          figure: "flood from one client: passed / 429 with Retry-After / other",
          measured: `${fmt(num(r, "passed"))} / ${fmt(num(r, "limited"))} / ${fmt(num(r, "other"))} of ${fmt(num(r, "requests"))}`,
          target: `${fmt(num(r, "expectedPassed"))} / rest / 0`,
          status: status(
            num(r, "passed") === num(r, "expectedPassed") &&
              num(r, "other") === 0 &&
              num(r, "limited") === num(r, "requests") - num(r, "expectedPassed"),
          ),
        },
        noneOf(r, "badHeaders", "answers with wrong limiter headers or body"),
      ],
    });

  const allLines = [...headline, ...details.flatMap((d) => d.lines)];
  const allMet = missing.length === 0 && allLines.every((l) => l.status !== "missed");
  return { headline, details, missing, allMet };
}

const tableLines = (lines: Line[]) => [
  "| figure | measured | target | result |",
  "| --- | --- | --- | --- |",
  ...lines.map((l) => `| ${l.figure} | ${l.measured} | ${l.target} | ${l.status} |`),
];

export function renderReliabilitySection(report: ReliabilityReport): string {
  const { begin, end } = sectionMarkers(SECTION_KEY);
  const { headline, details, missing, allMet } = evaluate(report);
  const t = report.tests;
  const lines = [
    begin,
    "## Reliability: fuzz, access matrix, faults, abuse (issue 8)",
    "",
    `Run ${report.startedAt} (${report.wallSeconds.toFixed(0)} s wall). ${report.description}.`,
    "",
    "Command:",
    "",
    "```sh",
    report.command,
    "```",
    "",
    `Every figure below was counted by the suites themselves during this run (\`${SUITE_FILES.join("`, `")}\`, each writing what it saw to RELIABILITY_FIGURES_DIR) and is checked against issue 8's targets here. \`bun test\` (one process per suite): ${t.pass} pass, ${t.fail} fail, ${t.skip} skipped${t.errors ? `, ${t.errors} ${t.errors === 1 ? "error" : "errors"} outside any test` : ""}, exit ${t.exitCode}. Targets: ${allMet ? "every one met" : "SOME MISSED (below)"}.`,
  ];
  // A failing test whose figures all meet their targets is still a failure: said apart, by name.
  if (t.failed?.length) lines.push("", ...t.failed.map((name) => `- Failed: ${name}`));
  if (missing.length)
    lines.push(
      "",
      `- No figures from: ${missing.join("; ")} (the suite failed or was skipped before reporting).`,
    );
  lines.push(...keyValueLines("Machine", report.machine));
  lines.push("", "### Figures (issue 8)", "", ...tableLines(headline));
  if (report.soak) {
    lines.push(
      "",
      `The soak's own figures, read back from its section below (run ${report.soak.run}, \`bun run soak\`):`,
      "",
      "| figure | measured | result |",
      "| --- | --- | --- |",
      ...report.soak.rows.map((r) => `| ${r.figure} | ${r.measured} | ${r.result} |`),
    );
  }
  for (const d of details) lines.push("", `### ${d.title}`, "", ...tableLines(d.lines));
  lines.push("", end);
  return lines.join("\n");
}

/** "12 pass", " 1 fail", " 3 skip" from bun test's summary. */
export function testSummary(output: string): {
  pass: number;
  fail: number;
  skip: number;
  errors: number;
  failed: string[];
} {
  const last = (word: string) => {
    const all = [...output.matchAll(new RegExp(`^\\s*(\\d+) ${word}\\s*$`, "gm"))];
    return Number(all.at(-1)?.[1] ?? 0);
  };
  // bun repeats every failure in its closing summary: keep each name once.
  const failed = [
    ...new Set([...output.matchAll(/^\(fail\) (.+?)(?: \[[\d.]+m?s\])?$/gm)].map((m) => m[1]!)),
  ];
  return { pass: last("pass"), fail: last("fail"), skip: last("skip"), errors: last("error"), failed };
}

export function readFigures(dir: string): FigureRecord[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as FigureRecord);
}

/** Copies bun test's output through while keeping it for the summary. */
async function tee(stream: ReadableStream<Uint8Array>, sink: NodeJS.WriteStream): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  for await (const chunk of stream) {
    sink.write(chunk);
    text += decoder.decode(chunk, { stream: true });
  }
  return text;
}

function redisDbNumber(url: string): number {
  return Number(new URL(url).pathname.replace(/^\//, "") || "0");
}

async function main(): Promise<boolean> {
  const { machineInfo } = await import("./support/machine");
  const { maskUrl } = await import("./support/backend");
  const output = resolve(REPO, process.env.BENCH_OUTPUT || "BENCHMARKS.md");
  const databaseUrl = process.env.BENCH_DATABASE_URL || undefined;
  const redisUrl = process.env.BENCH_REDIS_URL || undefined;
  // The abuse suite's limiter keys land in that db; 0 is where everything else lives by default.
  if (redisUrl && !(redisDbNumber(redisUrl) >= 1))
    throw new Error(
      "BENCH_REDIS_URL must name a dedicated database number other than 0, e.g. redis://127.0.0.1:6379/15",
    );

  const startedAt = new Date();
  const figuresDir = mkdtempSync(join(tmpdir(), "a2a-reliability-"));
  const env: Record<string, string | undefined> = { ...process.env, RELIABILITY_FIGURES_DIR: figuresDir };
  // The run's backends are the BENCH_ ones only: a TEST_ URL left in the shell must not add one silently.
  delete env.TEST_DATABASE_URL;
  delete env.TEST_REDIS_URL;
  if (databaseUrl) env.TEST_DATABASE_URL = databaseUrl;
  if (redisUrl) env.TEST_REDIS_URL = redisUrl;
  const backends = databaseUrl ? ["pglite", "postgres"] : ["pglite"];
  // One bun test process per suite, as a suite is meant to run: one suite's leftovers (PGlite instances,
  // timers, child processes) cannot change another's figures, and a failure is pinned to its suite.
  const tests = { exitCode: 0, pass: 0, fail: 0, skip: 0, errors: 0, failed: [] as string[] };
  for (const file of SUITE_FILES) {
    const args = ["bun", "test", "--timeout", "600000", file];
    console.log(`reliability: ${args.join(" ")} (figures in ${figuresDir})`);
    const proc = Bun.spawn(args, { cwd: REPO, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const [out, err, exitCode] = await Promise.all([
      tee(proc.stdout, process.stdout),
      tee(proc.stderr, process.stderr),
      proc.exited,
    ]);
    const summary = testSummary(`${out}\n${err}`);
    tests.exitCode ||= exitCode;
    tests.pass += summary.pass;
    tests.fail += summary.fail;
    tests.skip += summary.skip;
    tests.errors += summary.errors;
    tests.failed.push(...summary.failed.map((name) => `${file}: ${name}`));
    // A crash or a failure outside any test leaves no "(fail)" line: the suite is named all the same.
    if (exitCode !== 0 && summary.failed.length === 0) tests.failed.push(`${file}: exit ${exitCode}`);
  }

  const vars = Object.keys(process.env)
    .filter((k) => (k.startsWith("BENCH_") || k.startsWith("FUZZ_")) && process.env[k])
    .sort()
    .map((k) => `${k}=${k.endsWith("_URL") ? maskUrl(process.env[k]!) : process.env[k]}`);
  const script =
    process.env.npm_lifecycle_event === "bench:reliability"
      ? "bun run bench:reliability"
      : "bun bench/reliability.ts";
  const report: ReliabilityReport = {
    startedAt: startedAt.toISOString(),
    wallSeconds: (Date.now() - startedAt.getTime()) / 1000,
    command: [...vars, script].join(" "),
    machine: machineInfo(REPO).filter(([k]) => k !== "wrk"),
    backends,
    redis: Boolean(redisUrl),
    description: [
      `Route suites on PGlite (in memory)${databaseUrl ? ` and on Postgres (a database per suite on ${maskUrl(databaseUrl)}, dropped after)` : ""}`,
      redisUrl
        ? `limiter also over Redis ${maskUrl(redisUrl)} shared by two app instances`
        : "no shared Redis",
      "the fault suite on a Postgres cluster (initdb, pg_ctl) and a redis-server of its own, which it kills",
    ].join("; "),
    tests,
    records: readFigures(figuresDir),
    soak: existsSync(output) ? soakHeadline(readFileSync(output, "utf8")) : undefined,
  };
  rmSync(figuresDir, { recursive: true, force: true });
  return finish(report, output);
}

function finish(report: ReliabilityReport, output: string): boolean {
  writeSection(output, SECTION_KEY, renderReliabilitySection(report));
  // Outside the checkout: `--render` rewrites the section from it after a wording change.
  const saved = join(tmpdir(), `a2a-bench-reliability-${Date.parse(report.startedAt).toString(36)}.json`);
  writeFileSync(saved, JSON.stringify(report));
  const { headline, missing, allMet } = evaluate(report);
  console.log(`\n${tableLines(headline).join("\n")}`);
  if (missing.length) console.log(`no figures from: ${missing.join("; ")}`);
  console.log(`\nwrote the ${SECTION_KEY} section of ${output}; report data in ${saved}`);
  return allMet && report.tests.exitCode === 0;
}

if (import.meta.main) {
  let ok = false;
  try {
    const renderAt = process.argv.indexOf("--render");
    if (renderAt >= 0) {
      const report = JSON.parse(readFileSync(process.argv[renderAt + 1] ?? "", "utf8")) as ReliabilityReport;
      ok = finish(report, resolve(REPO, process.env.BENCH_OUTPUT || "BENCHMARKS.md"));
    } else ok = await main();
  } catch (error) {
    console.error(
      `\nreliability bench failed: ${error instanceof Error ? (error.stack ?? error.message) : error}`,
    );
  }
  process.exit(ok ? 0 : 1);
}
