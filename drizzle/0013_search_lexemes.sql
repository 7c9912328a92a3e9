CREATE TABLE "search_lexemes" (
	"lexeme" text NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX "search_lexemes_lexeme_key" ON "search_lexemes" USING btree ("lexeme" text_pattern_ops);--> statement-breakpoint
-- Written by hand from here (drizzle-kit does not model functions or triggers).
-- Every statement that writes search rows adds the lexemes of their documents that are new, in the same
-- statement: a search that sees a document sees its lexemes. Only documents written or changed are
-- read (probe bookkeeping and status changes leave the document as it was), only lexemes missing are
-- inserted, and in lexeme order, so two writers adding the same new words wait for each other in one
-- order and never deadlock.
CREATE FUNCTION "search_lexemes_added"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO "search_lexemes" ("lexeme")
    SELECT DISTINCT l FROM written w, unnest(tsvector_to_array(w.search_doc)) l
    WHERE NOT EXISTS (SELECT 1 FROM "search_lexemes" x WHERE x.lexeme = l)
    ORDER BY 1
    ON CONFLICT DO NOTHING;
  ELSE
    INSERT INTO "search_lexemes" ("lexeme")
    SELECT DISTINCT l FROM written w JOIN replaced r ON r.id = w.id, unnest(tsvector_to_array(w.search_doc)) l
    WHERE w.search_doc IS DISTINCT FROM r.search_doc
      AND NOT EXISTS (SELECT 1 FROM "search_lexemes" x WHERE x.lexeme = l)
    ORDER BY 1
    ON CONFLICT DO NOTHING;
  END IF;
  RETURN NULL;
END $$;--> statement-breakpoint
CREATE TRIGGER "search_lexemes_inserted" AFTER INSERT ON "agent_search"
  REFERENCING NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION "search_lexemes_added"();--> statement-breakpoint
CREATE TRIGGER "search_lexemes_updated" AFTER UPDATE ON "agent_search"
  REFERENCING OLD TABLE AS replaced NEW TABLE AS written FOR EACH STATEMENT EXECUTE FUNCTION "search_lexemes_added"();--> statement-breakpoint
-- The documents written before the triggers. A writer running meanwhile adds its own lexemes.
INSERT INTO "search_lexemes" ("lexeme")
SELECT DISTINCT unnest(tsvector_to_array("search_doc")) FROM "agent_search" ORDER BY 1
ON CONFLICT DO NOTHING;--> statement-breakpoint
-- A query word as a prefix (what the registry asks of the last word, the one being typed): the lexemes
-- it starts, as one query of whole words, matching exactly what
-- `to_tsquery('simple', token || ':*') || to_tsquery('english', token || ':*')` matches, or with
-- `stemmed` false what `to_tsquery('simple', token || ':*')` matches (the names' words). The text index
-- reads a prefix by merging the postings of every word it starts, all of them, before it can skip
-- anything: "polar pipeline" read the 15,900 postings of pipeline* to find 208 agents (13 ms). Whole
-- words are skipped through like any other (1.9 ms). A prefix that starts more than 64 words ("a"), or
-- none, or a word the dictionaries split in parts, keeps the prefix form: reading its postings costs no
-- more than listing that many words would.
CREATE FUNCTION "agent_search_prefix"(token text, stemmed boolean) RETURNS tsquery
  LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
  simple_query tsquery := to_tsquery('simple', token || ':*');
  english_query tsquery := CASE WHEN stemmed THEN to_tsquery('english', token || ':*') END;
  prefix_form tsquery := CASE WHEN stemmed THEN simple_query || english_query ELSE simple_query END;
  prefixes text[] := '{}';
  part tsquery;
  prefix text;
  words integer;
  expanded text;
BEGIN
  FOREACH part IN ARRAY ARRAY[simple_query, english_query] LOOP
    CONTINUE WHEN part IS NULL OR numnode(part) = 0;
    prefix := substring(part::text FROM '^''([^''\\]+)'':\*$');
    IF numnode(part) > 1 OR prefix IS NULL THEN
      RETURN prefix_form;
    END IF;
    prefixes := prefixes || prefix;
  END LOOP;
  SELECT count(*), string_agg('''' || replace(replace(w.lexeme, '\', '\\'), '''', '''''') || '''', ' | ')
  INTO words, expanded
  FROM (
    SELECT DISTINCT x.lexeme FROM unnest(prefixes) p, "search_lexemes" x
    WHERE x.lexeme ~>=~ p AND x.lexeme ~<~ (p || chr(1114111))
    LIMIT 65
  ) w;
  IF words = 0 OR words > 64 THEN
    -- The prefixes once each, and none another starts ('pipelin' covers 'pipeline'): the index merges
    -- every posting of each prefix it is given, twice over for 'plan':* | 'plan':*.
    SELECT string_agg('''' || d.p || ''':*', ' | ') INTO expanded
    FROM (SELECT DISTINCT p FROM unnest(prefixes) p) d
    WHERE NOT EXISTS (SELECT 1 FROM unnest(prefixes) q WHERE q <> d.p AND starts_with(d.p, q));
    RETURN coalesce(expanded::tsquery, prefix_form);
  END IF;
  RETURN expanded::tsquery;
END $$;
