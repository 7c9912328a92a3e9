-- pg_trgm backs typo-tolerant name search (trigram GIN index on agents.name). It is a trusted
-- extension, so the registry's own database role may create it; PGlite loads it as a contrib module.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
