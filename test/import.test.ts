import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createRegistryClient, RegistryError } from "../src/client";
import { exportAgents } from "../src/import/export";
import { ALREADY_PRESENT, formatImportSummary, type ImportSummary, importAgents } from "../src/import/index";
import { detectKind, SourceError } from "../src/import/sources";
import { cardFiles, cardWith, FIXTURES, fixtureText } from "./support/compat-cards";
import { startA2ARegStub } from "./support/compat-stub";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase } from "./support/db";

const ROOT = resolve(import.meta.dir, "..");

type Record_ = {
  id: string;
  url: string;
  visibility: string;
  status: string;
  statusMessage: string | null;
  owner: string;
};

/** A fetch that counts the card reads it lets through. */
function countingFetch() {
  const paths: string[] = [];
  return {
    paths,
    cardReads: () => paths.filter((p) => p.endsWith("/card")).length,
    fetch: (request: Request) => {
      paths.push(new URL(request.url).pathname);
      return fetch(request);
    },
  };
}

/** Every live agent of an app, as its admin sees them. */
async function allAgents(t: TestApp): Promise<Record_[]> {
  const admin = await t.client(["admin"], "lister");
  const client = createRegistryClient({
    baseUrl: "http://localhost",
    token: admin.token,
    fetch: (r) => t.app.handle(r),
  });
  const items: Record_[] = [];
  for await (const page of client.agents.pages({ limit: 100 })) items.push(...(page.items as Record_[]));
  return items;
}

const reasonsOf = (summary: ImportSummary) => summary.results.filter((r) => r.reason).map((r) => r.reason!);

for (const backend of BACKENDS) {
  describe(`import from a live registry of this kind over HTTP [${backend}]`, () => {
    let source: TestApp;
    let target: TestApp;
    let sourceUrl: string;
    let owner: { clientId: string; token: string };
    let reader: { clientId: string; token: string };
    let writer: { clientId: string; token: string };
    const texts = new Map<string, string>(); // url -> card text as published on the source
    const ids: Record<string, string> = {};

    const publishOnSource = async (
      card: Record<string, unknown>,
      visibility = "public",
      token = writer.token,
    ) => {
      // The card's own text, spaced and ordered as its publisher wrote it: the import must keep the bytes.
      const text = JSON.stringify(card, null, 1);
      const res = await source.request("/v1/agents", {
        method: "POST",
        body: `{"visibility": "${visibility}", "card": ${text}}`,
        headers: { "content-type": "application/json" },
        token,
      });
      if (res.status !== 201) throw new Error(`source publish ${res.status}: ${await res.text()}`);
      texts.set(card.url as string, text);
      return (await json<{ id: string }>(res)).id;
    };

    beforeAll(async () => {
      source = await createTestApp(backend);
      target = await createTestApp(backend);
      source.app.listen({ port: 0, hostname: "127.0.0.1" });
      sourceUrl = `http://127.0.0.1:${source.app.server!.port}`;
      const other = await source.client(["agents:write"], "source other");
      [writer, reader, owner] = await Promise.all([
        source.client(["agents:write"], "source writer"),
        source.client(["agents:read"], "source reader (import token)"),
        target.client(["agents:write"], "target importer"),
      ]);
      for (let i = 0; i < 4; i++) ids[`public${i}`] = await publishOnSource(cardWith("Source Agent"));
      ids.entitled = await publishOnSource(cardWith("Entitled Private"), "private");
      ids.hidden = await publishOnSource(cardWith("Hidden Private"), "private", other.token);
      ids.deprecated = await publishOnSource(cardWith("Old Agent"));
      ids.deleted = await publishOnSource(cardWith("Gone Agent"));
      const granted = await source.request(`/v1/agents/${ids.entitled}/entitlements/${reader.clientId}`, {
        method: "PUT",
        token: writer.token,
      });
      expect(granted.status).toBe(204);
      expect(
        (
          await source.request(`/v1/agents/${ids.deprecated}`, {
            method: "PATCH",
            json: { status: "deprecated", statusMessage: "use Source Agent" },
            token: writer.token,
          })
        ).status,
      ).toBe(200);
      expect(
        (await source.request(`/v1/agents/${ids.deleted}`, { method: "DELETE", token: writer.token })).status,
      ).toBe(204);
    });
    afterAll(async () => {
      await source.close();
      await target.close();
    });

    const run = (
      options: { token?: string; dryRun?: boolean; fetch?: (r: Request) => Promise<Response> } = {},
    ) =>
      importAgents(
        { agents: target.app.services.agents, database: target.db.database, owner: owner.clientId },
        { from: sourceUrl, token: reader.token, ...options },
      );

    test("detects the kind: a registry of this kind (with or without a token)", async () => {
      expect(await detectKind({ from: sourceUrl, token: reader.token })).toBe("registry");
      expect(await detectKind({ from: sourceUrl })).toBe("registry");
    });

    test("dry run: counts what would be imported and writes nothing", async () => {
      const summary = await run({ dryRun: true });
      expect(summary).toMatchObject({ kind: "registry", dryRun: true, total: 6, imported: 6, failed: 0 });
      expect(await allAgents(target)).toHaveLength(0);
      expect(formatImportSummary(summary).join("\n")).toContain("would be imported: 6");
    });

    test("happy: every agent the token may see, byte for byte, owned by the importer, visibility and status kept", async () => {
      const progress: [number, number][] = [];
      const summary = await importAgents(
        { agents: target.app.services.agents, database: target.db.database, owner: owner.clientId },
        { from: sourceUrl, token: reader.token, progress: (done, total) => progress.push([done, total]) },
      );
      expect(summary).toMatchObject({
        kind: "registry",
        total: 6,
        imported: 6,
        updated: 0,
        skipped: 0,
        failed: 0,
      });
      expect(progress.at(0)).toEqual([0, 6]);
      expect(progress.at(-1)).toEqual([6, 6]);
      const agents = await allAgents(target);
      expect(agents).toHaveLength(6);
      const byUrl = new Map(agents.map((a) => [a.url, a]));
      const sourceAgents = await Promise.all(
        Object.entries(ids).map(async ([key, id]) => ({
          key,
          record: await json<Record_>(
            await source.request(`/v1/agents/${id}`, { token: writer.token }),
          ).catch(() => null),
        })),
      );
      for (const { key, record } of sourceAgents) {
        if (key === "deleted" || key === "hidden") continue;
        const imported = byUrl.get(record!.url)!;
        expect(imported, key).toBeDefined();
        expect(imported.owner).toBe(owner.clientId);
        expect(imported.visibility).toBe(record!.visibility);
        expect(imported.status).toBe(record!.status);
        const card = await target.request(`/v1/agents/${imported.id}/card`, { token: owner.token });
        expect(await card.text()).toBe(texts.get(record!.url)!);
      }
      expect(byUrl.get(sourceAgents.find((a) => a.key === "deprecated")!.record!.url)!.statusMessage).toBe(
        "use Source Agent",
      );
      // the entitled private agent came along private; the other client's private one never reached the token
      const urls = [...byUrl.keys()];
      expect(urls.some((u) => u.includes("hidden-private"))).toBe(false);
      expect(urls.some((u) => u.includes("gone-agent"))).toBe(false);
      // published through the agents service: searchable at once, audited
      const found = await json<{ total: number }>(
        await target.request("/v1/search?q=Source%20Agent&consistent=true"),
      );
      expect(found.total).toBe(4);
      const audit = await target.client(["admin"], "auditor");
      const log = await json<{ items: { actor: string; action: string }[] }>(
        await target.request(`/v1/audit?action=agent.created&actor=${owner.clientId}&limit=50`, {
          token: audit.token,
        }),
      );
      expect(log.items).toHaveLength(6);
    });

    test("idempotent: a second run imports nothing and reads no card", async () => {
      const counter = countingFetch();
      const summary = await run({ fetch: counter.fetch });
      expect(summary).toMatchObject({ total: 6, imported: 0, updated: 0, skipped: 6, failed: 0 });
      expect(new Set(reasonsOf(summary))).toEqual(new Set([ALREADY_PRESENT]));
      expect(counter.cardReads()).toBe(0);
      expect(counter.paths.every((p) => p === "/v1/changes")).toBe(true);
      expect(await allAgents(target)).toHaveLength(6);
      expect(formatImportSummary(summary).join("\n")).toContain(`skipped 6: ${ALREADY_PRESENT}`);
    });

    test("incremental: a new agent and a new version at the source arrive on the next run", async () => {
      const fresh = cardWith("Late Agent");
      await publishOnSource(fresh);
      const changed = { ...JSON.parse(texts.get([...texts.keys()][0]!)!), version: "9.0.0" };
      const res = await source.request(`/v1/agents/${ids.public0}`, {
        method: "PUT",
        json: { card: changed },
        token: writer.token,
      });
      expect(res.status).toBe(200);
      texts.set(changed.url, JSON.stringify(changed));
      const summary = await run();
      expect(summary).toMatchObject({ total: 7, imported: 1, updated: 1, skipped: 5, failed: 0 });
      const mine = (await allAgents(target)).find((a) => a.url === changed.url)!;
      const versions = await json<{ items: { version: string }[] }>(
        await target.request(`/v1/agents/${mine.id}/versions`),
      );
      expect(versions.items.map((v) => v.version)).toEqual(["9.0.0", "1.4.2"]);
    });

    test("without a token: the source's public agents only, and the summary says so", async () => {
      const summary = await run({ token: undefined, dryRun: true });
      expect(summary.note).toContain("public");
      expect(summary.total).toBe(6); // 4 + late + deprecated; no private ones
      expect(summary.imported + summary.updated).toBe(0);
    });

    test("errors: a token the source refuses fails the run with the source's answer", async () => {
      const error = await run({ token: "not-a-token" }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).status).toBe(401);
    });

    test("security: another client's agent holding the url is not touched (skipped as a conflict)", async () => {
      const taken = cardWith("Taken Url");
      await publishOnSource(taken);
      const squatter = await target.client(["agents:write"], "squatter");
      const own = { ...taken, description: "someone else's card at that url" };
      const res = await target.request("/v1/agents", {
        method: "POST",
        json: { card: own },
        token: squatter.token,
      });
      expect(res.status).toBe(201);
      const summary = await run();
      const result = summary.results.find((r) => r.reason?.startsWith("conflict"))!;
      expect(result.reason).toContain("another client");
      const still = (await allAgents(target)).find((a) => a.url === taken.url)!;
      expect(still.owner).toBe(squatter.clientId);
    });
  });

  describe(`import from a directory of cards [${backend}]`, () => {
    let target: TestApp;
    let owner: { clientId: string; token: string };
    let scratch: string;
    const run = (from: string, dryRun = false) =>
      importAgents(
        { agents: target.app.services.agents, database: target.db.database, owner: owner.clientId },
        { from, dryRun },
      );

    beforeAll(async () => {
      target = await createTestApp(backend);
      owner = await target.client(["agents:write"], "dir importer");
      scratch = mkdtempSync(join(tmpdir(), "a2a-import-"));
    });
    afterAll(async () => {
      await target.close();
      rmSync(scratch, { recursive: true, force: true });
    });

    test("happy: the real-world and valid fixtures, twice: the second run imports nothing new", async () => {
      const real = cardFiles("real");
      const first = await run(join(FIXTURES, "real"));
      expect(first.kind).toBe("dir");
      expect(first.total).toBe(real.length);
      // Two pairs of cards share a url and a version with different content: the second of each is refused.
      expect(first).toMatchObject({ imported: real.length - 2, updated: 0, skipped: 2, failed: 0 });
      for (const reason of reasonsOf(first)) expect(reason).toMatch(/^conflict: Version .* already exists/);
      const valid = await run(join(FIXTURES, "valid"));
      expect(valid).toMatchObject({ total: 3, imported: 3, skipped: 0, failed: 0 });

      const again = await run(join(FIXTURES, "real"));
      expect(again).toMatchObject({ imported: 0, updated: 0, skipped: real.length, failed: 0 });
      expect(reasonsOf(again).filter((r) => r === ALREADY_PRESENT)).toHaveLength(real.length - 2);
      const validAgain = await run(join(FIXTURES, "valid"));
      expect(validAgain).toMatchObject({ imported: 0, updated: 0, skipped: 3, failed: 0 });

      // each stored card is the file's bytes
      const agents = await allAgents(target);
      expect(agents).toHaveLength(real.length - 2 + 3);
      for (const name of cardFiles("valid")) {
        const text = fixtureText("valid", name);
        const url = (JSON.parse(text).supportedInterfaces?.[0]?.url ?? JSON.parse(text).url) as string;
        const agent = agents.find((a) => a.url === url)!;
        expect(await (await target.request(`/v1/agents/${agent.id}/card`)).text()).toBe(text);
      }
    });

    test("skips what is not a card, with the reason; dry run writes nothing", async () => {
      const dir = join(scratch, "mixed");
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(dir);
      writeFileSync(join(dir, "broken.json"), "{ not json");
      writeFileSync(join(dir, "missing-skills.json"), fixtureText("invalid", "missing-skills.json"));
      writeFileSync(join(dir, "notes.txt"), "ignored: not a .json file");
      writeFileSync(join(dir, "good.json"), JSON.stringify(cardWith("Dir Agent")));
      const before = (await allAgents(target)).length;
      const dry = await run(dir, true);
      expect(dry).toMatchObject({ total: 3, imported: 1, skipped: 2, failed: 0, dryRun: true });
      expect((await allAgents(target)).length).toBe(before);
      const summary = await run(dir);
      expect(summary).toMatchObject({ total: 3, imported: 1, skipped: 2, failed: 0 });
      const byRef = new Map(summary.results.map((r) => [r.ref, r]));
      expect(byRef.get("broken.json")!.reason).toStartWith("invalid JSON:");
      expect(byRef.get("missing-skills.json")!.reason).toStartWith("invalid card:");
      expect(byRef.get("missing-skills.json")!.reason).toContain("skills");
      const lines = formatImportSummary(summary).join("\n");
      expect(lines).toContain("skipped broken.json: invalid JSON");
      expect(lines).toContain("skipped missing-skills.json: invalid card");
    });

    test("export then import into a fresh registry: same cards byte for byte, private stays private", async () => {
      const privateCard = cardWith("Private Export");
      const res = await target.request("/v1/agents", {
        method: "POST",
        json: { card: privateCard, visibility: "private" },
        token: owner.token,
      });
      expect(res.status).toBe(201);
      const out = join(scratch, "export");
      const progress: number[] = [];
      const exported = await exportAgents(
        { config: target.config, database: target.db.database },
        { to: out, progress: (done) => progress.push(done) },
      );
      const agents = await allAgents(target);
      expect(exported.count).toBe(agents.length);
      expect(exported.private).toBe(1);
      expect(progress.at(-1)).toBe(agents.length);
      const manifest = JSON.parse(readFileSync(join(out, "index.json"), "utf8")) as {
        format: string;
        count: number;
        agents: { id: string; file: string; visibility: string; cardHash: string }[];
      };
      expect(manifest).toMatchObject({ format: "a2a-registry-export", count: agents.length });
      expect(readdirSync(out).sort()).toEqual(["index.json", ...manifest.agents.map((a) => a.file)].sort());
      for (const entry of manifest.agents) {
        const served = await target.request(`/v1/agents/${entry.id}/card`, { token: owner.token });
        expect(readFileSync(join(out, entry.file), "utf8")).toBe(await served.text());
      }
      // exporting again into the same directory replaces the previous export
      expect(
        (await exportAgents({ config: target.config, database: target.db.database }, { to: out })).count,
      ).toBe(agents.length);
      // a directory holding anything else is refused
      writeFileSync(join(out, "mine.txt"), "x");
      await expect(
        exportAgents({ config: target.config, database: target.db.database }, { to: out }),
      ).rejects.toThrow("not part of the previous export");
      rmSync(join(out, "mine.txt"));

      const fresh = await createTestApp(backend, { db: await createTestDatabase(backend) });
      try {
        const freshOwner = await fresh.client(["agents:write"], "fresh importer");
        const summary = await importAgents(
          { agents: fresh.app.services.agents, database: fresh.db.database, owner: freshOwner.clientId },
          { from: out },
        );
        expect(summary).toMatchObject({
          kind: "dir",
          total: agents.length,
          imported: agents.length,
          failed: 0,
        });
        const copies = await allAgents(fresh);
        expect(copies.find((a) => a.url === privateCard.url)!.visibility).toBe("private");
        for (const copy of copies) {
          const original = agents.find((a) => a.url === copy.url)!;
          const [a, b] = await Promise.all([
            target.request(`/v1/agents/${original.id}/card`, { token: owner.token }).then((r) => r.text()),
            fresh.request(`/v1/agents/${copy.id}/card`, { token: freshOwner.token }).then((r) => r.text()),
          ]);
          expect(b).toBe(a);
        }
        const again = await importAgents(
          { agents: fresh.app.services.agents, database: fresh.db.database, owner: freshOwner.clientId },
          { from: out },
        );
        expect(again).toMatchObject({ imported: 0, skipped: agents.length });
      } finally {
        await fresh.close();
        await fresh.db.drop();
      }
    });

    test("errors: a path that is not a directory", async () => {
      await expect(run(join(scratch, "nope"))).rejects.toBeInstanceOf(SourceError);
    });
  });

  describe(`import from the older registry's API (a stub of its documented shapes) [${backend}]`, () => {
    let target: TestApp;
    let owner: { clientId: string };
    const token = "a2areg-token";
    const valid = Array.from({ length: 102 }, () => JSON.stringify(cardWith("Legacy Agent")));
    const legacy = fixtureText("real", "samples-air-ticketing.json"); // 0.2 card, no protocolVersion
    const stub = startA2ARegStub(
      [
        ...valid.map((text) => ({ text })),
        { text: legacy },
        { text: fixtureText("invalid", "missing-skills.json") },
        { text: JSON.stringify(cardWith("Broken Upstream")), failWith: 500 },
      ],
      { token },
    );
    const run = (options: { token?: string; dryRun?: boolean } = { token }) =>
      importAgents(
        { agents: target.app.services.agents, database: target.db.database, owner: owner.clientId },
        { from: stub.url, ...options },
      );

    beforeAll(async () => {
      target = await createTestApp(backend);
      owner = await target.client(["agents:write"], "legacy importer");
    });
    afterAll(async () => {
      stub.stop();
      await target.close();
    });

    test("detects the older registry", async () => {
      expect(await detectKind({ from: stub.url })).toBe("a2areg");
    });

    test("happy: pages /agents/public (top/skip) and reads each /agents/{id}/card with the token; twice", async () => {
      stub.requests.length = 0;
      const first = await run();
      expect(first.kind).toBe("a2areg");
      expect(first).toMatchObject({ total: 105, imported: 103, skipped: 1, failed: 1 });
      // detection first (no /v1/changes there, then one /agents/public), then pages of 100 until a short one
      expect(stub.requests.filter((p) => p.startsWith("/agents/public"))).toEqual([
        "/agents/public?top=1",
        "/agents/public?top=100&skip=0",
        "/agents/public?top=100&skip=100",
      ]);
      const skipped = first.results.find((r) => r.outcome === "skipped")!;
      expect(skipped.reason).toStartWith("invalid card:");
      const failed = first.results.find((r) => r.outcome === "failed")!;
      expect(failed.reason).toContain("500");
      const agents = await allAgents(target);
      expect(agents).toHaveLength(103);
      const air = agents.find((a) => a.url === JSON.parse(legacy).url)!;
      expect(await (await target.request(`/v1/agents/${air.id}/card`)).text()).toBe(legacy);

      const second = await run();
      expect(second).toMatchObject({ total: 105, imported: 0, updated: 0, skipped: 104, failed: 1 });
      expect(reasonsOf(second).filter((r) => r === ALREADY_PRESENT)).toHaveLength(103);
      expect(await allAgents(target)).toHaveLength(103);
    });

    test("errors: without the token the older registry refuses every card: each is a failure with its reason", async () => {
      const summary = await run({ token: undefined, dryRun: true });
      expect(summary.failed).toBe(105);
      expect(summary.results[0]!.reason).toContain("401");
    });
  });
}

describe("source detection", () => {
  test("a server that is neither registry -> SourceError naming --kind", async () => {
    const nothing = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () => new Response("no", { status: 404 }),
    });
    try {
      const error = await detectKind({ from: `http://127.0.0.1:${nothing.port}` }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(SourceError);
      expect((error as Error).message).toContain("--kind");
    } finally {
      nothing.stop(true);
    }
  });

  test("an unreachable URL -> SourceError", async () => {
    const error = await detectKind({ from: "http://127.0.0.1:9" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(SourceError);
  });

  test("anything not http(s) is a directory", async () => {
    expect(await detectKind({ from: ROOT })).toBe("dir");
  });
});

// ---------------------------------------------------------------------------------------------------

type CliResult = { code: number; stdout: string; stderr: string };

/** Runs `bun src/cli.ts ...args` in a child process over an embedded database in DATA_DIR. */
async function cli(args: string[], dataDir: string): Promise<CliResult> {
  const proc = Bun.spawn(["bun", "src/cli.ts", ...args], {
    cwd: ROOT,
    env: {
      ...process.env,
      DATABASE_URL: "",
      DATA_DIR: dataDir,
      LOG_LEVEL: "warn",
      REDIS_URL: "",
      ELASTICSEARCH_URL: "",
    },
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

/**
 * Each test spawns CLI processes that open the embedded database and build the app's services: on a
 * loaded machine that takes a while, so these tests get a generous time limit (never an assertion).
 */
const SPAWNS = 240_000;

describe("bun run cli import / export [pglite in DATA_DIR]", () => {
  let source: TestApp;
  let sourceUrl: string;
  let reader: { token: string };
  let dataDir: string;
  let scratch: string;
  const texts: string[] = [];

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "a2a-cli-import-"));
    scratch = mkdtempSync(join(tmpdir(), "a2a-cli-export-"));
    source = await createTestApp("pglite");
    source.app.listen({ port: 0, hostname: "127.0.0.1" });
    sourceUrl = `http://127.0.0.1:${source.app.server!.port}`;
    const writer = await source.client(["agents:write"], "cli source writer");
    const read = await source.client(["agents:read"], "cli source reader");
    reader = read;
    for (const visibility of ["public", "public", "public", "private"]) {
      const text = JSON.stringify(cardWith("Cli Agent"), null, 2);
      const res = await source.request("/v1/agents", {
        method: "POST",
        body: `{"visibility":"${visibility}","card":${text}}`,
        headers: { "content-type": "application/json" },
        token: writer.token,
      });
      const { id } = await json<{ id: string }>(res);
      if (visibility === "private")
        await source.request(`/v1/agents/${id}/entitlements/${read.clientId}`, {
          method: "PUT",
          token: writer.token,
        });
      texts.push(text);
    }
    // The embedded database is created and migrated once here, not inside the first timed test.
    const migrated = await cli(["migrate"], dataDir);
    expect(migrated.code, migrated.stdout + migrated.stderr).toBe(0);
  }, SPAWNS);
  afterAll(async () => {
    await source.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  test(
    "import over HTTP with a token: progress on stderr, a summary on stdout, an importer client created",
    async () => {
      const first = await cli(["import", "--from", sourceUrl, "--token", reader.token], dataDir);
      expect(first.code, first.stdout + first.stderr).toBe(0);
      expect(first.stdout).toMatch(/owner: created client cli_[0-9a-f]+ \(importer\)/);
      expect(first.stdout).toContain("source: registry");
      expect(first.stdout).toContain("imported: 4");
      expect(first.stdout).toContain("failed:   0");
      expect(first.stderr).toContain("100% 4/4 cards");
      expect(first.stdout + first.stderr).not.toContain(reader.token);
    },
    SPAWNS,
  );

  test(
    "a second run imports nothing new and reuses the importer client",
    async () => {
      const again = await cli(["import", "--from", sourceUrl, "--token", reader.token], dataDir);
      expect(again.code, again.stdout + again.stderr).toBe(0);
      expect(again.stdout).toContain("imported: 0");
      expect(again.stdout).toContain(`skipped 4: ${ALREADY_PRESENT}`);
      expect(again.stdout).not.toContain("created client");
      // clients list: id, state, scopes, name, created_at
      const importers = (await cli(["clients", "list"], dataDir)).stdout
        .split("\n")
        .map((line) => line.split("\t"))
        .filter((columns) => columns[3] === "importer");
      expect(importers).toHaveLength(1);
      expect(importers[0]![2]).toBe("agents:write");
      expect(again.stdout).toContain(`owner: ${importers[0]![0]}`);
    },
    SPAWNS,
  );

  test(
    "--dry-run from a directory writes nothing",
    async () => {
      const dry = await cli(["import", "--from", join(FIXTURES, "valid"), "--dry-run"], dataDir);
      expect(dry.code, dry.stdout + dry.stderr).toBe(0);
      expect(dry.stdout).toContain("would be imported: 3");
      expect(dry.stdout).toContain("dry run: nothing was written");
    },
    SPAWNS,
  );

  test(
    "export --to DIR writes every card (exact bytes) and index.json",
    async () => {
      const out = join(scratch, "out");
      const result = await cli(["export", "--to", out], dataDir);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).toContain("exported 4 agents (1 private)");
      const manifest = JSON.parse(readFileSync(join(out, "index.json"), "utf8")) as {
        agents: { file: string }[];
      };
      expect(manifest.agents).toHaveLength(4);
      const written = manifest.agents.map((a) => readFileSync(join(out, a.file), "utf8")).sort();
      expect(written).toEqual([...texts].sort());
    },
    SPAWNS,
  );

  test(
    "errors: usage mistakes exit 2 with the usage text",
    async () => {
      for (const args of [
        ["import"],
        ["import", "--from", sourceUrl, "--kind", "bogus"],
        ["export"],
        ["import", "--nope"],
      ]) {
        const result = await cli(args, dataDir);
        expect(result.code, args.join(" ")).toBe(2);
        expect(result.stdout).toContain("Usage:");
        expect(result.stdout + result.stderr).not.toContain("    at ");
      }
    },
    SPAWNS,
  );

  test(
    "errors: a missing directory, a refused token and an unknown owner say why",
    async () => {
      const missing = await cli(["import", "--from", join(scratch, "missing")], dataDir);
      expect(missing.code).toBe(1);
      expect(missing.stdout).toContain("is not a directory");
      const refused = await cli(["import", "--from", sourceUrl, "--token", "bad-token"], dataDir);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toContain("import failed");
      expect(refused.stdout).toContain("401");
      const unknownOwner = await cli(["import", "--from", sourceUrl, "--owner", "cli_nobody"], dataDir);
      expect(unknownOwner.code).toBe(2);
      expect(unknownOwner.stdout).toContain("no client cli_nobody");
    },
    SPAWNS,
  );

  test(
    "the help text lists import and export",
    async () => {
      const help = await cli(["help"], dataDir);
      expect(help.stdout).toContain("import --from URL|DIR");
      expect(help.stdout).toContain("export --to DIR");
    },
    SPAWNS,
  );
});
