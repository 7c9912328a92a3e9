/**
 * `cli import`: every card a source offers (see ./sources) is published here through the agents
 * service, exactly like POST /v1/agents (validation, signature verification, search indexing, audit,
 * webhooks), owned by one client. Re-runs are idempotent: a card whose url is already live here with
 * the same card hash is skipped, so a second run imports nothing new; a changed card of an agent the
 * importing client owns becomes a new version of it.
 */
import { ApiError } from "../errors";
import type { Database } from "../infra/db/client";
import { analyzeCard, cardHash } from "../modules/agents/card";
import type { AgentsService } from "../modules/agents/service";
import type { Caller } from "../modules/auth/model";
import { compatRepo, type LiveLocalAgent } from "../modules/compat/repo";
import { openSource, type Source, type SourceItem, type SourceOptions } from "./sources";

export { type SourceKind, SOURCE_KINDS, SourceError } from "./sources";

export const ALREADY_PRESENT = "already present: same url and card hash";

export type ImportOutcome = "imported" | "updated" | "skipped" | "failed";
export type ImportResult = { ref: string; outcome: ImportOutcome; id?: string; reason?: string };

export type ImportSummary = {
  kind: Source["kind"];
  location: string;
  note?: string;
  dryRun: boolean;
  total: number;
  imported: number;
  updated: number;
  skipped: number;
  failed: number;
  results: ImportResult[];
  seconds: number;
};

export type ImportTarget = {
  agents: AgentsService;
  database: Database;
  /** The client that will own what is imported (it need not hold a token). */
  owner: string;
};

export type ImportOptions = SourceOptions & {
  dryRun?: boolean;
  progress?: (done: number, total: number) => void;
};

const summarise = (errors: { path: string; message: string }[]) =>
  errors
    .slice(0, 3)
    .map((e) => `${e.path || "/"} ${e.message}`)
    .join("; ");

/** Why the service refused a card, as a skip reason; undefined when it is a failure instead. */
function refusal(error: ApiError): string | undefined {
  switch (error.code) {
    case "INVALID_AGENT_CARD":
      return `invalid card: ${error.options.errors ? summarise(error.options.errors) : error.detail}`;
    case "INVALID_SIGNATURE":
      return `invalid signature: ${error.detail}`;
    case "AGENT_EXISTS":
    case "VERSION_EXISTS":
      return `conflict: ${error.detail}`;
    case "VALIDATION_FAILED":
      return `refused: ${error.detail}`;
    default:
      return undefined;
  }
}

export async function importAgents(target: ImportTarget, options: ImportOptions): Promise<ImportSummary> {
  const started = performance.now();
  const source = await openSource(options);
  const dryRun = options.dryRun === true;
  const repo = compatRepo(target.database);
  const local = await repo.liveLocalByUrl();
  // The operator imports on the owner's behalf: admin rights lift the per-client quota (as for an
  // admin's own publishes); every other rule of publishing applies.
  const caller: Caller = {
    kind: "client",
    clientId: target.owner,
    scopes: ["agents:write"],
    admin: true,
    tokenId: "cli-import",
  };
  const ctx = { caller, requestId: `import-${Bun.randomUUIDv7()}`, ip: null };
  const results: ImportResult[] = [];
  const progress = options.progress ?? (() => {});
  const total = source.items.length;
  progress(0, total);

  async function one(item: SourceItem): Promise<ImportResult> {
    const skip = (reason: string, id?: string): ImportResult => ({
      ref: item.ref,
      outcome: "skipped",
      reason,
      id,
    });
    if (item.refuse) return skip(item.refuse);
    if (item.known) {
      const existing = local.get(item.known.url);
      if (existing && existing.cardHash === item.known.cardHash) return skip(ALREADY_PRESENT, existing.id);
    }
    let text: string;
    try {
      text = await item.text();
    } catch (error) {
      return {
        ref: item.ref,
        outcome: "failed",
        reason: `card could not be read: ${(error as Error).message}`,
      };
    }
    let card: unknown;
    try {
      card = JSON.parse(text);
    } catch (error) {
      return skip(`invalid JSON: ${(error as Error).message}`);
    }
    const analysis = analyzeCard(card);
    if (!analysis.ok) return skip(`invalid card: ${summarise(analysis.errors)}`);
    const hash = cardHash(card);
    const existing = local.get(analysis.primaryUrl);
    if (existing?.cardHash === hash) return skip(ALREADY_PRESENT, existing.id);
    if (existing && existing.owner !== target.owner)
      return skip(`conflict: url ${analysis.primaryUrl} is taken by agent ${existing.id} of another client`);
    const visibility = item.visibility ?? "public";
    if (dryRun) return { ref: item.ref, outcome: existing ? "updated" : "imported", id: existing?.id };
    const agent = existing
      ? await target.agents.update(ctx, existing.id, { card, visibility }, text)
      : await target.agents.publish(ctx, { card, visibility }, text);
    if (item.status === "deprecated")
      await target.agents.patch(ctx, agent.id, {
        status: "deprecated",
        statusMessage: item.statusMessage ?? null,
      });
    const now: LiveLocalAgent = {
      id: agent.id,
      url: analysis.primaryUrl,
      owner: target.owner,
      cardHash: hash,
      version: analysis.version,
      visibility,
      status: item.status ?? "active",
    };
    local.set(now.url, now);
    return { ref: item.ref, outcome: existing ? "updated" : "imported", id: agent.id };
  }

  for (const [index, item] of source.items.entries()) {
    let result: ImportResult;
    try {
      result = await one(item);
    } catch (error) {
      const reason = error instanceof ApiError ? refusal(error) : undefined;
      result = reason
        ? { ref: item.ref, outcome: "skipped", reason }
        : {
            ref: item.ref,
            outcome: "failed",
            reason: error instanceof ApiError ? `${error.code}: ${error.detail}` : (error as Error).message,
          };
    }
    results.push(result);
    progress(index + 1, total);
  }

  const count = (outcome: ImportOutcome) => results.filter((r) => r.outcome === outcome).length;
  return {
    kind: source.kind,
    location: source.location,
    ...(source.note ? { note: source.note } : {}),
    dryRun,
    total,
    imported: count("imported"),
    updated: count("updated"),
    skipped: count("skipped"),
    failed: count("failed"),
    results,
    seconds: (performance.now() - started) / 1000,
  };
}

/** The summary as lines: counts, then skip reasons (grouped when repeated) and every failure. */
export function formatImportSummary(summary: ImportSummary, maxLines = 50): string[] {
  const would = summary.dryRun ? "would be " : "";
  const lines = [
    `source: ${summary.kind} ${summary.location} (${summary.total} cards${summary.note ? `; ${summary.note}` : ""})`,
    `${would}imported: ${summary.imported}`,
    `${would}updated:  ${summary.updated}`,
    `skipped:  ${summary.skipped}`,
    `failed:   ${summary.failed}`,
  ];
  const skipped = summary.results.filter((r) => r.outcome === "skipped");
  const byReason = new Map<string, ImportResult[]>();
  for (const r of skipped) byReason.set(r.reason ?? "", [...(byReason.get(r.reason ?? "") ?? []), r]);
  const details: string[] = [];
  for (const [reason, items] of byReason)
    if (items.length > 1) lines.push(`  skipped ${items.length}: ${reason}`);
    else details.push(`  skipped ${items[0]!.ref}: ${reason}`);
  for (const r of summary.results.filter((r) => r.outcome === "failed"))
    details.push(`  failed ${r.ref}: ${r.reason}`);
  lines.push(...details.slice(0, maxLines));
  if (details.length > maxLines) lines.push(`  ... and ${details.length - maxLines} more`);
  lines.push(
    summary.dryRun
      ? `dry run: nothing was written (${summary.seconds.toFixed(1)}s)`
      : `done in ${summary.seconds.toFixed(1)}s`,
  );
  return lines;
}
