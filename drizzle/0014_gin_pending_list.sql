-- The GIN indexes every search reads merge the entries written since the last merge (their pending
-- list) every 128 kB instead of 4 MB: each search also reads through that list, and 2,000 changed agents
-- left before a vacuum slowed every search by a sixth. Set in place (drizzle-kit would rebuild them);
-- the lists already pending stay until the next write or vacuum merges them.
ALTER INDEX "agent_search_doc_gin" SET (gin_pending_list_limit = 128);--> statement-breakpoint
ALTER INDEX "agent_search_facet_ids_gin" SET (gin_pending_list_limit = 128);--> statement-breakpoint
ALTER INDEX "agent_search_name_trgm" SET (gin_pending_list_limit = 128);--> statement-breakpoint
ALTER INDEX "agent_search_name_words" SET (gin_pending_list_limit = 128);
