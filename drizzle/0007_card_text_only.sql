-- The card's exact published bytes (card_raw, NOT NULL since 0001) become its only stored copy. Every
-- write path has always stored the text the jsonb was parsed from (a publish's body text, the text
-- fetched from cardUrl, a peer's card text), and /card, the record and versions already serve
-- card_raw: nothing the API shows is lost. Code that needs the parsed card parses card_raw.
ALTER TABLE "agent_versions" DROP COLUMN "card";--> statement-breakpoint
ALTER TABLE "agents" DROP COLUMN "card";
