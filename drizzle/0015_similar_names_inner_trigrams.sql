-- Similar names for a query of real words (threshold above pg_trgm's) must share with each word a
-- trigram other than the two that open it ("  d", " da" for "data"). Migration 0012 asked for any
-- shared trigram, and every word of a name opens the same way as many others: "data dashboard" handed
-- over 932 "... Dashboard ..." names (word similarity 0.77 on "dashboard" alone) as matches of a query
-- none of them has "data" in. Now 7, the "Delta Dashboard ..." ones ("ta "). A word whose trigrams all
-- open it (one letter) asks nothing. The words' trigrams are read once, not for every candidate name;
-- kept as one text per word (chr(31) between trigrams, which hold no such character), as arrays of
-- unequal lengths cannot be stacked.
CREATE OR REPLACE FUNCTION "agent_search_similar_names"(phrase text, threshold real) RETURNS SETOF uuid
  LANGUAGE plpgsql STABLE SET pg_trgm.word_similarity_threshold = 0.6 AS $$
DECLARE
  words text[];
BEGIN
  PERFORM set_config('pg_trgm.word_similarity_threshold', threshold::text, true);
  SELECT array_agg(array_to_string(ARRAY(SELECT t FROM unnest(show_trgm(w)) t WHERE t NOT LIKE ' %'), chr(31)))
  INTO words FROM unnest(string_to_array(phrase, ' ')) w;
  RETURN QUERY SELECT s.id FROM "agent_search" s
  WHERE phrase <% s.name
    AND NOT EXISTS (
      SELECT 1 FROM unnest(words) own
      WHERE own <> '' AND NOT (string_to_array(own, chr(31)) && show_trgm(s.name)));
END $$;
