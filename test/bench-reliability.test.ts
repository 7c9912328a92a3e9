/**
 * bench/reliability.ts: the figures the suites recorded, judged against issue 8's targets and rendered into
 * the `reliability` section of BENCHMARKS.md, replacing only that section.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  evaluate,
  expectedChecks,
  readFigures,
  type ReliabilityReport,
  renderReliabilitySection,
  SECTION_KEY,
  soakHeadline,
  testSummary,
} from "../bench/reliability";
import { writeSection } from "../bench/support/report";
import { type FigureRecord, recordFigures } from "./support/figures";

const SOAK = `<!-- bench:begin soak -->
## Soak: mixed load with Redis restarts (issue 8)

Run 2026-11-25T16:18:24.380Z (1618 s wall). Postgres 15.

### Figures

| figure | measured | target | result |
| --- | --- | --- | --- |
| requests served | 3,140,267 (2,616 req/s) | - | - |
| 5xx responses | 0 (503 DEPENDENCY_UNAVAILABLE: 0) | 0 outside documented 503s | met |
| writes acknowledged vs present (publishes) | 7,768 acknowledged, 7,768 present | equal | met |
| RSS slope over the second half (least squares) | +4.7 MiB/h (+2.2 % of 209 MiB per hour) | flat (< 10 %/h) | met |
| p99 latency, all requests | 126 ms | - | - |

### By request kind

| kind | requests |
| --- | ---: |
| requests served | 1 |
<!-- bench:end soak -->`;

const rec = (
  suite: FigureRecord["suite"],
  backend: string,
  check: string,
  figures: FigureRecord["figures"],
) => ({ suite, backend, check, figures }) satisfies FigureRecord;

function passingRecords(): FigureRecord[] {
  return [
    rec("fuzz", "pglite", "hostile-input", {
      runs: 10_000,
      tried: 9_990,
      refusedByClient: 10,
      fiveXx: 0,
      violations: 0,
      rejectedThatWrote: 3,
      databaseUnchanged: true,
      routes: 48,
      routesExercised: 48,
      seed: 42,
      seconds: 100,
    }),
    rec("fuzz", "postgres", "hostile-input", {
      runs: 2_000,
      tried: 2_000,
      refusedByClient: 0,
      fiveXx: 0,
      violations: 0,
      rejectedThatWrote: 0,
      databaseUnchanged: true,
      routes: 48,
      routesExercised: 48,
      seed: 42,
      seconds: 50,
    }),
    ...["pglite", "postgres"].flatMap((backend) => [
      rec("access-matrix", backend, "cells", {
        expectedStatusCells: 880,
        statusCells: 880,
        comparisonCells: 79,
        cells: 959,
        routes: 48,
        callers: 11,
        wrong: 0,
        fiveXx: 0,
        leaks: 0,
      }),
      rec("access-matrix", backend, "aggregates", { expected: 51, compared: 51, changed: 0 }),
      rec("abuse", backend, "limiter-in-process", {
        requests: 10_000,
        expectedPassed: 50,
        passed: 50,
        limited: 9_950,
        other: 0,
        fiveXx: 0,
        badHeaders: 0,
      }),
    ]),
    ...["redis-killed", "postgres-stopped"].map((check) =>
      rec("faults", "own-postgres+redis", check, {
        requests: 1_000,
        reads: 800,
        searches: 100,
        publishes: 100,
        readsDuringFault: 300,
        readsFailed: 0,
        failed: check === "postgres-stopped" ? 40 : 0,
        failedBeforeOrAfterFault: 0,
        documented503: check === "postgres-stopped" ? 40 : 0,
        fiveXxOther: 0,
        acknowledged: 60,
        present: 60,
        mismatched: 0,
        processAlive: true,
        unhandled: 0,
        unavailableChecked: 40,
        unavailableWithoutRetryAfterOrProblemJson: 0,
      }),
    ),
  ];
}

function report(records = passingRecords()): ReliabilityReport {
  return {
    startedAt: "2026-11-25T18:00:00.000Z",
    wallSeconds: 600,
    command: "BENCH_DATABASE_URL=postgres://***@127.0.0.1:5432/postgres bun run bench:reliability",
    machine: [["CPU", "test"]],
    backends: ["pglite", "postgres"],
    redis: false,
    description: "test run",
    tests: { exitCode: 0, pass: 20, fail: 0, skip: 1 },
    records,
    soak: soakHeadline(SOAK),
  };
}

const headlineRow = (section: string, figure: string) =>
  section.split("\n").find((line) => line.startsWith(`| ${figure}`)) ?? "";

describe("bench/reliability: figures against targets", () => {
  test("a run whose figures meet every target says so, with the totals summed over backends", () => {
    const { allMet, missing, headline } = evaluate(report());
    expect(missing).toEqual([]);
    expect(headline.filter((l) => l.status === "missed")).toEqual([]);
    expect(allMet).toBe(true);
    const section = renderReliabilitySection(report());
    expect(headlineRow(section, "fuzz cases tried in this run")).toContain(
      "11,990 (pglite 9,990, postgres 2,000)",
    );
    expect(headlineRow(section, "leak matrix cells checked")).toContain("1,918 (pglite 959, postgres 959)");
    expect(headlineRow(section, "leak matrix cells checked")).toContain(
      "1,760 route x caller x target cells of 1,760",
    );
    expect(headlineRow(section, "writes acknowledged vs present")).toContain("120 acknowledged, 120 present");
    expect(headlineRow(section, "RSS slope over the soak")).toContain("+4.7 MiB/h");
    expect(section).toContain("Targets: every one met");
    expect(section).not.toContain("- Failed:");
  });

  test("a 5xx, a lost write, a skipped cell or a leaky limiter is missed, not met", () => {
    const broken = passingRecords();
    broken.find((r) => r.suite === "fuzz")!.figures.fiveXx = 1;
    broken.find((r) => r.check === "postgres-stopped")!.figures.present = 59;
    broken.find((r) => r.check === "cells")!.figures.statusCells = 879;
    broken.find((r) => r.check === "limiter-in-process")!.figures.passed = 51;
    const { allMet } = evaluate(report(broken));
    expect(allMet).toBe(false);
    const section = renderReliabilitySection(report(broken));
    for (const figure of [
      "5xx outside the documented 503s",
      "writes acknowledged vs present",
      "fuzz 5xx found",
      "leak matrix cells checked",
      "limiter: requests passed",
    ])
      expect(headlineRow(section, figure)).toEndWith("| missed |");
    expect(section).toContain("Targets: SOME MISSED");
  });

  test("fewer than 10,000 fuzz cases in a run misses the target", () => {
    const few = passingRecords().filter((r) => !(r.suite === "fuzz" && r.backend === "postgres"));
    few.find((r) => r.suite === "fuzz")!.figures.tried = 9_999;
    expect(headlineRow(renderReliabilitySection(report(few)), "fuzz cases tried")).toEndWith("| missed |");
  });

  test("a suite that left no figures is named and fails the run", () => {
    const without = passingRecords().filter((r) => r.suite !== "faults");
    const { missing, allMet } = evaluate(report(without));
    expect(missing).toEqual([
      "faults [own-postgres+redis] redis-killed",
      "faults [own-postgres+redis] postgres-stopped",
    ]);
    expect(allMet).toBe(false);
    expect(renderReliabilitySection(report(without))).toContain("No figures from: faults");
  });

  test("with Redis the shared-limiter floods are expected too", () => {
    expect(expectedChecks(["pglite"], true)).toContainEqual([
      "abuse",
      "pglite",
      "limiter-redis-two-instances",
    ]);
    expect(expectedChecks(["pglite"], false)).not.toContainEqual([
      "abuse",
      "pglite",
      "limiter-redis-two-instances",
    ]);
  });

  test("the soak's headline rows are read from its section; no soak section is a missed RSS slope", () => {
    const soak = soakHeadline(`before\n\n${SOAK}\n\nafter`);
    expect(soak?.run).toBe("2026-11-25T16:18:24.380Z");
    expect(soak?.rows.map((r) => r.figure)).toEqual([
      "requests served",
      "5xx responses",
      "writes acknowledged vs present (publishes)",
      "RSS slope over the second half (least squares)",
    ]);
    expect(soakHeadline("# Benchmarks\n")).toBeUndefined();
    const section = renderReliabilitySection({ ...report(), soak: undefined });
    expect(headlineRow(section, "RSS slope over the soak")).toEndWith("| missed |");
  });

  test("bun test's summary is read from its last lines", () => {
    expect(
      testSummary(
        " 1 pass\n(fail) suite > x [12.50ms]\n 25 pass\n 2 skip\n 1 fail\n 1 error\n(fail) suite > x [12.50ms]\n 40 expect() calls\n",
      ),
    ).toEqual({ pass: 25, fail: 1, skip: 2, errors: 1, failed: ["suite > x"] });
  });

  test("a failing test is named even when every figure meets its target", () => {
    const failing = {
      ...report(),
      tests: { exitCode: 1, pass: 19, fail: 1, skip: 1, failed: ["faults > driver"] },
    };
    const section = renderReliabilitySection(failing);
    expect(section).toContain("exit 1. Targets: every one met");
    expect(section).toContain("- Failed: faults > driver");
  });
});

describe("bench/reliability: the section in BENCHMARKS.md", () => {
  const dir = mkdtempSync(join(tmpdir(), "a2a-bench-reliability-test-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("is added once, replaced on the next run, and every other section is kept byte for byte", () => {
    const path = join(dir, "BENCHMARKS.md");
    const other = "<!-- bench:begin federation -->\n## Federation\n\nfigures\n<!-- bench:end federation -->";
    writeFileSync(path, `# Benchmarks\n\n${other}\n\n${SOAK}\n`);
    writeSection(path, SECTION_KEY, renderReliabilitySection(report()));
    const first = readFileSync(path, "utf8");
    expect(first).toContain(other);
    expect(first).toContain(SOAK);
    expect(first.split("<!-- bench:begin reliability -->").length).toBe(2);

    const rerun = { ...report(), startedAt: "2026-11-26T09:00:00.000Z" };
    writeSection(path, SECTION_KEY, renderReliabilitySection(rerun));
    const second = readFileSync(path, "utf8");
    expect(second.split("<!-- bench:begin reliability -->").length).toBe(2);
    expect(second.split("<!-- bench:end reliability -->").length).toBe(2);
    expect(second).toContain("Run 2026-11-26T09:00:00.000Z");
    expect(second).not.toContain("Run 2026-11-25T18:00:00.000Z");
    expect(second).toContain(other);
    expect(second).toContain(SOAK);
  });
});

describe("test/support/figures", () => {
  const dir = mkdtempSync(join(tmpdir(), "a2a-figures-test-"));
  const saved = process.env.RELIABILITY_FIGURES_DIR;
  afterAll(() => {
    if (saved === undefined) delete process.env.RELIABILITY_FIGURES_DIR;
    else process.env.RELIABILITY_FIGURES_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  test("writes nothing without RELIABILITY_FIGURES_DIR, and what the bench reads back with it", () => {
    delete process.env.RELIABILITY_FIGURES_DIR;
    recordFigures(rec("fuzz", "pglite", "hostile-input", { tried: 1 }));
    expect(readFigures(dir)).toEqual([]);
    process.env.RELIABILITY_FIGURES_DIR = dir;
    recordFigures(rec("faults", "own-postgres+redis", "redis-killed", { acknowledged: 3, present: 3 }));
    expect(readFigures(dir)).toMatchObject([
      { suite: "faults", backend: "own-postgres+redis", check: "redis-killed", figures: { acknowledged: 3 } },
    ]);
  });
});
