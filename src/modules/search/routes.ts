import { Elysia } from "elysia";
import { ProblemSchema } from "../../errors";
import type { AuthGuard } from "../auth/guard";
import { SearchQuery, SearchResponse } from "./model";
import type { SearchService } from "./service";

type Deps = { search: SearchService; guard: AuthGuard };

export function searchRoutes(deps: Deps) {
  const { search } = deps;
  return new Elysia({ name: "search-routes", prefix: "/v1/search" }).use(deps.guard).get(
    "",
    async ({ query, caller }) =>
      new Response(await search.search(caller, query), {
        headers: {
          "content-type": "application/json",
          "cache-control": "private, no-cache",
          vary: "Authorization",
        },
      }),
    {
      query: SearchQuery,
      response: { 200: SearchResponse, 400: ProblemSchema, 401: ProblemSchema, 429: ProblemSchema },
      detail: {
        tags: ["search"],
        summary: "Search agents the caller may see: full text, filters, facets, keyset pages",
        description:
          "Relevance first (name > skills and tags > description; names match despite typos), then recency. Totals and facets count only agents visible to the caller. Without `q` the filters list agents newest first.",
      },
    },
  );
}
