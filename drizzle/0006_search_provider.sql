CREATE INDEX "agents_provider_lower_idx" ON "agents" USING btree (lower("provider"));
