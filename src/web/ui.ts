import type { AgentRecord } from "./api";
import { type Children, h } from "./dom";

export type Tone = "ok" | "warn" | "bad" | "info" | "neutral";

/** A badge says what it means in words; the colour only repeats it. */
export const badge = (text: string, tone: Tone, title?: string) =>
  h("span", { class: `badge badge-${tone}`, title }, text);

export function healthBadge(agent: AgentRecord) {
  if (agent.health === "up") return badge("healthy", "ok", "The last health check succeeded");
  if (agent.health === "down") return badge("down", "bad", "The last health check failed");
  return badge("health unknown", "neutral", "Not checked yet");
}

export function signatureBadge(agent: AgentRecord) {
  if (agent.signature === "valid") return badge("signed", "ok", "The card's signature verified");
  if (agent.signature === "invalid") return badge("invalid signature", "bad", "A signature did not verify");
  return badge("unsigned", "neutral", "The card carries no signature");
}

/** Badges for a result row: only what differs from the ordinary (active, public, local) case. */
export function summaryBadges(agent: AgentRecord, streaming: boolean) {
  return [
    agent.status === "deprecated" ? badge("deprecated", "warn", agent.statusMessage ?? undefined) : null,
    agent.visibility === "private" ? badge("private", "info", "Visible to you through your token") : null,
    agent.source.federated ? badge(`via ${agent.source.registry}`, "info", "Federated copy") : null,
    streaming ? badge("streaming", "info") : null,
    healthBadge(agent),
    signatureBadge(agent),
  ];
}

/** Writes to the page-wide polite live region (navigation, copy confirmations). */
export function announce(message: string) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh text node after a tick makes screen readers repeat an identical message.
  setTimeout(() => {
    region.textContent = message;
  }, 30);
}

export function errorBox(message: string, hint?: string) {
  return h(
    "div",
    { class: "notice notice-bad", role: "alert" },
    h("p", null, message),
    hint ? h("p", null, hint) : null,
  );
}

/** A table in a focusable, scrollable region (narrow screens scroll it sideways, not the page). */
export function dataTable(label: string, headers: string[], rows: Children[][]) {
  return h(
    "div",
    { class: "table-wrap", tabindex: "0", role: "region", "aria-label": label },
    h(
      "table",
      null,
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          headers.map((title) => h("th", { scope: "col" }, title)),
        ),
      ),
      h(
        "tbody",
        null,
        rows.map((cells) =>
          h(
            "tr",
            null,
            cells.map((cell) => h("td", null, cell)),
          ),
        ),
      ),
    ),
  );
}
