import { Elysia } from "elysia";
import { ProblemSchema } from "../../errors";
import type { AuthGuard } from "../auth/guard";
import { StatsQuery, StatsResponse } from "./model";
import type { StatsService } from "./service";

/** GET /v1/stats: counts for the web page's stats panel, under the same visibility rules as search. */
export function statsRoutes(deps: { stats: StatsService; guard: AuthGuard }) {
  return new Elysia({ name: "stats-routes" }).use(deps.guard).get(
    "/v1/stats",
    async ({ query, caller, set }) => {
      set.headers["cache-control"] = "private, no-cache";
      set.headers.vary = "Authorization";
      return deps.stats.stats(caller, query.days ?? 30);
    },
    {
      query: StatsQuery,
      response: { 200: StatsResponse, 400: ProblemSchema, 401: ProblemSchema, 429: ProblemSchema },
      detail: {
        tags: ["stats"],
        summary: "Counts of the agents the caller may see: by status, health, signature, source and day",
        description:
          "Only live agents the caller may see are counted: public ones for anonymous callers, plus the " +
          "caller's own and entitled private agents for clients, everything for admins. A private agent " +
          "never changes what anyone else is told.",
      },
    },
  );
}
