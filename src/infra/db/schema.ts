import { sql } from "drizzle-orm";
import {
  bigint,
  bigserial,
  boolean,
  customType,
  index,
  integer,
  jsonb,
  pgSequence,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

const tsvector = customType<{ data: string }>({ dataType: () => "tsvector" });
const timestamptz = (name: string) => timestamp(name, { withTimezone: true, mode: "date" });

/** Bumped on every change to an agent, inside the writing transaction: the change feed's order. */
export const agentSeq = pgSequence("agent_seq", { startWith: 1, increment: 1 });

export const clients = pgTable("clients", {
  id: uuid("id").primaryKey(),
  clientId: text("client_id").notNull().unique(),
  secretHash: text("secret_hash").notNull(),
  name: text("name").notNull(),
  scopes: text("scopes").array().notNull(),
  disabled: boolean("disabled").notNull().default(false),
  createdAt: timestamptz("created_at").notNull().defaultNow(),
  disabledAt: timestamptz("disabled_at"),
});

export const agents = pgTable(
  "agents",
  {
    id: uuid("id").primaryKey(),
    owner: text("owner"),
    name: text("name").notNull(),
    description: text("description").notNull().default(""),
    url: text("url").notNull(),
    /** Set when the card was published by URL: where drift checks re-fetch it. */
    cardUrl: text("card_url"),
    visibility: text("visibility", { enum: ["public", "private"] }).notNull(),
    status: text("status", { enum: ["active", "deprecated", "deleted"] }).notNull(),
    statusMessage: text("status_message"),
    generation: text("generation", { enum: ["1.0", "0.3", "0.2"] }).notNull(),
    protocolVersion: text("protocol_version"),
    latestVersion: text("latest_version").notNull(),
    /**
     * The card's exact bytes as published: `/card` returns them verbatim, and this is the only stored
     * copy (code that needs the parsed card parses it; a jsonb copy cost every write for nothing).
     */
    cardRaw: text("card_raw").notNull(),
    cardHash: text("card_hash").notNull(),
    skills: text("skills").array().notNull(),
    tags: text("tags").array().notNull(),
    inputModes: text("input_modes").array().notNull(),
    outputModes: text("output_modes").array().notNull(),
    /**
     * skills, tags and modes again as "skill:x", "tag:x", "in:x", "out:x": one GIN index serves every
     * filter, where one index per array made each publish pay for four index insertions.
     */
    facetKeys: text("facet_keys").array().notNull().default(sql`'{}'::text[]`),
    streaming: boolean("streaming").notNull(),
    provider: text("provider"),
    signature: text("signature", { enum: ["none", "valid", "invalid"] })
      .notNull()
      .default("none"),
    signatureKid: text("signature_kid"),
    health: text("health", { enum: ["unknown", "up", "down"] })
      .notNull()
      .default("unknown"),
    checkedAt: timestamptz("checked_at"),
    originRegistry: text("origin_registry"),
    originId: text("origin_id"),
    seq: bigint("seq", { mode: "number" }).notNull(),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
    updatedAt: timestamptz("updated_at").notNull().defaultNow(),
    deletedAt: timestamptz("deleted_at"),
    /** Host whose /.well-known/jwks.json holds the key that verified the card's signature. */
    signatureDomain: text("signature_domain"),
    /** Why the signature is not valid (failed check, or key set unreachable at publish time). */
    signatureError: text("signature_error"),
    /** The last failed probe's error while the agent is failing (cleared when it answers again). */
    healthError: text("health_error"),
    /** When the current run of failed probes began: down is declared after HEALTH_DOWN_AFTER_SECONDS. */
    failingSince: timestamptz("failing_since"),
    /** Owner heartbeats keep the agent up until then without probes (TTL style). */
    heartbeatExpiresAt: timestamptz("heartbeat_expires_at"),
    /** When the prober (and, for cards published by URL, the drift check) next looks at the agent. */
    nextProbeAt: timestamptz("next_probe_at"),
    /** A re-fetched card that differs from the stored one and could not become a version: why. */
    drift: jsonb("drift"),
    /**
     * Whether the agent was ever public (kept by the agents_feed_stamp trigger). The change feed shows
     * an invisible agent as a delete only to callers who could have seen it: once public is enough.
     */
    everPublic: boolean("ever_public").notNull().default(false),
  },
  (t) => [
    uniqueIndex("agents_live_local_url_key")
      .on(t.url)
      .where(sql`${t.deletedAt} is null and ${t.originRegistry} is null`),
    uniqueIndex("agents_origin_key")
      .on(t.originRegistry, t.originId)
      .where(sql`${t.originRegistry} is not null`),
    uniqueIndex("agents_seq_key").on(t.seq),
    index("agents_owner_idx").on(t.owner),
    index("agents_updated_at_idx").on(t.updatedAt),
    index("agents_facet_keys_gin").using("gin", t.facetKeys),
    index("agents_next_probe_idx")
      .on(t.nextProbeAt)
      .where(sql`${t.deletedAt} is null and ${t.originRegistry} is null`),
    /** Tombstone purge (change feed retention) finds old deletions without scanning live rows. */
    index("agents_deleted_at_idx").on(t.deletedAt).where(sql`${t.deletedAt} is not null`),
  ],
);

/**
 * What the Postgres search backend reads: one narrow row per live agent (deleted ones have none), kept
 * by triggers on `agents` in the writing statement (migration 0007), so search is read-your-writes.
 * Search walks thousands of rows for a broad word; over the wide agents rows (card text, timestamps,
 * probe state) that read several times the pages, more than shared buffers hold at 100k agents. The
 * weighted document is derived here and only here (`agent_search_document()`), from the agent's name,
 * skills, tags and description; `bun run cli reindex` rebuilds every row from `agents`.
 */
/** kB of entries a GIN index of agent_search holds unmerged (see its indexes). */
const GIN_PENDING = { gin_pending_list_limit: 128 };

export const agentSearch = pgTable(
  "agent_search",
  {
    id: uuid("id").primaryKey(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    visibility: text("visibility", { enum: ["public", "private"] }).notNull(),
    owner: text("owner"),
    status: text("status", { enum: ["active", "deprecated", "deleted"] }).notNull(),
    health: text("health", { enum: ["unknown", "up", "down"] }).notNull(),
    streaming: boolean("streaming").notNull(),
    signature: text("signature", { enum: ["none", "valid", "invalid"] }).notNull(),
    provider: text("provider"),
    /** The name lower-cased: what the trigram index, the name tests and the similarity scores read. */
    name: text("name").notNull(),
    /**
     * The agent's facet values by their number in facet_values: its facet keys (agents.facet_keys) and
     * "provider:<name>". What the skill, tag and mode filters test and what facets count: a search
     * counts thousands of values, and as numbers they travel and count at a fraction of what the texts
     * cost; the row, the walks read thousands of, is about 40 % narrower than with the texts.
     */
    facetIds: integer("facet_ids").array().notNull().default(sql`'{}'::integer[]`),
    /** Name (weight A), skills and tags (B), description (C). */
    searchDoc: tsvector("search_doc").notNull(),
  },
  (t) => [
    index("agent_search_seq_idx").on(t.seq),
    // Every search reads these text, facet and name indexes, and each read also goes through the
    // entries written since the last merge (GIN's pending list). Its default of 4 MB let 2,000 changed
    // agents slow every search by a sixth until a vacuum; merged every 128 kB, writes pay a little more.
    index("agent_search_doc_gin").using("gin", t.searchDoc).with(GIN_PENDING),
    index("agent_search_facet_ids_gin").using("gin", t.facetIds).with(GIN_PENDING),
    index("agent_search_name_trgm").using("gin", sql`${t.name} gin_trgm_ops`).with(GIN_PENDING),
    // The words of the name: which agents have every query word in their name (the ranked name part).
    index("agent_search_name_words").using("gin", sql`to_tsvector('simple', ${t.name})`).with(GIN_PENDING),
    // The provider filter compares case-insensitively.
    index("agent_search_provider_idx").using("btree", sql`lower(${t.provider})`),
  ],
);

/**
 * Every facet value ("tag:weather", "provider:Acme", ...) an agent has had, numbered once and never
 * renumbered: agent_search.facet_ids refers to them, and the search backend keeps the texts of the
 * numbers it has seen. Values no agent has any more stay (they are counted by no one).
 */
export const facetValues = pgTable("facet_values", {
  id: integer("id").primaryKey().generatedAlwaysAsIdentity(),
  key: text("key").notNull().unique(),
});

/**
 * Every lexeme any search document has held (agent_search.search_doc), kept by a trigger on agent_search
 * in the writing statement. A query's last word matches as a prefix; the text index serves a prefix
 * only by reading every posting of every word it starts, where the words themselves, looked up here,
 * are read like any other word. Lexemes no document holds any more stay: a superset is still exact.
 * Bytewise order (text_pattern_ops), so a prefix is one range of the index whatever the collation.
 */
export const searchLexemes = pgTable("search_lexemes", { lexeme: text("lexeme").notNull() }, (t) => [
  uniqueIndex("search_lexemes_lexeme_key").using("btree", t.lexeme.op("text_pattern_ops")),
]);

export const agentVersions = pgTable(
  "agent_versions",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    agentId: uuid("agent_id")
      .notNull()
      .references(() => agents.id, { onDelete: "cascade" }),
    version: text("version").notNull(),
    /** The version's card as published (its only stored copy, like agents.card_raw). */
    cardRaw: text("card_raw").notNull(),
    cardHash: text("card_hash").notNull(),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
  },
  (t) => [uniqueIndex("agent_versions_agent_version_key").on(t.agentId, t.version)],
);

export const entitlements = pgTable(
  "entitlements",
  {
    clientId: text("client_id")
      .notNull()
      .references(() => clients.clientId, { onDelete: "cascade" }),
    agentId: uuid("agent_id")
      .notNull()
      .references(() => agents.id, { onDelete: "cascade" }),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.agentId, t.clientId] }), index("entitlements_client_idx").on(t.clientId)],
);

export const auditLog = pgTable(
  "audit_log",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    at: timestamptz("at").notNull().defaultNow(),
    actor: text("actor").notNull(),
    action: text("action").notNull(),
    target: text("target"),
    ip: text("ip"),
    requestId: text("request_id"),
    outcome: text("outcome", { enum: ["success", "failure"] }).notNull(),
    details: jsonb("details").notNull().default({}),
  },
  (t) => [index("audit_log_action_idx").on(t.action, t.id), index("audit_log_actor_idx").on(t.actor, t.id)],
);

/**
 * Agents whose latest change has not reached Elasticsearch yet. Written in the same transaction as the
 * change (only when Elasticsearch is the search backend), so a crash between commit and indexing loses
 * nothing; one row per agent, holding the newest seq to index.
 */
export const searchOutbox = pgTable(
  "search_outbox",
  {
    agentId: uuid("agent_id").primaryKey(),
    seq: bigint("seq", { mode: "number" }).notNull(),
    enqueuedAt: timestamptz("enqueued_at").notNull().defaultNow(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    nextAttemptAt: timestamptz("next_attempt_at").notNull().defaultNow(),
  },
  (t) => [index("search_outbox_next_attempt_idx").on(t.nextAttemptAt)],
);

/** Owner- or admin-registered receivers of agent events (src/modules/webhooks). */
export const webhooks = pgTable(
  "webhooks",
  {
    id: uuid("id").primaryKey(),
    owner: text("owner")
      .notNull()
      .references(() => clients.clientId, { onDelete: "cascade" }),
    url: text("url").notNull(),
    events: text("events").array().notNull(),
    /** The HMAC key, AES-GCM encrypted under a key derived from SECRET_KEY; shown once at creation. */
    secretEnc: text("secret_enc").notNull(),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
  },
  (t) => [index("webhooks_owner_idx").on(t.owner)],
);

/**
 * The delivery outbox and log in one: rows are written in the transaction of the change they announce,
 * so a committed change is delivered at least once, across restarts; the worker updates them in place.
 */
export const webhookDeliveries = pgTable(
  "webhook_deliveries",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    webhookId: uuid("webhook_id")
      .notNull()
      .references(() => webhooks.id, { onDelete: "cascade" }),
    event: text("event").notNull(),
    agentId: uuid("agent_id"),
    /** The exact bytes sent (and signed) on every attempt. */
    payload: text("payload").notNull(),
    status: text("status", { enum: ["pending", "delivered", "failed"] })
      .notNull()
      .default("pending"),
    attempts: integer("attempts").notNull().default(0),
    nextAttemptAt: timestamptz("next_attempt_at").notNull().defaultNow(),
    lastStatusCode: integer("last_status_code"),
    lastError: text("last_error"),
    createdAt: timestamptz("created_at").notNull().defaultNow(),
    deliveredAt: timestamptz("delivered_at"),
  },
  (t) => [
    index("webhook_deliveries_due_idx").on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
    index("webhook_deliveries_webhook_idx").on(t.webhookId, t.id),
  ],
);

export type AgentRow = typeof agents.$inferSelect;
export type ClientRow = typeof clients.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;

// ---------------------------------------------------------------------------------------------------
// Federation (src/modules/federation)
// ---------------------------------------------------------------------------------------------------

/** Registries this one pulls agents from. The client secret is AES-GCM encrypted (federation/crypto.ts). */
export const peers = pgTable("peers", {
  id: uuid("id").primaryKey(),
  name: text("name").notNull(),
  baseUrl: text("base_url").notNull().unique(),
  clientId: text("client_id").notNull(),
  clientSecretEnc: text("client_secret_enc").notNull(),
  /** The peer's registry id (its records' source.registry), pinned when first seen; keys its copies. */
  registryId: text("registry_id").unique(),
  enabled: boolean("enabled").notNull().default(true),
  /** Null: FEDERATION_INTERVAL_SECONDS. */
  intervalS: integer("interval_s"),
  /** The peer's change feed cursor: everything up to it is applied here (advanced in the same transaction). */
  lastSeq: bigint("last_seq", { mode: "number" }).notNull().default(0),
  lastSyncAt: timestamptz("last_sync_at"),
  lastSuccessAt: timestamptz("last_success_at"),
  lastStatus: text("last_status", { enum: ["never", "running", "success", "failed"] })
    .notNull()
    .default("never"),
  lastError: text("last_error"),
  /** Live copies of this peer's agents held here. */
  agentsSynced: integer("agents_synced").notNull().default(0),
  /** Changes known to be waiting in the peer's feed after the last run (0 when it was drained). */
  lagChanges: integer("lag_changes").notNull().default(0),
  /** Consecutive failed runs: drives the backoff. */
  failures: integer("failures").notNull().default(0),
  nextSyncAt: timestamptz("next_sync_at").notNull().defaultNow(),
  /**
   * Set while re-reading the peer's feed from 0 after 410 CURSOR_EXPIRED: the agents sequence value at
   * the start. Copies still older than it when the snapshot ends were deleted upstream and are swept.
   */
  resnapshotFrom: bigint("resnapshot_from", { mode: "number" }),
  createdAt: timestamptz("created_at").notNull().defaultNow(),
});

/** One row per sync run of a peer (history; pruned by the federation maintenance job). */
export const peerSyncs = pgTable(
  "peer_syncs",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    peerId: uuid("peer_id")
      .notNull()
      .references(() => peers.id, { onDelete: "cascade" }),
    startedAt: timestamptz("started_at").notNull().defaultNow(),
    finishedAt: timestamptz("finished_at"),
    status: text("status", { enum: ["running", "success", "failed", "aborted"] }).notNull(),
    fromSeq: bigint("from_seq", { mode: "number" }).notNull(),
    toSeq: bigint("to_seq", { mode: "number" }),
    pages: integer("pages").notNull().default(0),
    added: integer("added").notNull().default(0),
    updated: integer("updated").notNull().default(0),
    removed: integer("removed").notNull().default(0),
    skipped: integer("skipped").notNull().default(0),
    error: text("error"),
    /** Which registry process ran it (host:pid), for operators and the one-sync-per-interval check. */
    instance: text("instance").notNull(),
  },
  (t) => [index("peer_syncs_peer_idx").on(t.peerId, t.id)],
);

/**
 * The change feed's horizon: the highest seq among purged tombstones. A `since` below it (other than 0)
 * may have missed a deletion, so the feed answers 410 CURSOR_EXPIRED and the puller re-snapshots.
 */
export const feedHorizon = pgTable("feed_horizon", {
  id: integer("id").primaryKey(),
  purgedSeq: bigint("purged_seq", { mode: "number" }).notNull().default(0),
  purgedAt: timestamptz("purged_at"),
});

/**
 * Clients whose entitlement to an agent was withdrawn (kept by a trigger on entitlements): the change
 * feed shows them the agent as a delete, which it shows to no one who never could see it.
 */
export const entitlementRevocations = pgTable(
  "entitlement_revocations",
  {
    agentId: uuid("agent_id")
      .notNull()
      .references(() => agents.id, { onDelete: "cascade" }),
    clientId: text("client_id").notNull(),
    revokedAt: timestamptz("revoked_at").notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.agentId, t.clientId] })],
);

export type PeerRow = typeof peers.$inferSelect;
export type PeerSyncRow = typeof peerSyncs.$inferSelect;
