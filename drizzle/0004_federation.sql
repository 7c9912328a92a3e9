CREATE TABLE "entitlement_revocations" (
	"agent_id" uuid NOT NULL,
	"client_id" text NOT NULL,
	"revoked_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "entitlement_revocations_agent_id_client_id_pk" PRIMARY KEY("agent_id","client_id")
);
--> statement-breakpoint
CREATE TABLE "feed_horizon" (
	"id" integer PRIMARY KEY NOT NULL,
	"purged_seq" bigint DEFAULT 0 NOT NULL,
	"purged_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "peer_syncs" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"peer_id" uuid NOT NULL,
	"started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp with time zone,
	"status" text NOT NULL,
	"from_seq" bigint NOT NULL,
	"to_seq" bigint,
	"pages" integer DEFAULT 0 NOT NULL,
	"added" integer DEFAULT 0 NOT NULL,
	"updated" integer DEFAULT 0 NOT NULL,
	"removed" integer DEFAULT 0 NOT NULL,
	"skipped" integer DEFAULT 0 NOT NULL,
	"error" text,
	"instance" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "peers" (
	"id" uuid PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"base_url" text NOT NULL,
	"client_id" text NOT NULL,
	"client_secret_enc" text NOT NULL,
	"registry_id" text,
	"enabled" boolean DEFAULT true NOT NULL,
	"interval_s" integer,
	"last_seq" bigint DEFAULT 0 NOT NULL,
	"last_sync_at" timestamp with time zone,
	"last_success_at" timestamp with time zone,
	"last_status" text DEFAULT 'never' NOT NULL,
	"last_error" text,
	"agents_synced" integer DEFAULT 0 NOT NULL,
	"lag_changes" integer DEFAULT 0 NOT NULL,
	"failures" integer DEFAULT 0 NOT NULL,
	"next_sync_at" timestamp with time zone DEFAULT now() NOT NULL,
	"resnapshot_from" bigint,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "peers_base_url_unique" UNIQUE("base_url"),
	CONSTRAINT "peers_registry_id_unique" UNIQUE("registry_id")
);
--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "ever_public" boolean DEFAULT false NOT NULL;--> statement-breakpoint
ALTER TABLE "entitlement_revocations" ADD CONSTRAINT "entitlement_revocations_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "peer_syncs" ADD CONSTRAINT "peer_syncs_peer_id_peers_id_fk" FOREIGN KEY ("peer_id") REFERENCES "public"."peers"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "peer_syncs_peer_idx" ON "peer_syncs" USING btree ("peer_id","id");--> statement-breakpoint
CREATE INDEX "agents_deleted_at_idx" ON "agents" USING btree ("deleted_at") WHERE "agents"."deleted_at" is not null;--> statement-breakpoint
-- Written by hand below this line (drizzle-kit does not model triggers). See src/modules/federation/feed.ts.
-- Agents published before this migration: only their present visibility is known.
UPDATE "agents" SET "ever_public" = true WHERE "visibility" = 'public';--> statement-breakpoint
INSERT INTO "feed_horizon" ("id", "purged_seq") VALUES (1, 0) ON CONFLICT DO NOTHING;--> statement-breakpoint
-- Every change to an agent takes its seq here, after a shared advisory lock that lasts until commit:
-- the change feed reads the sequence, then waits for the holders it saw, so every seq at or below what
-- it read is committed (or rolled back) before it serves past it. No seq can commit behind the cursor.
-- The statement's own nextval('agent_seq') is replaced (a gap, nothing more).
CREATE FUNCTION "agents_feed_stamp"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.visibility = 'public' THEN
    NEW.ever_public := true;
  END IF;
  IF TG_OP = 'INSERT' OR NEW.seq IS DISTINCT FROM OLD.seq THEN
    PERFORM pg_advisory_xact_lock_shared(727420005, 1);
    NEW.seq := nextval('agent_seq');
  END IF;
  RETURN NEW;
END $$;--> statement-breakpoint
CREATE TRIGGER "agents_feed_stamp" BEFORE INSERT OR UPDATE ON "agents"
  FOR EACH ROW EXECUTE FUNCTION "agents_feed_stamp"();--> statement-breakpoint
-- A withdrawn entitlement is remembered, so the feed can show that client a delete; a new grant forgets it.
CREATE FUNCTION "entitlements_track_revocation"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    -- A cascade from a purged agent leaves nothing to tell anyone.
    IF EXISTS (SELECT 1 FROM "agents" WHERE "id" = OLD.agent_id) THEN
      INSERT INTO "entitlement_revocations" ("agent_id", "client_id") VALUES (OLD.agent_id, OLD.client_id)
        ON CONFLICT ("agent_id", "client_id") DO UPDATE SET "revoked_at" = now();
    END IF;
    RETURN OLD;
  END IF;
  DELETE FROM "entitlement_revocations" WHERE "agent_id" = NEW.agent_id AND "client_id" = NEW.client_id;
  RETURN NEW;
END $$;--> statement-breakpoint
CREATE TRIGGER "entitlements_track_revocation" AFTER INSERT OR DELETE ON "entitlements"
  FOR EACH ROW EXECUTE FUNCTION "entitlements_track_revocation"();
