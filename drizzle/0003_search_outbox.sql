CREATE TABLE "search_outbox" (
	"agent_id" uuid PRIMARY KEY NOT NULL,
	"seq" bigint NOT NULL,
	"enqueued_at" timestamp with time zone DEFAULT now() NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"last_error" text,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE INDEX "search_outbox_next_attempt_idx" ON "search_outbox" USING btree ("next_attempt_at");