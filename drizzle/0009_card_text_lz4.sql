-- The cards' texts (a card's only stored copy since 0007) are compressed with lz4 where the server has
-- it: a card of 2 KB or more is compressed as it is written, and pglz cost a page of 500 federated copies
-- about 4 ms of Postgres CPU more than lz4 (reads decompress faster too). Rows already written keep pglz and
-- stay readable. Servers built without lz4 (embedded PGlite among them) keep their default.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
    ALTER TABLE "agents" ALTER COLUMN "card_raw" SET COMPRESSION lz4;
    ALTER TABLE "agent_versions" ALTER COLUMN "card_raw" SET COMPRESSION lz4;
  END IF;
END $$;
