import canonicalize from "canonicalize";
import { sql } from "drizzle-orm";
import type { Config } from "../../config";
import { ApiError, type FieldError } from "../../errors";
import type { Audit } from "../../infra/audit";
import type { Database, Executor } from "../../infra/db/client";
import type { AgentRow } from "../../infra/db/schema";
import { OutboundFetchError, type SafeFetchOptions, safeFetchJson } from "../../infra/http";
import type { VersionedCache } from "../../infra/cache";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import { clientsRepo } from "../auth/repo";
import type { Caller } from "../auth/model";
import type { WebhookEvent } from "../webhooks/model";
import { analyzeCard, cardHash } from "./card";
import { duplicateMemberPath } from "./raw-json";
import { createSignatureVerifier } from "./signatures";
import type { ListFilters, PatchInput, PublishInput } from "./model";
import { type AgentInsert, agentsRepo, type NewAgent, type RecordRow, UUID_PATTERN } from "./repo";

const ANALYZE_EVERY = 1000;

export type AgentsDeps = {
  config: Config;
  database: Database;
  cache: VersionedCache<SerializedAgent>;
  audit: Audit;
  metrics: Metrics;
  logger: Logger;
  /** Overridable in tests (DNS stubs); production uses the real resolver. */
  fetchOptions?: Partial<SafeFetchOptions>;
  /** Writes before the first background ANALYZE (and the least between two); small in tests. */
  analyzeEvery?: number;
  /** Keeps an external search index in step: queue inside the transaction, index after commit. */
  searchIndex?: SearchIndexHook;
  /** Webhook events: queued inside the transaction (at-least-once), sent right after commit. */
  events?: AgentEventsHook;
};

export type AgentEventsHook = {
  /** Queues the event of each agent in the writing transaction; returns how many deliveries it queued. */
  emit(event: WebhookEvent, agents: AgentRow[], executor: Executor): Promise<number>;
  kick(): void;
};

export type SearchIndexHook = {
  enqueue(ids: string[], executor: Executor): Promise<void>;
  changed(ids: string[]): Promise<void>;
};

const noSearchIndex: SearchIndexHook = { enqueue: async () => {}, changed: async () => {} };
const noEvents: AgentEventsHook = { emit: async () => 0, kick: () => {} };

/** Facts about the request that writes record in the audit log. */
export type WriteContext = { caller: Caller; requestId: string; ip: string | null };

/**
 * A serialised record: the bytes to send with their strong ETags, computed once per change, plus the
 * metadata every read checks visibility against. This is what the cache holds.
 */
export type SerializedAgent = {
  id: string;
  seq: number;
  body: string;
  etag: string;
  cardRaw: string;
  cardEtag: string;
  visibility: "public" | "private";
  owner: string | null;
  entitled: string[];
};

/** Visibility from cached metadata: public, or the caller owns it, is entitled to it, or is an admin. */
export function canSee(agent: SerializedAgent, caller: Caller): boolean {
  if (agent.visibility === "public") return true;
  if (caller.kind !== "client") return false;
  return caller.admin || agent.owner === caller.clientId || agent.entitled.includes(caller.clientId);
}

const sha256Hex = (text: string) => new Bun.CryptoHasher("sha256").update(text).digest("hex");

/** The record's JSON text, with the card embedded as its published text (key order and spelling kept). */
export function recordBody(row: RecordRow, registryId: string): string {
  const federated = row.originRegistry !== null;
  const head = JSON.stringify({
    id: row.id,
    name: row.name,
    description: row.description,
    url: row.url,
    visibility: row.visibility,
    status: row.status,
    statusMessage: row.statusMessage,
    version: row.latestVersion,
    generation: row.generation,
    protocolVersion: row.protocolVersion,
    cardHash: row.cardHash,
  });
  const tail = JSON.stringify({
    signature: row.signature,
    signatureKid: row.signatureKid,
    verifiedDomain: row.signatureDomain,
    signatureError: row.signatureError,
    health: row.health,
    checkedAt: row.checkedAt?.toISOString() ?? null,
    healthError: row.healthError,
    drift: row.drift ?? null,
    source: {
      registry: row.originRegistry ?? registryId,
      originId: row.originId ?? row.id,
      federated,
    },
    owner: row.owner,
    createdAt: row.createdAt.toISOString(),
    updatedAt: row.updatedAt.toISOString(),
  });
  // The card goes in as its published text, so key order and spelling survive in the record too.
  return `${head.slice(0, -1)},"card":${row.cardRaw},${tail.slice(1)}`;
}

export function serializeAgent(row: AgentRow, registryId: string, entitled: string[]): SerializedAgent {
  const body = recordBody(row, registryId);
  return {
    id: row.id,
    seq: row.seq,
    body,
    etag: `"${sha256Hex(body).slice(0, 40)}"`,
    cardRaw: row.cardRaw,
    cardEtag: `"${row.cardHash.slice(0, 40)}-${row.status}"`,
    visibility: row.visibility,
    owner: row.owner,
    entitled,
  };
}

/**
 * A cached record as Redis holds it: its small fields as one line of JSON, then the record's bytes as
 * they are, not as a JSON string (escaping every quote of a card cost more than the rest of a write),
 * the card being named by where it sits in the record instead of being stored twice. A value without a
 * newline is the earlier format (the whole SerializedAgent as JSON), still read during an upgrade.
 */
export const cachedAgentCodec = {
  encode(agent: SerializedAgent): string {
    const { body, cardRaw, ...fields } = agent;
    // The record's head has no member named card, and inside its strings every quote is escaped.
    const start = body.indexOf(',"card":') + 8;
    if (start < 8 || !body.startsWith(cardRaw, start)) return JSON.stringify(agent);
    return `${JSON.stringify({ ...fields, card: [start, start + cardRaw.length] })}\n${body}`;
  },
  decode(text: string): SerializedAgent {
    const newline = text.indexOf("\n");
    if (newline < 0) return JSON.parse(text) as SerializedAgent;
    const { card, ...fields } = JSON.parse(text.slice(0, newline)) as Omit<
      SerializedAgent,
      "body" | "cardRaw"
    > & {
      card: [number, number];
    };
    const body = text.slice(newline + 1);
    return { ...fields, body, cardRaw: body.slice(card[0], card[1]) };
  },
};

function pgErrorOf(error: unknown): { code?: string; constraint?: string } | undefined {
  let current: unknown = error;
  for (let depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) {
      const c = current as { constraint_name?: string; constraint?: string };
      return { code, constraint: c.constraint_name ?? c.constraint };
    }
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function isUrlConflict(error: unknown) {
  const pg = pgErrorOf(error);
  return (
    pg?.code === "23505" && (pg.constraint === undefined || pg.constraint === "agents_live_local_url_key")
  );
}

function actorOf(caller: Caller) {
  return caller.kind === "client" ? caller.clientId : "anonymous";
}

type CardInput = { card: unknown; cardText: string; cardUrl: string | null };

export function createAgentsService(deps: AgentsDeps) {
  const { config, database, audit, metrics, cache, logger } = deps;
  const searchIndex = deps.searchIndex ?? noSearchIndex;
  const events = deps.events ?? noEvents;
  const repo = agentsRepo(database);
  const clients = clientsRepo(database.db);
  const fetchOptions: SafeFetchOptions = {
    allowInsecure: config.debug,
    maxBytes: config.cardFetchMaxBytes,
    timeoutMs: config.cardFetchTimeoutMs,
    accept: "application/json",
    ...deps.fetchOptions,
  };
  const signatures = createSignatureVerifier({ metrics, fetchOptions });

  /** Verifies the card's signatures; an invalid one is refused unless the publisher accepts that. */
  async function signatureColumns(card: CardInput, primaryUrl: string, allowInvalid: boolean) {
    const outcome = await signatures.verify(card.card, { primaryUrl, cardUrl: card.cardUrl });
    if (outcome.state === "invalid" && !outcome.unverifiable && !allowInvalid)
      throw new ApiError(
        "INVALID_SIGNATURE",
        `The card's signature does not verify: ${outcome.errors[0]?.message}. Send allowInvalidSignature: true to store it marked invalid.`,
        { errors: outcome.errors },
      );
    return {
      signature: outcome.state,
      signatureKid: outcome.kid,
      signatureDomain: outcome.verifiedDomain,
      signatureError:
        outcome.state === "invalid" ? outcome.errors.map((e) => `${e.path}: ${e.message}`).join("; ") : null,
    };
  }

  /**
   * Keeps planner statistics fresh. A burst of publishes leaves Postgres estimating a handful of rows
   * until autovacuum analyzes the table, and it then sorts the whole table for every list page;
   * embedded PGlite has no autovacuum at all. So the table is analyzed in the background once this
   * process has written ANALYZE_EVERY rows (deps.analyzeEvery), and after that each time its writes reach half the rows the
   * last analysis counted: estimates stay within a factor that does not change plans, and the cost
   * stays a small share of the writes (an ANALYZE reads up to 30,000 rows; one every 1,000 publishes of
   * a 20,000-row table cost Postgres about as much as the publishes themselves).
   */
  let writesSinceAnalyze = 0;
  const analyzeEvery = deps.analyzeEvery ?? ANALYZE_EVERY;
  let analyzeAfter = analyzeEvery;
  let analyzing = false;
  function wrote(operation: "created" | "updated" | "status_changed" | "deleted") {
    metrics.agentWrites.inc({ operation });
    if (++writesSinceAnalyze < analyzeAfter || analyzing) return;
    writesSinceAnalyze = 0;
    analyzing = true;
    (async () => {
      // The search rows grow with the agents (one per live agent): searches plan from their statistics.
      await database.rows(sql`analyze agents, agent_search`);
      const [counted] = await database.rows<{ n: number }>(
        sql`select reltuples::float8 as n from pg_class where oid = 'agents'::regclass`,
      );
      analyzeAfter = Math.max(analyzeEvery, Math.floor(Number(counted?.n ?? 0) / 2));
    })()
      .catch((error) => logger.warn({ err: error }, "analyze agents failed"))
      .finally(() => {
        analyzing = false;
      });
  }

  /** Turns the publish body into the card and its exact text, fetching it when given by URL. */
  async function resolveCard(input: PublishInput, bodyCardText: string | undefined): Promise<CardInput> {
    const hasCard = input.card !== undefined;
    const hasUrl = input.cardUrl !== undefined;
    if (hasCard === hasUrl)
      throw new ApiError("VALIDATION_FAILED", "Send exactly one of card or cardUrl", {
        errors: [{ path: "/body", message: "Exactly one of card or cardUrl is required" }],
      });
    if (hasCard)
      return { card: input.card, cardText: bodyCardText ?? JSON.stringify(input.card), cardUrl: null };
    const cardUrl = input.cardUrl!;
    try {
      const fetched = await safeFetchJson(cardUrl, fetchOptions);
      return { card: fetched.value, cardText: fetched.text.trim(), cardUrl };
    } catch (error) {
      if (!(error instanceof OutboundFetchError)) throw error;
      const refused = ["invalid_url", "scheme_not_allowed", "address_not_allowed"].includes(error.reason);
      const errors: FieldError[] = [{ path: "/cardUrl", message: error.message }];
      if (refused) throw new ApiError("VALIDATION_FAILED", `cardUrl refused: ${error.message}`, { errors });
      throw new ApiError(
        "INVALID_AGENT_CARD",
        `The card could not be fetched from cardUrl: ${error.message}`,
        {
          errors,
        },
      );
    }
  }

  function analyze(input: CardInput) {
    const duplicate = duplicateMemberPath(input.cardText);
    if (duplicate !== undefined)
      throw new ApiError(
        "INVALID_AGENT_CARD",
        `The Agent Card is invalid: ${duplicate} Duplicated member name`,
        {
          errors: [
            {
              path: duplicate,
              message: "Duplicated member name: a card's member names must be unique (RFC 7493)",
            },
          ],
        },
      );
    const analysis = analyzeCard(input.card);
    if (!analysis.ok)
      throw new ApiError(
        "INVALID_AGENT_CARD",
        `The Agent Card is invalid: ${analysis.errors
          .slice(0, 3)
          .map((e) => `${e.path || "/"} ${e.message}`)
          .join("; ")}`,
        { errors: analysis.errors },
      );
    return { analysis, hash: cardHash(input.card) };
  }

  function versionRow(agentId: string, version: string, card: CardInput, hash: string) {
    return { agentId, version, cardRaw: card.cardText, cardHash: hash };
  }

  function cardColumns(
    input: CardInput,
    analysis: Extract<ReturnType<typeof analyzeCard>, { ok: true }>,
    hash: string,
  ) {
    return {
      name: analysis.name,
      description: analysis.description,
      url: analysis.primaryUrl,
      generation: analysis.generation,
      protocolVersion: analysis.protocolVersion,
      latestVersion: analysis.version,
      cardRaw: input.cardText,
      cardHash: hash,
      skills: analysis.facets.skills,
      tags: analysis.facets.tags,
      inputModes: analysis.facets.inputModes,
      outputModes: analysis.facets.outputModes,
      streaming: analysis.facets.streaming,
      provider: analysis.facets.provider,
    } satisfies Partial<AgentInsert>;
  }

  /** Loads a live agent for a write by `caller`, enforcing ownership without revealing hidden agents. */
  async function loadForWrite(id: string, caller: Caller, tx: Executor) {
    const row = await repo.lockLive(id, tx);
    const admin = caller.kind === "client" && caller.admin;
    const owner = caller.kind === "client" && row?.owner === caller.clientId;
    if (!row) throw new ApiError("NOT_FOUND", `No agent ${id}`);
    if (!admin && !owner) {
      const visible = await repo.findVisible(id, caller, tx);
      if (!visible) throw new ApiError("NOT_FOUND", `No agent ${id}`);
      throw new ApiError("FORBIDDEN", "Only the agent's owner or an admin may change it");
    }
    if (row.originRegistry !== null)
      throw new ApiError(
        "FORBIDDEN",
        `This agent is a read-only federated copy from registry ${row.originRegistry}; change it there`,
      );
    return row;
  }

  /** A publish that passed validation, waiting for the transaction that will insert it. */
  type PendingPublish = NewAgent & {
    /** Whether MAX_AGENTS_PER_CLIENT applies (admins are exempt). */
    quota: boolean;
    resolve(agent: SerializedAgent): void;
    reject(error: unknown): void;
  };

  const agentExists = (url: string) =>
    new ApiError("AGENT_EXISTS", `A live agent with url ${url} already exists`);

  /** What a publishing transaction wrote: the inserted rows by id, and how many webhook deliveries. */
  type Inserted = { rows: Map<string, AgentRow>; deliveries: number };

  /**
   * Inside the publishing transaction: the agents with their versions and audit rows in one statement,
   * then their search-outbox entries and webhook events (one statement for the batch) side by side.
   */
  async function insertPublished(jobs: PendingPublish[], tx: Executor): Promise<Inserted> {
    const rows = await repo.insertPublished(jobs, tx);
    const created = jobs.flatMap((job) => rows.get(job.values.id) ?? []);
    if (created.length === 0) return { rows, deliveries: 0 };
    const [, deliveries] = await Promise.all([
      searchIndex.enqueue(
        created.map((row) => row.id),
        tx,
      ),
      events.emit("agent.published", created, tx),
    ]);
    return { rows, deliveries };
  }

  /** After commit: caches and the search index brought up to date, then each publish answered. */
  async function published(jobs: PendingPublish[], { rows, deliveries }: Inserted) {
    if (jobs.length === 0) return;
    audit.counted(jobs.map((job) => job.audit));
    // A pass of the delivery loop is a statement of its own: only when this batch queued something.
    if (deliveries > 0) events.kick();
    const agents = jobs.map((job) => {
      wrote("created");
      return serializeAgent(rows.get(job.values.id)!, config.registryId, []);
    });
    // New ids: one Redis command for the batch, and no invalidation to publish (see writeNew).
    await cache.writeNew(agents, (agent) => agent.id);
    await searchIndex.changed(agents.map((agent) => agent.id));
    for (const [i, job] of jobs.entries()) job.resolve(agents[i]!);
  }

  /**
   * One publish in a transaction of its own, its quota counted under its owner's lock. `committed` is
   * called once the transaction is over, before the caches are written.
   */
  async function publishAlone(job: PendingPublish, committed: () => void = () => {}) {
    try {
      let inserted: Inserted;
      try {
        inserted = await database.db.transaction(async (tx) => {
          if (job.quota) {
            await repo.lockOwner(job.values.owner!, tx);
            const count = await repo.countLiveOwned(job.values.owner!, tx);
            if (count >= config.maxAgentsPerClient)
              throw new ApiError(
                "QUOTA_EXCEEDED",
                `This client already has ${count} live agents (limit ${config.maxAgentsPerClient})`,
              );
          }
          return insertPublished([job], tx);
        });
      } finally {
        committed();
      }
      if (!inserted.rows.has(job.values.id)) throw agentExists(job.values.url);
      await published([job], inserted);
    } catch (error) {
      job.reject(isUrlConflict(error) ? agentExists(job.values.url) : error);
    }
  }

  /**
   * Several publishes in one transaction. Per publish that saves most of the round trips, statements and
   * commit flushes, which bounded publish throughput while Postgres itself was far from busy. Each
   * caller gets what it would get alone: a url already live (or repeated in the batch) is AGENT_EXISTS
   * for that publish only; the publishes of an owner whose quota cannot take all of them here, and all
   * of a batch that fails as a whole, go again one at a time.
   */
  async function publishBatch(batch: PendingPublish[], committed: () => void) {
    if (batch.length === 1) return publishAlone(batch[0]!, committed);
    // One order for every batch, so two batches never wait for each other's urls in opposite orders.
    batch.sort((a, b) => (a.values.url < b.values.url ? -1 : a.values.url > b.values.url ? 1 : 0));
    let outcome: { inserted: Inserted; admitted: PendingPublish[]; alone: PendingPublish[] };
    try {
      outcome = await database.db.transaction(async (tx) => {
        const byOwner = new Map<string, PendingPublish[]>();
        for (const job of batch)
          if (job.quota) byOwner.set(job.values.owner!, [...(byOwner.get(job.values.owner!) ?? []), job]);
        const alone = new Set<PendingPublish>();
        // Owners in one order too, so batches take their locks without deadlocking.
        for (const owner of [...byOwner.keys()].sort()) {
          const jobs = byOwner.get(owner)!;
          await repo.lockOwner(owner, tx);
          const count = await repo.countLiveOwned(owner, tx);
          if (count + jobs.length > config.maxAgentsPerClient) for (const job of jobs) alone.add(job);
        }
        const admitted = batch.filter((job) => !alone.has(job));
        const inserted =
          admitted.length > 0 ? await insertPublished(admitted, tx) : { rows: new Map(), deliveries: 0 };
        return { inserted, admitted, alone: [...alone] };
      });
    } catch {
      committed();
      // Whatever failed (one row's data, a deadlock, the database) is answered per publish.
      await Promise.all(batch.map((job) => publishAlone(job)));
      return;
    }
    committed();
    const { inserted, admitted, alone } = outcome;
    const { rows } = inserted;
    for (const job of admitted) if (!rows.has(job.values.id)) job.reject(agentExists(job.values.url));
    try {
      await published(
        admitted.filter((job) => rows.has(job.values.id)),
        inserted,
      );
    } catch (error) {
      for (const job of admitted) job.reject(error);
    }
    // Counted and inserted one by one, exactly, now that this batch released the owners' locks.
    await Promise.all(alone.map((job) => publishAlone(job)));
  }

  /**
   * Publishes are queued and written in batches: while MAX_PUBLISH_BATCHES transactions are open, new
   * publishes wait and go together in the next. A slot is free again at commit, not after the caches
   * are written, so the next batch's round trips overlap this one's. An idle registry writes a publish
   * at once, alone.
   */
  const MAX_PUBLISH_BATCHES =
    database.kind === "pglite" ? 1 : Math.max(1, Math.min(4, config.databasePoolMax >> 2));
  const MAX_PUBLISH_BATCH = 64;
  const queued: PendingPublish[] = [];
  let batchesOpen = 0;
  function pump() {
    while (batchesOpen < MAX_PUBLISH_BATCHES && queued.length > 0) {
      const batch = queued.splice(0, MAX_PUBLISH_BATCH);
      batchesOpen++;
      let open = true;
      const committed = () => {
        if (!open) return;
        open = false;
        batchesOpen--;
        pump();
      };
      void publishBatch(batch, committed).finally(committed);
    }
  }

  async function publish(ctx: WriteContext, input: PublishInput, bodyCardText: string | undefined) {
    if (ctx.caller.kind !== "client") throw new ApiError("UNAUTHORIZED", "Publishing needs a bearer token");
    const owner = ctx.caller.clientId;
    const card = await resolveCard(input, bodyCardText);
    const { analysis, hash } = analyze(card);
    const signed = await signatureColumns(card, analysis.primaryUrl, input.allowInvalidSignature === true);
    const id = Bun.randomUUIDv7();
    return new Promise<SerializedAgent>((resolve, reject) => {
      queued.push({
        values: {
          id,
          owner,
          visibility: input.visibility ?? "public",
          status: "active",
          cardUrl: card.cardUrl,
          ...cardColumns(card, analysis, hash),
          ...signed,
        },
        audit: {
          actor: owner,
          action: "agent.created",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: { name: analysis.name, url: analysis.primaryUrl, version: analysis.version },
        },
        quota: !(ctx.caller.kind === "client" && ctx.caller.admin) && config.maxAgentsPerClient >= 0,
        resolve,
        reject,
      });
      pump();
    });
  }

  async function update(
    ctx: WriteContext,
    id: string,
    input: PublishInput,
    bodyCardText: string | undefined,
  ) {
    const card = await resolveCard(input, bodyCardText);
    return applyCard(ctx, id, card, {
      visibility: input.visibility,
      allowInvalidSignature: input.allowInvalidSignature === true,
    });
  }

  /** A new version from a resolved card (an update, or a re-fetched card that changed). */
  async function applyCard(
    ctx: WriteContext,
    id: string,
    card: CardInput,
    options: { visibility?: "public" | "private"; allowInvalidSignature: boolean },
  ) {
    const { analysis, hash } = analyze(card);
    const signed = await signatureColumns(card, analysis.primaryUrl, options.allowInvalidSignature);
    try {
      const result = await database.db.transaction(async (tx) => {
        const current = await loadForWrite(id, ctx.caller, tx);
        const existing = await repo.findVersion(id, analysis.version, tx);
        if (existing && existing.cardHash !== hash)
          throw new ApiError(
            "VERSION_EXISTS",
            `Version ${analysis.version} already exists with different content; bump the card's version`,
          );
        const visibility = options.visibility ?? current.visibility;
        if (existing && current.latestVersion === analysis.version && visibility === current.visibility)
          return { row: current, changed: false, entitled: [] as string[] };
        const row = await repo.update(
          id,
          {
            ...cardColumns(card, analysis, hash),
            ...signed,
            visibility,
            drift: null,
            ...(card.cardUrl ? { cardUrl: card.cardUrl } : {}),
          },
          tx,
        );
        if (!existing) await repo.insertVersion(versionRow(id, analysis.version, card, hash), tx);
        await searchIndex.enqueue([id], tx);
        await audit.record(
          {
            actor: actorOf(ctx.caller),
            action: "agent.updated",
            target: id,
            outcome: "success",
            ip: ctx.ip,
            requestId: ctx.requestId,
            details: { version: analysis.version, previousVersion: current.latestVersion, visibility },
          },
          tx,
        );
        await events.emit("agent.updated", [row], tx);
        return { row, changed: true, entitled: await repo.entitledClients(id, tx) };
      });
      if (!result.changed) return getFresh(id);
      events.kick();
      wrote("updated");
      const agent = serializeAgent(result.row, config.registryId, result.entitled);
      await cache.write(id, agent);
      await searchIndex.changed([id]);
      return agent;
    } catch (error) {
      if (isUrlConflict(error))
        throw new ApiError("AGENT_EXISTS", `Another live agent already has url ${analysis.primaryUrl}`);
      throw error;
    }
  }

  async function patch(ctx: WriteContext, id: string, input: PatchInput) {
    const result = await database.db.transaction(async (tx) => {
      const current = await loadForWrite(id, ctx.caller, tx);
      const changes: Partial<AgentInsert> = {};
      if (input.status !== undefined && input.status !== current.status) changes.status = input.status;
      if (input.statusMessage !== undefined && input.statusMessage !== current.statusMessage)
        changes.statusMessage = input.statusMessage;
      if (input.visibility !== undefined && input.visibility !== current.visibility)
        changes.visibility = input.visibility;
      if (Object.keys(changes).length === 0) return null;
      const updated = await repo.update(id, changes, tx);
      await searchIndex.enqueue([id], tx);
      const statusChanged = changes.status !== undefined || changes.statusMessage !== undefined;
      await audit.record(
        {
          actor: actorOf(ctx.caller),
          action: statusChanged ? "agent.status_changed" : "agent.visibility_changed",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: {
            from: {
              status: current.status,
              statusMessage: current.statusMessage,
              visibility: current.visibility,
            },
            to: {
              status: updated.status,
              statusMessage: updated.statusMessage,
              visibility: updated.visibility,
            },
          },
        },
        tx,
      );
      await events.emit(statusChanged ? "agent.status_changed" : "agent.updated", [updated], tx);
      wrote("status_changed");
      return { row: updated, entitled: await repo.entitledClients(id, tx) };
    });
    if (result === null) return getFresh(id);
    events.kick();
    const agent = serializeAgent(result.row, config.registryId, result.entitled);
    await cache.write(id, agent);
    await searchIndex.changed([id]);
    return agent;
  }

  async function remove(ctx: WriteContext, id: string) {
    const deleted = await database.db.transaction(async (tx) => {
      const current = await loadForWrite(id, ctx.caller, tx);
      const row = await repo.markDeleted(id, tx);
      await searchIndex.enqueue([id], tx);
      await audit.record(
        {
          actor: actorOf(ctx.caller),
          action: "agent.deleted",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: { name: current.name, url: current.url },
        },
        tx,
      );
      await events.emit("agent.deleted", [row], tx);
      return row;
    });
    events.kick();
    wrote("deleted");
    await cache.remove(id, deleted.seq);
    await searchIndex.changed([id]);
  }

  /**
   * Writes fields the registry itself maintains (health, drift) as a change of their own: a new seq,
   * so caches, the search index and the change feed follow, plus an optional webhook event.
   */
  async function writeMaintained(
    id: string,
    changes: Partial<AgentInsert>,
    event: WebhookEvent | null,
    audited?: { actor: string; action: string; details: Record<string, unknown> },
  ) {
    const result = await database.db.transaction(async (tx) => {
      const current = await repo.lockLive(id, tx);
      if (!current) return null;
      const row = await repo.update(id, changes, tx);
      await searchIndex.enqueue([id], tx);
      if (event) await events.emit(event, [row], tx);
      if (audited)
        await audit.record({ ...audited, target: id, outcome: "success", ip: null, requestId: null }, tx);
      return { row, entitled: await repo.entitledClients(id, tx) };
    });
    if (!result) return null;
    if (event) events.kick();
    const agent = serializeAgent(result.row, config.registryId, result.entitled);
    await cache.write(id, agent);
    await searchIndex.changed([id]);
    return { agent, row: result.row };
  }

  /** The prober's verdict changed (or a heartbeat arrived for an agent not known to be up). */
  async function setHealth(id: string, health: "up" | "down", error: string | null) {
    metrics.healthTransitions.inc({ to: health });
    return writeMaintained(
      id,
      { health, healthError: error, checkedAt: sql`now()` as never, failingSince: null },
      "agent.health_changed",
    );
  }

  /** Owner heartbeat (TTL style): keeps the agent up without probes until the TTL runs out. */
  async function heartbeat(ctx: WriteContext, id: string) {
    const current = await database.db.transaction(async (tx) => {
      const row = await loadForWrite(id, ctx.caller, tx);
      await database.rows(
        sql`update agents set heartbeat_expires_at = now() + make_interval(secs => ${config.probe.heartbeatTtlSeconds}),
          failing_since = null where id = ${id}`,
        tx,
      );
      return row;
    });
    if (current.health !== "up") await setHealth(id, "up", null);
  }

  type CardDiff = {
    outcome: "unchanged" | "updated" | "drift";
    previousVersion: string;
    version: string;
    previousCardHash: string;
    cardHash: string;
    changes: { added: string[]; removed: string[]; changed: string[] };
    skills: { added: string[]; removed: string[] };
    drift: { detectedAt: string; reason: string; fetchedHash?: string } | null;
  };

  function diffCards(before: unknown, after: unknown) {
    const a = (before && typeof before === "object" ? before : {}) as Record<string, unknown>;
    const b = (after && typeof after === "object" ? after : {}) as Record<string, unknown>;
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    const changes = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
    for (const key of [...keys].sort()) {
      if (!(key in a)) changes.added.push(key);
      else if (!(key in b)) changes.removed.push(key);
      // Canonical JSON: a republished card may order its keys or spell its numbers differently.
      else if (canonicalize(a[key]) !== canonicalize(b[key])) changes.changed.push(key);
    }
    const skillIds = (card: Record<string, unknown>) =>
      new Set(
        (Array.isArray(card.skills) ? card.skills : [])
          .map((skill) => (skill && typeof skill === "object" ? (skill as { id?: unknown }).id : undefined))
          .filter((skillId): skillId is string => typeof skillId === "string"),
      );
    const was = skillIds(a);
    const now = skillIds(b);
    return {
      changes,
      skills: { added: [...now].filter((x) => !was.has(x)), removed: [...was].filter((x) => !now.has(x)) },
    };
  }

  const SYSTEM_CALLER: Caller = {
    kind: "client",
    clientId: "system:drift",
    scopes: [],
    admin: true,
    tokenId: "",
  };

  /**
   * Re-fetches a card published by URL (the owner's refresh, or the prober's drift check). A changed
   * card that validates, verifies and carries a new version becomes that version; anything else is
   * recorded as drift on the record without touching the stored card.
   */
  async function refreshFromUrl(
    ctx: WriteContext | null,
    id: string,
  ): Promise<CardDiff & { agent: SerializedAgent }> {
    const current = ctx
      ? await database.db.transaction((tx) => loadForWrite(id, ctx.caller, tx))
      : await repo.findLive(id);
    if (!current) throw new ApiError("NOT_FOUND", `No agent ${id}`);
    if (!current.cardUrl)
      throw new ApiError(
        "VALIDATION_FAILED",
        "This agent was published with an inline card: there is no cardUrl to refresh from",
        {
          errors: [
            {
              path: "/cardUrl",
              message: "publish or update with cardUrl to enable refresh and drift checks",
            },
          ],
        },
      );
    const fetched = await resolveCard({ cardUrl: current.cardUrl }, undefined);
    const hash = cardHash(fetched.card);
    const diff = diffCards(JSON.parse(current.cardRaw), fetched.card);
    const base = {
      previousVersion: current.latestVersion,
      previousCardHash: current.cardHash,
      cardHash: hash,
      ...diff,
    };
    if (hash === current.cardHash) {
      metrics.driftChecks.inc({ result: "unchanged" });
      const cleared = current.drift ? await writeMaintained(id, { drift: null }, null) : null;
      return {
        outcome: "unchanged",
        version: current.latestVersion,
        drift: null,
        agent: cleared?.agent ?? (await getFresh(id)),
        ...base,
      };
    }
    const recordDrift = async (reason: string, version: string) => {
      metrics.driftChecks.inc({ result: "drift" });
      const drift = { detectedAt: new Date().toISOString(), reason, fetchedHash: hash };
      const same = (current.drift as { reason?: string; fetchedHash?: string } | null) ?? null;
      const written =
        same?.reason === reason && same.fetchedHash === hash
          ? null
          : await writeMaintained(id, { drift }, null, {
              actor: ctx ? actorOf(ctx.caller) : "system:drift",
              action: "agent.drift_detected",
              details: { reason, fetchedHash: hash, cardUrl: current.cardUrl },
            });
      return {
        outcome: "drift" as const,
        version,
        drift: (written?.row.drift as CardDiff["drift"]) ?? (current.drift as CardDiff["drift"]),
        agent: written?.agent ?? (await getFresh(id)),
        ...base,
      };
    };
    const duplicate = duplicateMemberPath(fetched.cardText);
    if (duplicate !== undefined)
      return recordDrift(
        `the card at cardUrl has a duplicated member name at ${duplicate}`,
        current.latestVersion,
      );
    const analysis = analyzeCard(fetched.card);
    if (!analysis.ok)
      return recordDrift(
        `the card at cardUrl no longer validates: ${analysis.errors
          .slice(0, 3)
          .map((e) => `${e.path || "/"} ${e.message}`)
          .join("; ")}`,
        current.latestVersion,
      );
    const existing = await repo.findVersion(id, analysis.version);
    if (existing && existing.cardHash !== hash)
      return recordDrift(
        `the card changed but kept version ${analysis.version}, which is already stored with other content`,
        analysis.version,
      );
    try {
      const agent = await applyCard(
        ctx ?? { caller: SYSTEM_CALLER, requestId: "drift", ip: null },
        id,
        fetched,
        {
          allowInvalidSignature: false,
        },
      );
      metrics.driftChecks.inc({ result: "updated" });
      return { outcome: "updated", version: analysis.version, drift: null, agent, ...base };
    } catch (error) {
      if (error instanceof ApiError && (error.code === "INVALID_SIGNATURE" || error.code === "AGENT_EXISTS"))
        return recordDrift(error.message, analysis.version);
      throw error;
    }
  }

  /**
   * For agents written outside this service (federated copies applied by the sync engine): after their
   * transaction commits, brings the cache and the search index up to what Postgres now holds.
   */
  async function changedElsewhere(ids: string[]) {
    // Without a shared layer only this process's L1 can be stale: dropping its entries is enough, and
    // cheaper than loading and serialising hundreds of records (a sync page) that few will read soon.
    if (!cache.shared) await cache.forget(ids);
    // With one, write through like any write, so every instance reads the new bytes from Redis. In
    // batches, one query each and the cache updates side by side.
    else
      for (let start = 0; start < ids.length; start += 500) {
        const batch = ids.slice(start, start + 500);
        const rows = new Map((await repo.findManyAny(batch)).map((row) => [row.id, row]));
        const entitled = await repo.entitledClientsOf(
          [...rows.values()].filter((row) => !row.deletedAt).map((row) => row.id),
        );
        await Promise.all(
          batch.map((id) => {
            const row = rows.get(id);
            if (!row) return cache.remove(id, Number.MAX_SAFE_INTEGER);
            if (row.deletedAt) return cache.remove(id, row.seq);
            return cache.write(id, serializeAgent(row, config.registryId, entitled.get(id) ?? []));
          }),
        );
      }
    // The writer's transaction has committed: queue, then index, so a failure still leaves it queued.
    await searchIndex.enqueue(ids, database.db);
    await searchIndex.changed(ids);
  }

  /** The record as Postgres has it now, for the cache to fill from; null when absent or deleted. */
  async function load(id: string): Promise<SerializedAgent | null> {
    const row = await repo.findLive(id);
    if (!row) return null;
    return serializeAgent(row, config.registryId, await repo.entitledClients(id));
  }

  async function getFresh(id: string) {
    const agent = await load(id);
    if (!agent) throw new ApiError("NOT_FOUND", `No agent ${id}`);
    return agent;
  }

  /**
   * The hot path: answered from this process's memory without awaiting, or undefined to go async.
   * Not counted in the cache metrics: the hot path counts what it answers, the routed path its own.
   */
  function peek(caller: Caller, id: string): SerializedAgent | undefined {
    const agent = cache.peek(id, load, false);
    return agent && canSee(agent, caller) ? agent : undefined;
  }

  async function get(caller: Caller, id: string) {
    const agent = UUID_PATTERN.test(id) ? await cache.get(id, load) : null;
    if (!agent || !canSee(agent, caller)) throw new ApiError("NOT_FOUND", `No agent ${id}`);
    return agent;
  }

  async function versions(caller: Caller, id: string) {
    await get(caller, id);
    const items = await repo.listVersions(id);
    return {
      items: items.map((v) => ({
        version: v.version,
        cardHash: v.cardHash,
        createdAt: v.createdAt.toISOString(),
      })),
    };
  }

  async function version(caller: Caller, id: string, versionName: string) {
    const agent = await get(caller, id);
    const found = await repo.findVersion(id, versionName);
    if (!found) throw new ApiError("NOT_FOUND", `Agent ${id} has no version ${versionName}`);
    return { cardRaw: found.cardRaw, etag: `"${found.cardHash.slice(0, 40)}"`, visibility: agent.visibility };
  }

  async function list(caller: Caller, filters: ListFilters) {
    const limit = filters.limit ?? 20;
    const afterSeq = decodeCursor(filters.cursor);
    const rows = await repo.list(caller, filters, afterSeq, limit + 1);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    return {
      items: page.map((row) => recordBody(row, config.registryId)),
      nextCursor: rows.length > limit && last ? encodeCursor(last.seq) : null,
    };
  }

  async function entitlementsOf(ctx: WriteContext, id: string) {
    await database.db.transaction((tx) => loadForWrite(id, ctx.caller, tx));
    const items = await repo.listEntitlements(id);
    return { items: items.map((e) => ({ clientId: e.clientId, createdAt: e.createdAt.toISOString() })) };
  }

  async function setEntitlement(ctx: WriteContext, id: string, clientId: string, granted: boolean) {
    const touched = await database.db.transaction(async (tx) => {
      await loadForWrite(id, ctx.caller, tx);
      if (granted && !(await clients.findByClientId(clientId, tx)))
        throw new ApiError("NOT_FOUND", `No client ${clientId}`);
      const changed = granted ? await repo.grant(id, clientId, tx) : await repo.revoke(id, clientId, tx);
      if (!granted && !changed)
        throw new ApiError("NOT_FOUND", `Client ${clientId} is not entitled to ${id}`);
      if (!changed) return null;
      // What this client may see changed: the change feed must carry the agent again.
      const row = await repo.touch(id, tx);
      await searchIndex.enqueue([id], tx);
      await audit.record(
        {
          actor: actorOf(ctx.caller),
          action: granted ? "agent.entitlement_granted" : "agent.entitlement_revoked",
          target: id,
          outcome: "success",
          ip: ctx.ip,
          requestId: ctx.requestId,
          details: { clientId },
        },
        tx,
      );
      return { row, entitled: await repo.entitledClients(id, tx) };
    });
    if (!touched) return;
    await cache.write(id, serializeAgent(touched.row, config.registryId, touched.entitled));
    await searchIndex.changed([id]);
  }

  async function publicIndex(cursor: string | undefined, limit: number) {
    const afterSeq = decodeCursor(cursor);
    const rows = await repo.listPublicIndex(afterSeq, limit + 1);
    const page = rows.slice(0, limit);
    return {
      agents: page.map(({ seq: _seq, ...agent }) => agent),
      count: await repo.countPublicActive(),
      nextCursor: rows.length > limit && page.length > 0 ? encodeCursor(page.at(-1)!.seq) : null,
    };
  }

  return {
    publish,
    update,
    patch,
    remove,
    get,
    peek,
    versions,
    version,
    list,
    entitlementsOf,
    setEntitlement,
    publicIndex,
    changedElsewhere,
    setHealth,
    heartbeat,
    refreshFromUrl,
    countByStatus: () => repo.countByStatus(),
  };
}

export type AgentsService = ReturnType<typeof createAgentsService>;

export function encodeCursor(seq: number): string {
  return Buffer.from(`s:${seq}`).toString("base64url");
}

export function decodeCursor(cursor: string | undefined): number | undefined {
  if (cursor === undefined || cursor === "") return undefined;
  const text = Buffer.from(cursor, "base64url").toString("utf8");
  const match = /^s:([0-9]{1,18})$/.exec(text);
  if (!match)
    throw new ApiError("VALIDATION_FAILED", "Malformed cursor", {
      errors: [{ path: "/query/cursor", message: "Not a cursor this registry issued" }],
    });
  return Number(match[1]);
}
