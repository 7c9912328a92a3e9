DROP INDEX "agents_skills_gin";--> statement-breakpoint
DROP INDEX "agents_tags_gin";--> statement-breakpoint
DROP INDEX "agents_input_modes_gin";--> statement-breakpoint
DROP INDEX "agents_output_modes_gin";--> statement-breakpoint
ALTER TABLE "agents" ADD COLUMN "facet_keys" text[] DEFAULT '{}'::text[] NOT NULL;--> statement-breakpoint
-- Backfill rows written before this migration; the application maintains the column from now on.
UPDATE "agents" SET "facet_keys" =
  array(SELECT 'skill:' || x FROM unnest("skills") x) ||
  array(SELECT 'tag:' || x FROM unnest("tags") x) ||
  array(SELECT 'in:' || x FROM unnest("input_modes") x) ||
  array(SELECT 'out:' || x FROM unnest("output_modes") x);--> statement-breakpoint
CREATE INDEX "agents_facet_keys_gin" ON "agents" USING gin ("facet_keys");