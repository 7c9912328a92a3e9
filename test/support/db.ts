import postgres from "postgres";
import { type Database, openDatabase } from "../../src/infra/db/client";

/**
 * The database backends every route suite runs on: embedded PGlite always, real Postgres when
 * TEST_DATABASE_URL is set. CI sets it, and an unreachable server then fails the suites rather than
 * silently skipping them.
 */
export type BackendName = "pglite" | "postgres";
export const BACKENDS: BackendName[] = process.env.TEST_DATABASE_URL ? ["pglite", "postgres"] : ["pglite"];

export type TestDatabase = { database: Database; url: string | undefined; drop(): Promise<void> };

let counter = 0;

/**
 * A fresh, migrated database of its own for one suite: a new PGlite, or a new Postgres database.
 * `migrate: false` leaves it empty (for tests that apply migrations themselves).
 */
export async function createTestDatabase(
  backend: BackendName,
  options: { dataDir?: string; migrate?: boolean } = {},
): Promise<TestDatabase> {
  const migrate = options.migrate ?? true;
  if (backend === "pglite") {
    const database = await openDatabase({ dataDir: options.dataDir ?? "memory://", poolMax: 1 });
    if (migrate) await database.migrate();
    return { database, url: undefined, drop: () => database.close() };
  }
  const adminUrl = process.env.TEST_DATABASE_URL;
  if (!adminUrl) throw new Error("TEST_DATABASE_URL is not set");
  const name = `a2a_test_${process.pid}_${Date.now().toString(36)}_${counter++}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end({ timeout: 5 });
  }
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const database = await openDatabase({ url: url.toString(), dataDir: "unused", poolMax: 10 });
  if (migrate) await database.migrate();
  return {
    database,
    url: url.toString(),
    drop: async () => {
      await database.close();
      const cleanup = postgres(adminUrl, { max: 1, onnotice: () => {} });
      try {
        await cleanup.unsafe(`drop database if exists "${name}" with (force)`);
      } finally {
        await cleanup.end({ timeout: 5 });
      }
    },
  };
}
