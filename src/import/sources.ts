/**
 * Where an import reads cards from:
 *
 * - `registry`: another registry of this kind. With a token, its change feed (GET /v1/changes from 0,
 *   following nextSince while hasMore): every agent that token may see, private ones included. Without
 *   one, GET /v1/agents pages (the public agents). Cards are read from GET /v1/agents/{id}/card, so
 *   they arrive byte for byte, and only for agents not already here with the same url and card hash.
 * - `a2areg`: the older Python registry: GET /agents/public?top&skip pages, then GET /agents/{id}/card.
 * - `dir`: a directory of card JSON files (`*.json`), e.g. one written by `cli export` (whose
 *   index.json manifest then gives each card's visibility and status).
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { createRegistryClient, RegistryError } from "../client";

export type SourceKind = "registry" | "a2areg" | "dir";
export const SOURCE_KINDS: readonly SourceKind[] = ["registry", "a2areg", "dir"];

/** One card a source offers. */
export type SourceItem = {
  /** Where it comes from, for the summary: a file name or the agent's id at the source. */
  ref: string;
  /** What the source says about the card before it is read: an unchanged agent is then skipped unread. */
  known?: { url: string; cardHash: string };
  visibility?: "public" | "private";
  status?: "active" | "deprecated";
  statusMessage?: string | null;
  /** Set when the source says the card must not be imported (it is then skipped with this reason). */
  refuse?: string;
  /** The card's exact text. */
  text(): Promise<string>;
};

export type Source = { kind: SourceKind; location: string; items: SourceItem[]; note?: string };

export type SourceOptions = {
  from: string;
  kind?: SourceKind;
  token?: string;
  /** Sends the HTTP requests (tests pass one that reaches an app in process). */
  fetch?: (request: Request) => Promise<Response>;
};

export class SourceError extends Error {}

const isHttp = (from: string) => /^https?:\/\//i.test(from);

const localPath = (from: string) => (from.startsWith("file://") ? new URL(from).pathname : resolve(from));

/** The kind of source `from` is: a directory, or a registry of this kind or the older one. */
export async function detectKind(options: SourceOptions): Promise<SourceKind> {
  if (!isHttp(options.from)) return "dir";
  const client = createRegistryClient({ baseUrl: options.from, token: options.token, fetch: options.fetch });
  try {
    await client.changes({ since: 0, limit: 1 });
    return "registry";
  } catch (error) {
    // The feed exists but wants (another) token: still a registry of this kind.
    if (error instanceof RegistryError && [401, 403].includes(error.status) && /^[A-Z_]+$/.test(error.code))
      return "registry";
    if (!(error instanceof RegistryError)) throw unreachable(options.from, error);
  }
  try {
    const page = await client.compat.publicAgents({ top: 1 });
    if (Array.isArray(page.items)) return "a2areg";
  } catch (error) {
    if (!(error instanceof RegistryError) && !(error instanceof SyntaxError))
      throw unreachable(options.from, error);
  }
  throw new SourceError(
    `${options.from} serves neither /v1/changes (a registry of this kind) nor /agents/public (the older A2AReg registry); pass --kind`,
  );
}

const unreachable = (from: string, error: unknown) =>
  new SourceError(`${from} could not be reached: ${(error as Error).message}`);

export async function openSource(options: SourceOptions): Promise<Source> {
  const kind = options.kind ?? (await detectKind(options));
  if (kind === "dir") return directorySource(localPath(options.from));
  if (!isHttp(options.from))
    throw new SourceError(`--kind ${kind} needs an http(s) URL, not ${options.from}`);
  const client = createRegistryClient({ baseUrl: options.from, token: options.token, fetch: options.fetch });
  const location = client.baseUrl;
  if (kind === "a2areg") {
    const items: SourceItem[] = [];
    const seen = new Set<string>();
    const top = 100;
    for (let skip = 0; ; skip += top) {
      const page = await client.compat.publicAgents({ top, skip });
      for (const { id } of page.items)
        if (!seen.has(id)) {
          seen.add(id);
          items.push({
            ref: id,
            visibility: "public",
            text: async () => (await client.compat.card(id)).text,
          });
        }
      // The older registry always sends a `next`, even past the end: a short page is the last.
      if (page.items.length < top) break;
    }
    return { kind, location, items };
  }
  const remote = (agent: {
    id: string;
    url: string;
    cardHash: string;
    visibility: "public" | "private";
    status: string;
    statusMessage: string | null;
  }): SourceItem => ({
    ref: agent.id,
    known: { url: agent.url, cardHash: agent.cardHash },
    visibility: agent.visibility,
    status: agent.status === "deprecated" ? "deprecated" : "active",
    statusMessage: agent.statusMessage,
    text: async () => (await client.agents.card(agent.id)).text,
  });
  const byId = new Map<string, SourceItem>();
  if (options.token) {
    // Each agent appears once, at its latest change; a later delete removes an earlier upsert.
    for await (const page of client.changesPages({ since: 0, limit: 500 }))
      for (const change of page.changes) {
        if (change.op === "delete" || !change.agent) byId.delete(change.id);
        else byId.set(change.id, remote(change.agent));
      }
  } else {
    for await (const page of client.agents.pages({ limit: 100 }))
      for (const agent of page.items) if (!agent.source.federated) byId.set(agent.id, remote(agent));
  }
  return {
    kind,
    location,
    items: [...byId.values()],
    ...(options.token ? {} : { note: "no --token: only its public agents (GET /v1/agents)" }),
  };
}

type ManifestEntry = {
  file?: string;
  visibility?: "public" | "private";
  status?: string;
  statusMessage?: string | null;
  source?: { federated?: boolean; registry?: string };
};

async function directorySource(path: string): Promise<Source> {
  const info = await stat(path).catch(() => null);
  if (!info?.isDirectory()) throw new SourceError(`${path} is not a directory`);
  const names = (await readdir(path)).filter((name) => name.toLowerCase().endsWith(".json")).sort();
  const manifest = new Map<string, ManifestEntry>();
  let manifestFile: string | undefined;
  if (names.includes("index.json")) {
    try {
      const parsed = JSON.parse(await readFile(join(path, "index.json"), "utf8")) as { agents?: unknown };
      if (Array.isArray(parsed.agents)) {
        manifestFile = "index.json";
        for (const entry of parsed.agents as ManifestEntry[])
          if (entry && typeof entry.file === "string") manifest.set(entry.file, entry);
      }
    } catch {
      // not a manifest: index.json is then a card like any other file
    }
  }
  const items = names
    .filter((name) => name !== manifestFile)
    .map((name): SourceItem => {
      const entry = manifest.get(name);
      return {
        ref: name,
        visibility: entry?.visibility === "private" ? "private" : "public",
        status: entry?.status === "deprecated" ? "deprecated" : "active",
        statusMessage: entry?.statusMessage ?? null,
        ...(entry?.source?.federated
          ? {
              refuse: `federated copy from registry ${entry.source.registry}: import it from its origin registry`,
            }
          : {}),
        text: async () => (await readFile(join(path, name), "utf8")).trim(),
      };
    });
  return { kind: "dir", location: path, items };
}
