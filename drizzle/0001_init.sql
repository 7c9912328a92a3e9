CREATE SEQUENCE "public"."agent_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1;--> statement-breakpoint
CREATE TABLE "agent_versions" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"agent_id" uuid NOT NULL,
	"version" text NOT NULL,
	"card" jsonb NOT NULL,
	"card_raw" text NOT NULL,
	"card_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "agents" (
	"id" uuid PRIMARY KEY NOT NULL,
	"owner" text,
	"name" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"url" text NOT NULL,
	"card_url" text,
	"visibility" text NOT NULL,
	"status" text NOT NULL,
	"status_message" text,
	"generation" text NOT NULL,
	"protocol_version" text,
	"latest_version" text NOT NULL,
	"card" jsonb NOT NULL,
	"card_raw" text NOT NULL,
	"card_hash" text NOT NULL,
	"skills" text[] NOT NULL,
	"tags" text[] NOT NULL,
	"input_modes" text[] NOT NULL,
	"output_modes" text[] NOT NULL,
	"streaming" boolean NOT NULL,
	"provider" text,
	"signature" text DEFAULT 'none' NOT NULL,
	"signature_kid" text,
	"health" text DEFAULT 'unknown' NOT NULL,
	"checked_at" timestamp with time zone,
	"origin_registry" text,
	"origin_id" text,
	"seq" bigint NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone,
	"search_doc" "tsvector"
);
--> statement-breakpoint
CREATE TABLE "audit_log" (
	"id" bigserial PRIMARY KEY NOT NULL,
	"at" timestamp with time zone DEFAULT now() NOT NULL,
	"actor" text NOT NULL,
	"action" text NOT NULL,
	"target" text,
	"ip" text,
	"request_id" text,
	"outcome" text NOT NULL,
	"details" jsonb DEFAULT '{}'::jsonb NOT NULL
);
--> statement-breakpoint
CREATE TABLE "clients" (
	"id" uuid PRIMARY KEY NOT NULL,
	"client_id" text NOT NULL,
	"secret_hash" text NOT NULL,
	"name" text NOT NULL,
	"scopes" text[] NOT NULL,
	"disabled" boolean DEFAULT false NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"disabled_at" timestamp with time zone,
	CONSTRAINT "clients_client_id_unique" UNIQUE("client_id")
);
--> statement-breakpoint
CREATE TABLE "entitlements" (
	"client_id" text NOT NULL,
	"agent_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "entitlements_agent_id_client_id_pk" PRIMARY KEY("agent_id","client_id")
);
--> statement-breakpoint
ALTER TABLE "agent_versions" ADD CONSTRAINT "agent_versions_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "entitlements" ADD CONSTRAINT "entitlements_client_id_clients_client_id_fk" FOREIGN KEY ("client_id") REFERENCES "public"."clients"("client_id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "entitlements" ADD CONSTRAINT "entitlements_agent_id_agents_id_fk" FOREIGN KEY ("agent_id") REFERENCES "public"."agents"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "agent_versions_agent_version_key" ON "agent_versions" USING btree ("agent_id","version");--> statement-breakpoint
CREATE UNIQUE INDEX "agents_live_local_url_key" ON "agents" USING btree ("url") WHERE "agents"."deleted_at" is null and "agents"."origin_registry" is null;--> statement-breakpoint
CREATE UNIQUE INDEX "agents_origin_key" ON "agents" USING btree ("origin_registry","origin_id") WHERE "agents"."origin_registry" is not null;--> statement-breakpoint
CREATE UNIQUE INDEX "agents_seq_key" ON "agents" USING btree ("seq");--> statement-breakpoint
CREATE INDEX "agents_owner_idx" ON "agents" USING btree ("owner");--> statement-breakpoint
CREATE INDEX "agents_updated_at_idx" ON "agents" USING btree ("updated_at");--> statement-breakpoint
CREATE INDEX "agents_skills_gin" ON "agents" USING gin ("skills");--> statement-breakpoint
CREATE INDEX "agents_tags_gin" ON "agents" USING gin ("tags");--> statement-breakpoint
CREATE INDEX "agents_input_modes_gin" ON "agents" USING gin ("input_modes");--> statement-breakpoint
CREATE INDEX "agents_output_modes_gin" ON "agents" USING gin ("output_modes");--> statement-breakpoint
CREATE INDEX "agents_search_doc_gin" ON "agents" USING gin ("search_doc");--> statement-breakpoint
CREATE INDEX "agents_name_trgm" ON "agents" USING gin (lower("name") gin_trgm_ops);--> statement-breakpoint
CREATE INDEX "audit_log_action_idx" ON "audit_log" USING btree ("action","id");--> statement-breakpoint
CREATE INDEX "audit_log_actor_idx" ON "audit_log" USING btree ("actor","id");--> statement-breakpoint
CREATE INDEX "entitlements_client_idx" ON "entitlements" USING btree ("client_id");