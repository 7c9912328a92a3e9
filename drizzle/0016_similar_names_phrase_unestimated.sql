-- The phrase goes into the trigram scan as a subquery's value. As the function's parameter it was a
-- constant to each custom plan, and the planner estimated `phrase <% name` by testing it against a
-- sample of names: 0.5 ms of every call, a quarter of the function's time on two-word queries (mean
-- 2.05 -> 1.59 ms over the bench mix's 890 nameless phrases, same results). The index is the way to the
-- names whatever the estimate, as for the query's own `<%` (src/infra/search/pg.ts, fuzzyName).
CREATE OR REPLACE FUNCTION "agent_search_similar_names"(phrase text, threshold real) RETURNS SETOF uuid
  LANGUAGE plpgsql STABLE SET pg_trgm.word_similarity_threshold = 0.6 AS $$
DECLARE
  words text[];
BEGIN
  PERFORM set_config('pg_trgm.word_similarity_threshold', threshold::text, true);
  SELECT array_agg(array_to_string(ARRAY(SELECT t FROM unnest(show_trgm(w)) t WHERE t NOT LIKE ' %'), chr(31)))
  INTO words FROM unnest(string_to_array(phrase, ' ')) w;
  RETURN QUERY SELECT s.id FROM "agent_search" s
  WHERE (SELECT phrase) <% s.name
    AND NOT EXISTS (
      SELECT 1 FROM unnest(words) own
      WHERE own <> '' AND NOT (string_to_array(own, chr(31)) && show_trgm(s.name)));
END $$;
