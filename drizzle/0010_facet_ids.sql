-- Search rows carry their facet values as numbers (facet_values), not as texts: what search filters
-- and counts, at some 100 bytes a row instead of 400. Writers wait until this commits: the search rows
-- are rebuilt below, and a write must not run the old triggers against the new columns.
LOCK TABLE "agents" IN SHARE MODE;--> statement-breakpoint
CREATE TABLE "facet_values" (
	"id" integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "facet_values_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 2147483647 START WITH 1 CACHE 1),
	"key" text NOT NULL,
	CONSTRAINT "facet_values_key_unique" UNIQUE("key")
);
--> statement-breakpoint
ALTER TABLE "agent_search" ADD COLUMN "facet_ids" integer[] DEFAULT '{}'::integer[] NOT NULL;--> statement-breakpoint
DROP INDEX "agent_search_facet_keys_gin";--> statement-breakpoint
ALTER TABLE "agent_search" DROP COLUMN "facet_keys";--> statement-breakpoint
-- Written by hand from here (drizzle-kit does not model functions or triggers).
-- Numbers the facet values not numbered yet, in key order: a writer that meets a value another is
-- numbering waits for it, and in one order no two writers wait for each other. Only values missing are
-- inserted, so the identity is not spent on values that exist. The keys are made distinct before they
-- are looked up: a page of 500 copied agents repeats a few dozen values thousands of times.
CREATE FUNCTION "facet_values_add"(keys text[]) RETURNS void LANGUAGE sql AS $$
  INSERT INTO "facet_values" ("key")
  SELECT d.k FROM (SELECT DISTINCT k FROM unnest(keys) k WHERE k IS NOT NULL) d
  WHERE NOT EXISTS (SELECT 1 FROM "facet_values" v WHERE v.key = d.k)
  ORDER BY d.k
  ON CONFLICT DO NOTHING
$$;--> statement-breakpoint
-- An agent's facet values as search filters and counts them: its facet keys and its provider, by number.
CREATE FUNCTION "agent_search_facet_ids"(keys text[], provider text) RETURNS integer[]
  LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(array_agg(v.id), '{}') FROM "facet_values" v WHERE v.key = ANY (keys || ('provider:' || provider))
$$;--> statement-breakpoint
CREATE OR REPLACE FUNCTION "agent_search_inserted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM facet_values_add(ARRAY(SELECT unnest(n.facet_keys || ('provider:' || n.provider))
    FROM inserted n WHERE n.deleted_at IS NULL));
  INSERT INTO "agent_search" ("id", "seq", "visibility", "owner", "status", "health", "streaming", "signature",
    "provider", "name", "facet_ids", "search_doc")
  SELECT n.id, n.seq, n.visibility, n.owner, n.status, n.health, n.streaming, n.signature, n.provider,
    lower(n.name), agent_search_facet_ids(n.facet_keys, n.provider),
    agent_search_document(n.name, n.description, n.skills, n.tags)
  FROM inserted n WHERE n.deleted_at IS NULL;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE OR REPLACE FUNCTION "agent_search_updated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "agent_search" s USING updated n
  WHERE s.id = n.id AND n.deleted_at IS NOT NULL;
  PERFORM facet_values_add(ARRAY(SELECT unnest(n.facet_keys || ('provider:' || n.provider))
    FROM updated n JOIN previous o ON o.id = n.id
    WHERE n.deleted_at IS NULL
      AND (o.deleted_at IS NOT NULL OR (o.facet_keys, o.provider) IS DISTINCT FROM (n.facet_keys, n.provider))));
  UPDATE "agent_search" s SET "seq" = n.seq, "visibility" = n.visibility, "owner" = n.owner,
    "status" = n.status, "health" = n.health, "streaming" = n.streaming, "signature" = n.signature,
    "provider" = n.provider, "name" = lower(n.name),
    "facet_ids" = CASE
      WHEN (o.facet_keys, o.provider) IS NOT DISTINCT FROM (n.facet_keys, n.provider) THEN s.facet_ids
      ELSE agent_search_facet_ids(n.facet_keys, n.provider) END,
    "search_doc" = CASE
      WHEN (o.name, o.description, o.skills, o.tags) IS NOT DISTINCT FROM (n.name, n.description, n.skills, n.tags)
      THEN s.search_doc
      ELSE agent_search_document(n.name, n.description, n.skills, n.tags) END
  FROM updated n JOIN previous o ON o.id = n.id
  WHERE s.id = n.id AND n.deleted_at IS NULL AND o.deleted_at IS NULL
    AND (o.seq, o.visibility, o.owner, o.status, o.health, o.streaming, o.signature, o.provider, o.name,
      o.description, o.skills, o.tags, o.facet_keys)
      IS DISTINCT FROM (n.seq, n.visibility, n.owner, n.status, n.health, n.streaming, n.signature, n.provider,
      n.name, n.description, n.skills, n.tags, n.facet_keys);
  -- A deleted agent made live again (a federation copy re-published upstream).
  INSERT INTO "agent_search" ("id", "seq", "visibility", "owner", "status", "health", "streaming", "signature",
    "provider", "name", "facet_ids", "search_doc")
  SELECT n.id, n.seq, n.visibility, n.owner, n.status, n.health, n.streaming, n.signature, n.provider,
    lower(n.name), agent_search_facet_ids(n.facet_keys, n.provider),
    agent_search_document(n.name, n.description, n.skills, n.tags)
  FROM updated n JOIN previous o ON o.id = n.id
  WHERE n.deleted_at IS NULL AND o.deleted_at IS NOT NULL;
  RETURN NULL;
END $$;--> statement-breakpoint
-- Every search row written again, in seq order: the walks that find a common word's newest matches read
-- the rows newest first, and rows in that order share pages (an UPDATE in place would leave the table
-- twice its size and the new rows in whatever order it met them).
SELECT facet_values_add(ARRAY(
  SELECT DISTINCT unnest(facet_keys || ('provider:' || provider)) FROM "agents" WHERE deleted_at IS NULL));--> statement-breakpoint
TRUNCATE "agent_search";--> statement-breakpoint
INSERT INTO "agent_search" ("id", "seq", "visibility", "owner", "status", "health", "streaming", "signature",
  "provider", "name", "facet_ids", "search_doc")
SELECT id, seq, visibility, owner, status, health, streaming, signature, provider, lower(name),
  agent_search_facet_ids(facet_keys, provider), agent_search_document(name, description, skills, tags)
FROM "agents" WHERE deleted_at IS NULL ORDER BY seq;--> statement-breakpoint
CREATE INDEX "agent_search_facet_ids_gin" ON "agent_search" USING gin ("facet_ids");
