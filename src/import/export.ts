/**
 * `cli export --to DIR`: every live agent (the CLI runs as the operator, so all of them, private ones
 * and federated copies included) as DIR/<id>.json holding the card's exact stored bytes, plus
 * DIR/index.json, a manifest of what each file is. `cli import --from DIR` reads both back: it keeps
 * visibility and status from the manifest and leaves federated copies to their origin registry.
 */
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { asc, isNull } from "drizzle-orm";
import type { Config } from "../config";
import type { Database } from "../infra/db/client";
import { agents } from "../infra/db/schema";

export const EXPORT_FORMAT = "a2a-registry-export";

export type ExportManifestEntry = {
  id: string;
  file: string;
  name: string;
  url: string;
  version: string;
  visibility: "public" | "private";
  status: "active" | "deprecated" | "deleted";
  statusMessage: string | null;
  cardHash: string;
  owner: string | null;
  source: { registry: string; originId: string; federated: boolean };
};

export type ExportManifest = {
  format: typeof EXPORT_FORMAT;
  version: 1;
  exportedAt: string;
  registry: { id: string; name: string; baseUrl: string };
  count: number;
  agents: ExportManifestEntry[];
};

export class ExportError extends Error {}

/** Refuses a directory holding anything but a previous export (whose files are then replaced). */
async function prepare(dir: string) {
  await mkdir(dir, { recursive: true });
  const names = await readdir(dir);
  if (names.length === 0) return;
  let previous: ExportManifest | undefined;
  try {
    previous = JSON.parse(await readFile(join(dir, "index.json"), "utf8")) as ExportManifest;
  } catch {}
  if (previous?.format !== EXPORT_FORMAT)
    throw new ExportError(
      `${dir} is not empty and holds no previous export (index.json); choose an empty directory`,
    );
  const ours = new Set(["index.json", ...previous.agents.map((a) => a.file)]);
  const foreign = names.filter((name) => !ours.has(name));
  if (foreign.length > 0)
    throw new ExportError(
      `${dir} holds files that are not part of the previous export: ${foreign.slice(0, 5).join(", ")}`,
    );
  for (const name of names) await rm(join(dir, name));
}

export async function exportAgents(
  deps: { config: Config; database: Database },
  options: { to: string; progress?: (done: number, total: number) => void },
) {
  const { config, database } = deps;
  const dir = resolve(options.to);
  await prepare(dir);
  const rows = await database.db
    .select({
      id: agents.id,
      name: agents.name,
      url: agents.url,
      version: agents.latestVersion,
      visibility: agents.visibility,
      status: agents.status,
      statusMessage: agents.statusMessage,
      cardHash: agents.cardHash,
      cardRaw: agents.cardRaw,
      owner: agents.owner,
      originRegistry: agents.originRegistry,
      originId: agents.originId,
    })
    .from(agents)
    .where(isNull(agents.deletedAt))
    .orderBy(asc(agents.seq));
  const progress = options.progress ?? (() => {});
  progress(0, rows.length);
  const entries: ExportManifestEntry[] = [];
  for (const [index, row] of rows.entries()) {
    const file = `${row.id}.json`;
    await writeFile(join(dir, file), row.cardRaw);
    entries.push({
      id: row.id,
      file,
      name: row.name,
      url: row.url,
      version: row.version,
      visibility: row.visibility,
      status: row.status,
      statusMessage: row.statusMessage,
      cardHash: row.cardHash,
      owner: row.owner,
      source: {
        registry: row.originRegistry ?? config.registryId,
        originId: row.originId ?? row.id,
        federated: row.originRegistry !== null,
      },
    });
    progress(index + 1, rows.length);
  }
  const manifest: ExportManifest = {
    format: EXPORT_FORMAT,
    version: 1,
    exportedAt: new Date().toISOString(),
    registry: { id: config.registryId, name: config.appName, baseUrl: config.registryBaseUrl },
    count: entries.length,
    agents: entries,
  };
  // Written last: a directory with a manifest holds a complete export.
  await writeFile(join(dir, "index.json"), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir, count: entries.length, private: entries.filter((e) => e.visibility === "private").length };
}
