import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/**
 * Figures a reliability suite counted (issue 8), for `bun run bench:reliability` (bench/reliability.ts),
 * which reads them back into BENCHMARKS.md. Without RELIABILITY_FIGURES_DIR this does nothing, so plain
 * `bun test` runs are unaffected. Suites call it before their assertions: a failing run still leaves the
 * figures that made it fail, and the report shows them as missed instead of showing nothing.
 */
export type FigureRecord = {
  suite: "fuzz" | "access-matrix" | "faults" | "abuse";
  /** pglite, postgres, or what the suite ran against when it picks its own processes. */
  backend: string;
  check: string;
  figures: Record<string, number | string | boolean>;
};

export const FIGURES_DIR_ENV = "RELIABILITY_FIGURES_DIR";

export function recordFigures(record: FigureRecord) {
  const dir = process.env[FIGURES_DIR_ENV];
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  const name = `${record.suite}.${record.backend}.${record.check}`.replace(/[^A-Za-z0-9_.+-]/g, "_");
  writeFileSync(
    join(dir, `${name}.json`),
    `${JSON.stringify({ ...record, at: new Date().toISOString() })}\n`,
  );
}

/** Sum of the answers of 5xx classes ("503 DEPENDENCY_UNAVAILABLE", "500 ...") in a class -> count map. */
export function count5xx(classes: Record<string, number>, except: string[] = []): number {
  return Object.entries(classes)
    .filter(([cls]) => /^5\d\d/.test(cls) && !except.includes(cls))
    .reduce((sum, [, n]) => sum + n, 0);
}

export function total(classes: Record<string, number>): number {
  return Object.values(classes).reduce((sum, n) => sum + n, 0);
}
