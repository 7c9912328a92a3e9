import {
  and,
  arrayContains,
  desc,
  eq,
  getTableColumns,
  gte,
  inArray,
  isNull,
  lt,
  type SQL,
  sql,
} from "drizzle-orm";
import { PgDialect } from "drizzle-orm/pg-core";
import type { AuditEvent } from "../../infra/audit";
import { type Database, type Executor, runStatement } from "../../infra/db/client";
import { type AgentRow, type agentSearch, agents, agentVersions, entitlements } from "../../infra/db/schema";
import type { Caller } from "../auth/model";
import type { SearchFilters } from "../search/model";
import type { ListFilters } from "./model";

const columns = getTableColumns(agents);
/**
 * What a list page and the change feed read: exactly the columns a record shows (recordBody) and its
 * seq (cursor, feed position). Not the search document nor the facet arrays, which they never show:
 * decoding them cost more than the rest of the row.
 */
export const LISTED_COLUMNS = {
  id: columns.id,
  seq: columns.seq,
  name: columns.name,
  description: columns.description,
  url: columns.url,
  visibility: columns.visibility,
  status: columns.status,
  statusMessage: columns.statusMessage,
  latestVersion: columns.latestVersion,
  generation: columns.generation,
  protocolVersion: columns.protocolVersion,
  cardHash: columns.cardHash,
  cardRaw: columns.cardRaw,
  signature: columns.signature,
  signatureKid: columns.signatureKid,
  signatureDomain: columns.signatureDomain,
  signatureError: columns.signatureError,
  health: columns.health,
  checkedAt: columns.checkedAt,
  healthError: columns.healthError,
  drift: columns.drift,
  originRegistry: columns.originRegistry,
  originId: columns.originId,
  owner: columns.owner,
  createdAt: columns.createdAt,
  updatedAt: columns.updatedAt,
} satisfies Partial<typeof columns>;
/** A record's columns: what `recordBody` renders. */
export type RecordRow = { [K in keyof typeof LISTED_COLUMNS]: AgentRow[K] };

type AgentFilters = Omit<ListFilters, "limit" | "cursor" | "updatedSince"> & Pick<SearchFilters, "signature">;

export type AgentInsert = Omit<typeof agents.$inferInsert, "seq">;

/**
 * Who may see an agent: everyone for public ones; for private ones the owner, entitled clients and
 * admins. Applied inside every query, so counts, pages and cursors never reveal hidden rows.
 */
export function visibleTo(caller: Caller, table: Searchable = agents): SQL | undefined {
  if (caller.kind === "client" && caller.admin) return undefined;
  if (caller.kind !== "client") return sql`${table.visibility} = 'public'`;
  return sql`(${table.visibility} = 'public' or ${table.owner} = ${caller.clientId} or exists (
    select 1 from ${entitlements} e where e.agent_id = ${table.id} and e.client_id = ${caller.clientId}))`;
}

/**
 * The columns visibility and the attribute filters read, which `agents` and its search row
 * (`agent_search`) share, so the same conditions apply to either.
 */
type Searchable = Pick<
  typeof agents | typeof agentSearch,
  "id" | "visibility" | "owner" | "streaming" | "provider" | "status" | "health" | "signature"
>;

const nextSeq = sql`nextval('agent_seq')`;

/** The single indexed array behind every skill/tag/mode filter; see agents.facetKeys. */
export function facetKeysOf(values: {
  skills: string[];
  tags: string[];
  inputModes: string[];
  outputModes: string[];
}) {
  return [
    ...values.skills.map((v) => `skill:${v}`),
    ...values.tags.map((v) => `tag:${v}`),
    ...values.inputModes.map((v) => `in:${v}`),
    ...values.outputModes.map((v) => `out:${v}`),
  ];
}

/** The facet keys (as facetKeysOf writes them) an agent must all have to pass the skill, tag and mode filters. */
export function wantedFacetKeys(filters: AgentFilters): string[] {
  const wanted: string[] = [];
  if (filters.skill) wanted.push(`skill:${filters.skill.trim().toLowerCase()}`);
  if (filters.tag) wanted.push(`tag:${filters.tag.trim().toLowerCase()}`);
  if (filters.inputMode) wanted.push(`in:${filters.inputMode.trim().toLowerCase()}`);
  if (filters.outputMode) wanted.push(`out:${filters.outputMode.trim().toLowerCase()}`);
  return wanted;
}

/** The filters of a listing; case-insensitive like the stored facet values. */
export function filterConditions(filters: AgentFilters): SQL[] {
  const wanted = wantedFacetKeys(filters);
  return [
    ...(wanted.length > 0 ? [arrayContains(agents.facetKeys, wanted)] : []),
    ...attributeConditions(filters, agents),
  ];
}

/**
 * The filters other than facets, shared by listing and search (which tests facets on numbers, see
 * agent_search.facet_ids).
 */
export function attributeConditions(filters: AgentFilters, table: Searchable): SQL[] {
  const conditions: SQL[] = [];
  if (filters.streaming !== undefined) conditions.push(eq(table.streaming, filters.streaming));
  if (filters.provider)
    conditions.push(sql`lower(${table.provider}) = ${filters.provider.trim().toLowerCase()}`);
  if (filters.status) conditions.push(eq(table.status, filters.status));
  if (filters.health) conditions.push(eq(table.health, filters.health));
  if (filters.signature) conditions.push(eq(table.signature, filters.signature));
  return conditions;
}

/** A validated publish: the agent row to insert and the audit event that records it. */
export type NewAgent = { values: AgentInsert; audit: AuditEvent };

/**
 * The publish of many agents as one statement: their rows, first versions and audit rows from one JSON
 * parameter, so the text never changes (prepared once per connection) and nothing is built per call.
 * A url already live, or repeated in the batch, leaves its row out (on conflict do nothing); versions
 * and audit rows follow only the rows inserted. Rows go in `ord` order, the caller's lock order.
 */
const INSERT_PUBLISHED = new PgDialect().sqlToQuery(sql`with input as (
    select * from jsonb_to_recordset(${sql.raw("$1")}::text::jsonb) as x(
      ord int, id uuid, owner text, name text, description text, url text, card_url text, visibility text,
      status text, generation text, protocol_version text, latest_version text, card_raw text,
      card_hash text, skills text[], tags text[], input_modes text[], output_modes text[], facet_keys text[],
      streaming boolean, provider text, signature text, signature_kid text, signature_domain text,
      signature_error text, audit_actor text, audit_action text, audit_outcome text, audit_ip text,
      audit_request_id text, audit_details jsonb)
  ),
  inserted as (
    insert into agents (id, owner, name, description, url, card_url, visibility, status, generation,
      protocol_version, latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes,
      facet_keys, streaming, provider, signature, signature_kid, signature_domain, signature_error, seq)
    select id, owner, name, description, url, card_url, visibility, status, generation, protocol_version,
      latest_version, card_raw, card_hash, skills, tags, input_modes, output_modes, facet_keys,
      -- seq 0: the agents_feed_stamp trigger gives every row it writes the next seq (0 is never a row's).
      streaming, provider, signature, signature_kid, signature_domain, signature_error, 0
    from input order by ord
    on conflict do nothing
    returning id, seq, created_at, updated_at
  ),
  versions as (
    insert into agent_versions (agent_id, version, card_raw, card_hash)
    select i.id, i.latest_version, i.card_raw, i.card_hash from input i join inserted using (id)
  ),
  audited as (
    insert into audit_log (actor, action, target, outcome, ip, request_id, details)
    select i.audit_actor, i.audit_action, i.id::text, i.audit_outcome, i.audit_ip, i.audit_request_id,
      i.audit_details
    from input i join inserted using (id) order by i.ord
  )
  select id, seq::text as seq,
    -- Milliseconds as text: the drivers disagree on timestamp values, and Date keeps milliseconds.
    floor(extract(epoch from created_at) * 1000)::text as created_ms,
    floor(extract(epoch from updated_at) * 1000)::text as updated_ms
  from inserted`).sql;

/** The full row of a just-inserted agent: its values, the column defaults, and what Postgres stamped. */
function newAgentRow(
  values: AgentInsert,
  facetKeys: string[],
  seq: number,
  createdAt: Date,
  updatedAt: Date,
): AgentRow {
  return {
    owner: null,
    description: "",
    cardUrl: null,
    statusMessage: null,
    protocolVersion: null,
    provider: null,
    signature: "none",
    signatureKid: null,
    health: "unknown",
    checkedAt: null,
    originRegistry: null,
    originId: null,
    deletedAt: null,
    signatureDomain: null,
    signatureError: null,
    healthError: null,
    failingSince: null,
    heartbeatExpiresAt: null,
    nextProbeAt: null,
    drift: null,
    ...values,
    // What the agents_feed_stamp trigger sets: true once the agent is public.
    everPublic: values.everPublic === true || values.visibility === "public",
    facetKeys,
    seq,
    createdAt,
    updatedAt,
  };
}

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function agentsRepo(database: Database) {
  const { db } = database;
  return {
    /** A live (not deleted) agent the caller may see, or undefined: hidden and missing look the same. */
    async findVisible(id: string, caller: Caller, executor: Executor = db) {
      if (!UUID_PATTERN.test(id)) return undefined;
      const rows = await executor
        .select()
        .from(agents)
        .where(and(eq(agents.id, id), isNull(agents.deletedAt), visibleTo(caller)))
        .limit(1);
      return rows[0];
    },
    async findLive(id: string, executor: Executor = db) {
      if (!UUID_PATTERN.test(id)) return undefined;
      const rows = await executor
        .select()
        .from(agents)
        .where(and(eq(agents.id, id), isNull(agents.deletedAt)))
        .limit(1);
      return rows[0];
    },
    /** The row whatever its state (deleted included), for re-syncing caches after outside writes. */
    async findAny(id: string, executor: Executor = db) {
      if (!UUID_PATTERN.test(id)) return undefined;
      const rows = await executor.select().from(agents).where(eq(agents.id, id)).limit(1);
      return rows[0];
    },
    /** Many rows whatever their state, in one query (cache re-sync after a federation page). */
    async findManyAny(ids: string[], executor: Executor = db) {
      const valid = ids.filter((id) => UUID_PATTERN.test(id));
      if (valid.length === 0) return [];
      return executor.select().from(agents).where(inArray(agents.id, valid));
    },
    /** Entitled clients of many agents in one query: agent id -> client ids (sorted). */
    async entitledClientsOf(agentIds: string[], executor: Executor = db) {
      const byAgent = new Map<string, string[]>();
      if (agentIds.length === 0) return byAgent;
      const rows = await executor
        .select({ agentId: entitlements.agentId, clientId: entitlements.clientId })
        .from(entitlements)
        .where(inArray(entitlements.agentId, agentIds))
        .orderBy(entitlements.clientId);
      for (const row of rows) byAgent.set(row.agentId, [...(byAgent.get(row.agentId) ?? []), row.clientId]);
      return byAgent;
    },
    async entitledClients(agentId: string, executor: Executor = db) {
      const rows = await executor
        .select({ clientId: entitlements.clientId })
        .from(entitlements)
        .where(eq(entitlements.agentId, agentId))
        .orderBy(entitlements.clientId);
      return rows.map((r) => r.clientId);
    },
    async lockLive(id: string, executor: Executor) {
      if (!UUID_PATTERN.test(id)) return undefined;
      const rows = await executor
        .select()
        .from(agents)
        .where(and(eq(agents.id, id), isNull(agents.deletedAt)))
        .for("update")
        .limit(1);
      return rows[0];
    },
    async countLiveOwned(owner: string, executor: Executor) {
      const rows = await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents} where ${agents.owner} = ${owner} and ${agents.deletedAt} is null and ${agents.originRegistry} is null`,
        executor,
      );
      return Number(rows[0]?.n ?? 0);
    },
    /** Serialises quota checks per owner so concurrent publishes cannot all pass the count. */
    async lockOwner(owner: string, executor: Executor) {
      await database.rows(
        sql`select pg_advisory_xact_lock(hashtext(${`quota:${owner}`}))::text as locked`,
        executor,
      );
    },
    /**
     * Inserts new agents with their first version and audit row (INSERT_PUBLISHED) and returns the rows
     * inserted, by id; an agent missing from the result had a url that is already live. Only what the
     * database decides (seq, timestamps) comes back: returning the whole row would ship the card and
     * search document back for nothing.
     */
    async insertPublished(list: NewAgent[], executor: Executor): Promise<Map<string, AgentRow>> {
      const facets = list.map(({ values }) => facetKeysOf(values));
      const input = list.map(({ values, audit }, ord) => ({
        ord,
        id: values.id,
        owner: values.owner ?? null,
        name: values.name,
        description: values.description ?? "",
        url: values.url,
        card_url: values.cardUrl ?? null,
        visibility: values.visibility,
        status: values.status,
        generation: values.generation,
        protocol_version: values.protocolVersion ?? null,
        latest_version: values.latestVersion,
        card_raw: values.cardRaw,
        card_hash: values.cardHash,
        skills: values.skills,
        tags: values.tags,
        input_modes: values.inputModes,
        output_modes: values.outputModes,
        facet_keys: facets[ord],
        streaming: values.streaming,
        provider: values.provider ?? null,
        signature: values.signature ?? "none",
        signature_kid: values.signatureKid ?? null,
        signature_domain: values.signatureDomain ?? null,
        signature_error: values.signatureError ?? null,
        audit_actor: audit.actor,
        audit_action: audit.action,
        audit_outcome: audit.outcome,
        audit_ip: audit.ip ?? null,
        audit_request_id: audit.requestId ?? null,
        audit_details: audit.details ?? {},
      }));
      const stamped = await runStatement<{ id: string; seq: string; created_ms: string; updated_ms: string }>(
        database,
        INSERT_PUBLISHED,
        [JSON.stringify(input)],
        executor,
      );
      const byId = new Map(stamped.map((row) => [row.id, row]));
      const rows = new Map<string, AgentRow>();
      list.forEach(({ values }, i) => {
        const row = byId.get(values.id);
        if (row)
          rows.set(
            values.id,
            newAgentRow(
              values,
              facets[i]!,
              Number(row.seq),
              new Date(Number(row.created_ms)),
              new Date(Number(row.updated_ms)),
            ),
          );
      });
      return rows;
    },
    async update(id: string, values: Partial<AgentInsert>, executor: Executor) {
      const changes: Record<string, unknown> = { ...values, seq: nextSeq, updatedAt: sql`now()` };
      if (values.skills && values.tags && values.inputModes && values.outputModes)
        changes.facetKeys = facetKeysOf({
          skills: values.skills,
          tags: values.tags,
          inputModes: values.inputModes,
          outputModes: values.outputModes,
        });
      const rows = await executor
        .update(agents)
        .set(changes as Partial<typeof agents.$inferInsert>)
        .where(eq(agents.id, id))
        .returning();
      return rows[0]!;
    },
    async markDeleted(id: string, executor: Executor) {
      const rows = await executor
        .update(agents)
        .set({ status: "deleted", deletedAt: sql`now()`, updatedAt: sql`now()`, seq: nextSeq } as never)
        .where(eq(agents.id, id))
        .returning();
      return rows[0]!;
    },
    /** Bumps the change sequence when what someone may see changed without the row itself changing. */
    async touch(id: string, executor: Executor) {
      const rows = await executor
        .update(agents)
        .set({ seq: nextSeq, updatedAt: sql`now()` } as never)
        .where(eq(agents.id, id))
        .returning();
      return rows[0]!;
    },
    insertVersion(values: typeof agentVersions.$inferInsert, executor: Executor) {
      return executor.insert(agentVersions).values(values);
    },
    async findVersion(agentId: string, version: string, executor: Executor = db) {
      const rows = await executor
        .select()
        .from(agentVersions)
        .where(and(eq(agentVersions.agentId, agentId), eq(agentVersions.version, version)))
        .limit(1);
      return rows[0];
    },
    listVersions(agentId: string) {
      return db
        .select({
          version: agentVersions.version,
          cardHash: agentVersions.cardHash,
          createdAt: agentVersions.createdAt,
        })
        .from(agentVersions)
        .where(eq(agentVersions.agentId, agentId))
        .orderBy(desc(agentVersions.id));
    },
    async list(caller: Caller, filters: ListFilters, afterSeq: number | undefined, limit: number) {
      const conditions: (SQL | undefined)[] = [isNull(agents.deletedAt), visibleTo(caller)];
      if (afterSeq !== undefined) conditions.push(lt(agents.seq, afterSeq));
      conditions.push(...filterConditions(filters));
      if (filters.updatedSince) conditions.push(gte(agents.updatedAt, new Date(filters.updatedSince)));
      return db
        .select(LISTED_COLUMNS)
        .from(agents)
        .where(and(...conditions))
        .orderBy(desc(agents.seq))
        .limit(limit);
    },
    async listPublicIndex(afterSeq: number | undefined, limit: number) {
      const conditions: (SQL | undefined)[] = [
        isNull(agents.deletedAt),
        eq(agents.visibility, "public"),
        eq(agents.status, "active"),
      ];
      if (afterSeq !== undefined) conditions.push(lt(agents.seq, afterSeq));
      return db
        .select({
          id: agents.id,
          name: agents.name,
          description: agents.description,
          url: agents.url,
          seq: agents.seq,
        })
        .from(agents)
        .where(and(...conditions))
        .orderBy(desc(agents.seq))
        .limit(limit);
    },
    async countPublicActive() {
      const rows = await database.rows<{ n: number }>(
        sql`select count(*)::int as n from ${agents} where ${agents.deletedAt} is null and ${agents.visibility} = 'public' and ${agents.status} = 'active'`,
      );
      return Number(rows[0]?.n ?? 0);
    },
    async countByStatus() {
      return database.rows<{ status: string; n: number }>(
        sql`select ${agents.status} as status, count(*)::int as n from ${agents} group by ${agents.status}`,
      );
    },
    listEntitlements(agentId: string) {
      return db
        .select({ clientId: entitlements.clientId, createdAt: entitlements.createdAt })
        .from(entitlements)
        .where(eq(entitlements.agentId, agentId))
        .orderBy(entitlements.createdAt);
    },
    async grant(agentId: string, clientId: string, executor: Executor) {
      const rows = await executor
        .insert(entitlements)
        .values({ agentId, clientId })
        .onConflictDoNothing()
        .returning({ clientId: entitlements.clientId });
      return rows.length > 0;
    },
    async revoke(agentId: string, clientId: string, executor: Executor) {
      const rows = await executor
        .delete(entitlements)
        .where(and(eq(entitlements.agentId, agentId), eq(entitlements.clientId, clientId)))
        .returning({ clientId: entitlements.clientId });
      return rows.length > 0;
    },
  };
}

export type AgentsRepo = ReturnType<typeof agentsRepo>;
