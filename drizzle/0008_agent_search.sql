CREATE TABLE "agent_search" (
	"id" uuid PRIMARY KEY NOT NULL,
	"seq" bigint NOT NULL,
	"visibility" text NOT NULL,
	"owner" text,
	"status" text NOT NULL,
	"health" text NOT NULL,
	"streaming" boolean NOT NULL,
	"signature" text NOT NULL,
	"provider" text,
	"name" text NOT NULL,
	"facet_keys" text[] NOT NULL,
	"search_doc" "tsvector" NOT NULL
);
--> statement-breakpoint
-- Written by hand from here to the index creation (drizzle-kit does not model functions or triggers).
-- The weighted search document, defined once: name (A), skills and tags (B), description (C). Names,
-- skills and tags use `simple` (identifiers, no stemming), descriptions `english`.
CREATE FUNCTION "agent_search_document"(name text, description text, skills text[], tags text[])
  RETURNS tsvector LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT setweight(to_tsvector('simple'::regconfig, name), 'A')
    || setweight(to_tsvector('simple'::regconfig, array_to_string(skills || tags, ' ')), 'B')
    || setweight(to_tsvector('english'::regconfig, description), 'C')
$$;--> statement-breakpoint
-- agent_search follows agents in the writing statement: statement-level triggers over transition
-- tables, so a batch (a publish batch, a federation page) costs one set-based statement, not one
-- function call per row. A live row has a search row; a deleted one has none. An update rewrites the
-- search row only when something search reads changed, and computes the document again only when its
-- text changed: probe bookkeeping (next_probe_at, failing_since) writes nothing here.
CREATE FUNCTION "agent_search_inserted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO "agent_search" ("id", "seq", "visibility", "owner", "status", "health", "streaming", "signature",
    "provider", "name", "facet_keys", "search_doc")
  SELECT n.id, n.seq, n.visibility, n.owner, n.status, n.health, n.streaming, n.signature, n.provider,
    lower(n.name), n.facet_keys, agent_search_document(n.name, n.description, n.skills, n.tags)
  FROM inserted n WHERE n.deleted_at IS NULL;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE FUNCTION "agent_search_updated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "agent_search" s USING updated n
  WHERE s.id = n.id AND n.deleted_at IS NOT NULL;
  UPDATE "agent_search" s SET "seq" = n.seq, "visibility" = n.visibility, "owner" = n.owner,
    "status" = n.status, "health" = n.health, "streaming" = n.streaming, "signature" = n.signature,
    "provider" = n.provider, "name" = lower(n.name), "facet_keys" = n.facet_keys,
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
    "provider", "name", "facet_keys", "search_doc")
  SELECT n.id, n.seq, n.visibility, n.owner, n.status, n.health, n.streaming, n.signature, n.provider,
    lower(n.name), n.facet_keys, agent_search_document(n.name, n.description, n.skills, n.tags)
  FROM updated n JOIN previous o ON o.id = n.id
  WHERE n.deleted_at IS NULL AND o.deleted_at IS NOT NULL;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE FUNCTION "agent_search_deleted"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM "agent_search" s USING removed o WHERE s.id = o.id;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE FUNCTION "agent_search_truncated"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  TRUNCATE "agent_search";
  RETURN NULL;
END $$;--> statement-breakpoint
-- The ids of the names at least `threshold` like `phrase` (pg_trgm word similarity), as the trigram index
-- finds them at that threshold: the index applies the session's threshold itself, so a higher one spares
-- it the candidates, not only the results. The setting holds for this function's scan only.
CREATE FUNCTION "agent_search_similar_names"(phrase text, threshold real) RETURNS SETOF uuid
  LANGUAGE plpgsql STABLE SET pg_trgm.word_similarity_threshold = 0.6 AS $$
BEGIN
  PERFORM set_config('pg_trgm.word_similarity_threshold', threshold::text, true);
  RETURN QUERY SELECT s.id FROM "agent_search" s WHERE phrase <% s.name;
END $$;--> statement-breakpoint
-- The triggers first: they lock agents against writes until this migration commits, so no change can
-- slip between the copy below and the triggers taking over.
CREATE TRIGGER "agent_search_inserted" AFTER INSERT ON "agents" REFERENCING NEW TABLE AS inserted
  FOR EACH STATEMENT EXECUTE FUNCTION "agent_search_inserted"();--> statement-breakpoint
CREATE TRIGGER "agent_search_updated" AFTER UPDATE ON "agents" REFERENCING OLD TABLE AS previous NEW TABLE AS updated
  FOR EACH STATEMENT EXECUTE FUNCTION "agent_search_updated"();--> statement-breakpoint
CREATE TRIGGER "agent_search_deleted" AFTER DELETE ON "agents" REFERENCING OLD TABLE AS removed
  FOR EACH STATEMENT EXECUTE FUNCTION "agent_search_deleted"();--> statement-breakpoint
CREATE TRIGGER "agent_search_truncated" AFTER TRUNCATE ON "agents"
  FOR EACH STATEMENT EXECUTE FUNCTION "agent_search_truncated"();--> statement-breakpoint
INSERT INTO "agent_search" ("id", "seq", "visibility", "owner", "status", "health", "streaming", "signature",
  "provider", "name", "facet_keys", "search_doc")
SELECT id, seq, visibility, owner, status, health, streaming, signature, provider, lower(name), facet_keys,
  agent_search_document(name, description, skills, tags)
FROM "agents" WHERE deleted_at IS NULL;--> statement-breakpoint
-- Generated by drizzle-kit from here (indexes after the copy: one build each instead of row by row).
DROP INDEX "agents_search_doc_gin";--> statement-breakpoint
DROP INDEX "agents_name_trgm";--> statement-breakpoint
DROP INDEX "agents_provider_lower_idx";--> statement-breakpoint
CREATE INDEX "agent_search_seq_idx" ON "agent_search" USING btree ("seq");--> statement-breakpoint
CREATE INDEX "agent_search_doc_gin" ON "agent_search" USING gin ("search_doc");--> statement-breakpoint
CREATE INDEX "agent_search_facet_keys_gin" ON "agent_search" USING gin ("facet_keys");--> statement-breakpoint
CREATE INDEX "agent_search_name_trgm" ON "agent_search" USING gin ("name" gin_trgm_ops);--> statement-breakpoint
CREATE INDEX "agent_search_name_words" ON "agent_search" USING gin (to_tsvector('simple', "name"));--> statement-breakpoint
CREATE INDEX "agent_search_provider_idx" ON "agent_search" USING btree (lower("provider"));--> statement-breakpoint
ALTER TABLE "agents" DROP COLUMN "search_doc";
