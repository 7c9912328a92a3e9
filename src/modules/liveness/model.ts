import { t } from "elysia";
import { AgentRecord } from "../agents/model";

const Names = t.Array(t.String());

export const RefreshResult = t.Object(
  {
    outcome: t.Union([t.Literal("unchanged"), t.Literal("updated"), t.Literal("drift")], {
      description: "updated: the fetched card became a new version; drift: it differs but could not",
    }),
    previousVersion: t.String(),
    version: t.String({ description: "The fetched card's version" }),
    previousCardHash: t.String(),
    cardHash: t.String({ description: "sha256 of the fetched card's canonical JSON" }),
    changes: t.Object(
      { added: Names, removed: Names, changed: Names },
      { description: "Top-level card members" },
    ),
    skills: t.Object({ added: Names, removed: Names }, { description: "Skill ids" }),
    drift: t.Union([
      t.Object({
        detectedAt: t.String({ format: "date-time" }),
        reason: t.String(),
        fetchedHash: t.Optional(t.String()),
      }),
      t.Null(),
    ]),
    agent: AgentRecord,
  },
  { title: "RefreshResult" },
);
