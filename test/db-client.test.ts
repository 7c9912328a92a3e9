import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { eq, sql } from "drizzle-orm";
import type postgres from "postgres";
import { type Database, openDatabase } from "../src/infra/db/client";
import { clients } from "../src/infra/db/schema";
import { createTestDatabase, type TestDatabase } from "./support/db";

/** The Postgres pool's statement handling; PGlite has no pool and no protocol round trips to save. */
describe.skipIf(!process.env.TEST_DATABASE_URL)("Postgres client [postgres]", () => {
  let testDb: TestDatabase;
  let single: Database;
  beforeAll(async () => {
    testDb = await createTestDatabase("postgres");
    // One connection, so the statements seen below are those of the session that ran the queries.
    single = await openDatabase({ url: testDb.url!, dataDir: "unused", poolMax: 1 });
  });
  afterAll(async () => {
    await single?.close();
    await testDb?.drop();
  });

  const preparedLike = async (fragment: string) =>
    (await single.rows<{ statement: string }>(sql`select statement from pg_prepared_statements`)).filter(
      (row) => row.statement.includes(fragment),
    );

  test("a drizzle query with parameters is prepared once per connection and reused", async () => {
    for (const clientId of ["nobody-1", "nobody-2", "nobody-3"])
      expect(await single.db.select().from(clients).where(eq(clients.clientId, clientId))).toEqual([]);
    const statements = await preparedLike(`where "clients"."client_id" = $1`);
    expect(statements).toHaveLength(1);
  });

  test("each execution is still planned for its own parameters", async () => {
    const [row] = await single.rows<{ plan_cache_mode: string }>(sql`show plan_cache_mode`);
    expect(row?.plan_cache_mode).toBe("force_custom_plan");
  });

  test("queries without parameters keep the simple protocol: several statements in one text", async () => {
    const driver = (single.db as unknown as { $client: postgres.Sql }).$client;
    const results = (await driver.unsafe("select 1 as a; select 2 as b")) as unknown as Array<unknown[]>;
    expect(results).toHaveLength(2);
    // The two-argument form (text, options) is understood too.
    const unsafe = driver.unsafe as unknown as (text: string, options: object) => Promise<unknown[]>;
    expect((await unsafe("select 3 as c", { prepare: false }))[0]).toEqual({ c: 3 });
  });
});
