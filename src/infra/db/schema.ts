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
    card: jsonb("card").notNull(),
    /** The card's exact bytes as published, so `/card` returns them verbatim (jsonb reorders keys). */
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
    searchDoc: tsvector("search_doc"),
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
    index("agents_search_doc_gin").using("gin", t.searchDoc),
    index("agents_name_trgm").using("gin", sql`lower(${t.name}) gin_trgm_ops`),
  ],
);

export const agentVersions = pgTable(
  "agent_versions",
  {
    id: bigserial("id", { mode: "number" }).primaryKey(),
    agentId: uuid("agent_id")
      .notNull()
      .references(() => agents.id, { onDelete: "cascade" }),
    version: text("version").notNull(),
    card: jsonb("card").notNull(),
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

export type AgentRow = typeof agents.$inferSelect;
export type ClientRow = typeof clients.$inferSelect;
export type AuditRow = typeof auditLog.$inferSelect;
