import { createFakeElasticsearch } from "./support/fake-elasticsearch";
import { createTestApp } from "./support/app";
import { BACKENDS } from "./support/db";
import { searchContract } from "./support/search-contract";

// The Postgres backend, on embedded PGlite and (in CI) on a real Postgres server.
for (const backend of BACKENDS)
  searchContract(`postgres backend on ${backend}`, {
    makeApp: () => createTestApp(backend),
    relevance: true,
    backend: "postgres",
  });

// The Elasticsearch backend through the real client and adapter, against an in-memory fake of the
// Elasticsearch API (relevance is left to the real engine: the fake's scoring is a stand-in).
for (const backend of BACKENDS)
  searchContract(`elasticsearch backend (fake) over ${backend}`, {
    makeApp: async () => {
      const fake = createFakeElasticsearch();
      const t = await createTestApp(backend, { elasticsearch: fake.client });
      return t;
    },
    relevance: false,
    backend: "elasticsearch",
  });
