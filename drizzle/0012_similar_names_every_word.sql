-- Similar names asked at a threshold above pg_trgm's (a query of several real words with no match by
-- name) must share a trigram with each of the query's words (words are separated by single spaces:
-- the registry sends them so). Word similarity compares trigram sets, so one long word reaches 0.75
-- alone: "kyc spreadsheet" handed over 837 "... Spreadsheet ..." names, each then fetched and tested
-- again by the caller. Tested here, they are dropped before they leave the index scan.
CREATE OR REPLACE FUNCTION "agent_search_similar_names"(phrase text, threshold real) RETURNS SETOF uuid
  LANGUAGE plpgsql STABLE SET pg_trgm.word_similarity_threshold = 0.6 AS $$
BEGIN
  PERFORM set_config('pg_trgm.word_similarity_threshold', threshold::text, true);
  RETURN QUERY SELECT s.id FROM "agent_search" s
  WHERE phrase <% s.name
    AND NOT EXISTS (SELECT 1 FROM unnest(string_to_array(phrase, ' ')) w WHERE word_similarity(w, s.name) = 0);
END $$;
