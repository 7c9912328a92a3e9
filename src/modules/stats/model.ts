import { t } from "elysia";

export const StatsQuery = t.Object({
  days: t.Optional(
    t.Integer({
      minimum: 1,
      maximum: 366,
      default: 30,
      description: "Length of the registrations window in UTC days, ending today (default 30)",
    }),
  ),
});
export type StatsInput = typeof StatsQuery.static;

const Count = t.Integer({ minimum: 0 });

export const StatsResponse = t.Object(
  {
    total: t.Integer({ minimum: 0, description: "Live (not deleted) agents visible to the caller" }),
    byStatus: t.Object({ active: Count, deprecated: Count }),
    byHealth: t.Object({ up: Count, down: Count, unknown: Count }),
    bySignature: t.Object({ none: Count, valid: Count, invalid: Count }),
    bySource: t.Object(
      { local: Count, federated: Count },
      { description: "Published here, or copies pulled from peer registries" },
    ),
    registrations: t.Object(
      {
        days: t.Integer({ minimum: 1 }),
        before: t.Integer({
          minimum: 0,
          description: "Visible live agents registered before the first day of the window",
        }),
        buckets: t.Array(
          t.Object({
            date: t.String({ format: "date", description: "UTC day" }),
            count: t.Integer({ minimum: 0, description: "Visible live agents registered that day" }),
          }),
          { description: "One entry per UTC day of the window, oldest first, days without any included" },
        ),
      },
      { description: "Registrations over time, by the day each visible live agent was first registered" },
    ),
    generatedAt: t.String({ format: "date-time" }),
  },
  { title: "RegistryStats" },
);
export type Stats = typeof StatsResponse.static;
