import { type AgentRecord, ApiFailure, api, getToken, type Versions } from "./api";
import {
  capabilitiesOf,
  documentationUrlOf,
  humanize,
  interfacesOf,
  modesOf,
  providerOf,
  securityRequirementsOf,
  securitySchemesOf,
  skillsOf,
} from "./card";
import { externalLink, formatDate, h } from "./dom";
import { announce, badge, dataTable, errorBox, healthBadge, signatureBadge } from "./ui";

const section = (id: string, title: string, ...body: (Node | null)[]) =>
  h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), ...body);

const modeList = (label: string, modes: string[]) =>
  modes.length
    ? h(
        "div",
        { class: "modes" },
        h("span", { class: "modes-label" }, label),
        h(
          "ul",
          { class: "mode-list" },
          modes.map((m) => h("li", null, h("code", null, m))),
        ),
      )
    : null;

async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Clipboard API unavailable (insecure context, permissions): fall back to a selection copy.
    const area = h("textarea", { class: "visually-hidden", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}

function header(agent: AgentRecord) {
  const card = agent.card as Record<string, unknown>;
  const provider = providerOf(card);
  const docs = documentationUrlOf(card);
  return h(
    "header",
    { class: "agent-header" },
    h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true }, "← All agents")),
    h("h1", { class: "page-title", tabindex: "-1" }, agent.name),
    h(
      "p",
      { class: "agent-provider" },
      provider.organization
        ? ["by ", provider.url ? externalLink(provider.url, provider.organization) : provider.organization]
        : "Provider not stated",
      h("span", { class: "sep", "aria-hidden": "true" }, " · "),
      `version ${agent.version}`,
      docs
        ? [h("span", { class: "sep", "aria-hidden": "true" }, " · "), externalLink(docs, "documentation")]
        : null,
    ),
    h(
      "div",
      { class: "badges" },
      agent.status === "deprecated"
        ? badge("deprecated", "warn", agent.statusMessage ?? undefined)
        : badge("active", "ok"),
      agent.visibility === "private" ? badge("private", "info") : badge("public", "neutral"),
      healthBadge(agent),
      signatureBadge(agent),
      badge(
        `A2A ${agent.protocolVersion ?? agent.generation}`,
        "neutral",
        `Card generation ${agent.generation}`,
      ),
    ),
    agent.statusMessage ? h("p", { class: "notice notice-warn" }, agent.statusMessage) : null,
    agent.description ? h("p", { class: "agent-desc" }, agent.description) : null,
  );
}

function skillsSection(card: Record<string, unknown>) {
  const skills = skillsOf(card);
  return section(
    "skills-h",
    `Skills (${skills.length})`,
    skills.length === 0
      ? h("p", { class: "muted" }, "This card declares no skills.")
      : h(
          "ul",
          { class: "skills" },
          skills.map((skill) =>
            h(
              "li",
              { class: "skill" },
              h(
                "h3",
                null,
                skill.name,
                skill.id && skill.id !== skill.name ? h("code", { class: "skill-id" }, skill.id) : null,
              ),
              skill.description ? h("p", null, skill.description) : null,
              skill.tags.length
                ? h(
                    "ul",
                    { class: "tag-list", "aria-label": "Tags" },
                    skill.tags.map((tag) =>
                      h(
                        "li",
                        null,
                        h("a", { href: `/?tag=${encodeURIComponent(tag)}`, "data-route": true }, tag),
                      ),
                    ),
                  )
                : null,
              skill.examples.length
                ? h(
                    "div",
                    { class: "examples" },
                    h("h4", null, "Examples"),
                    h(
                      "ul",
                      null,
                      skill.examples.map((example) => h("li", null, h("q", null, example))),
                    ),
                  )
                : null,
              modeList("Accepts", skill.inputModes),
              modeList("Produces", skill.outputModes),
            ),
          ),
        ),
  );
}

function interfacesSection(agent: AgentRecord) {
  const card = agent.card as Record<string, unknown>;
  const interfaces = interfacesOf(card);
  const caps = capabilitiesOf(card);
  const modes = modesOf(card);
  return section(
    "interfaces-h",
    "Interfaces and transports",
    interfaces.length
      ? dataTable(
          "Interfaces",
          ["Transport", "URL", "Protocol"],
          interfaces.map((entry) => [
            [h("code", null, entry.transport), entry.primary ? badge("primary", "neutral") : null],
            h("span", { class: "url-cell" }, externalLink(entry.url)),
            entry.protocolVersion ?? "—",
          ]),
        )
      : h("p", { class: "muted" }, "No interfaces declared."),
    h(
      "div",
      { class: "cap-row" },
      modeList("Default input", modes.input),
      modeList("Default output", modes.output),
    ),
    caps.flags.length
      ? h(
          "ul",
          { class: "caps", "aria-label": "Capabilities" },
          caps.flags.map((flag) =>
            h("li", { class: flag.on ? "cap cap-on" : "cap" }, flag.on ? "✓ " : "✗ ", humanize(flag.name)),
          ),
        )
      : null,
    caps.extensions.length
      ? h(
          "p",
          null,
          "Extensions: ",
          caps.extensions.map((uri, i) => [i ? ", " : "", externalLink(uri)]),
        )
      : null,
  );
}

function securitySection(card: Record<string, unknown>) {
  const schemes = securitySchemesOf(card);
  const requirements = securityRequirementsOf(card);
  return section(
    "security-h",
    "Security",
    schemes.length === 0
      ? h(
          "p",
          { class: "muted" },
          "No security schemes declared: the agent may be open, or say so elsewhere.",
        )
      : h(
          "ul",
          { class: "schemes" },
          schemes.map((scheme) =>
            h(
              "li",
              null,
              h("strong", null, scheme.name),
              " ",
              badge(scheme.type, "info"),
              scheme.description ? h("p", null, scheme.description) : null,
              scheme.details.length
                ? h(
                    "dl",
                    { class: "kv" },
                    scheme.details.map((d) => [
                      h("dt", null, d.label),
                      h("dd", null, d.url ? externalLink(d.value) : h("code", null, d.value)),
                    ]),
                  )
                : null,
            ),
          ),
        ),
    requirements.length
      ? h(
          "p",
          null,
          "Required: ",
          requirements.map((r, i) => [i ? " or " : "", h("code", null, r)]),
        )
      : null,
  );
}

function versionsSection(agent: AgentRecord, versions: Versions | undefined) {
  const items = versions?.items ?? [];
  return section(
    "versions-h",
    "Version history",
    items.length === 0
      ? h("p", { class: "muted" }, "Version history unavailable.")
      : dataTable(
          "Versions",
          ["Version", "Published", "Card hash"],
          items.map((v) => [
            [
              h("a", { href: `/v1/agents/${agent.id}/versions/${encodeURIComponent(v.version)}` }, v.version),
              v.version === agent.version ? badge("current", "ok") : null,
            ],
            formatDate(v.createdAt),
            h("code", { title: v.cardHash }, v.cardHash.slice(0, 12)),
          ]),
        ),
  );
}

function sourceSection(agent: AgentRecord) {
  return section(
    "source-h",
    "Source",
    h(
      "dl",
      { class: "kv" },
      h("dt", null, "Registry"),
      h(
        "dd",
        null,
        agent.source.federated
          ? [h("code", null, agent.source.registry), " (federated copy, read-only here)"]
          : [h("code", null, agent.source.registry), " (published here)"],
      ),
      agent.source.federated
        ? [h("dt", null, "Origin id"), h("dd", null, h("code", null, agent.source.originId))]
        : null,
      h("dt", null, "Registered"),
      h("dd", null, formatDate(agent.createdAt)),
      h("dt", null, "Last change"),
      h("dd", null, formatDate(agent.updatedAt)),
      h("dt", null, "Health checked"),
      h("dd", null, formatDate(agent.checkedAt)),
    ),
  );
}

function rawSection(agent: AgentRecord) {
  const text = JSON.stringify(agent.card, null, 2);
  const copy = h("button", { type: "button", class: "btn btn-secondary", id: "copy-card" }, "Copy card JSON");
  const copied = h("span", { class: "copy-status", role: "status" });
  copy.addEventListener("click", async () => {
    const ok = await copyText(text);
    copied.textContent = ok ? "Copied to the clipboard." : "Copy failed: select the text instead.";
    announce(copied.textContent);
  });
  return section(
    "raw-h",
    "Raw card",
    h(
      "div",
      { class: "raw-actions" },
      copy,
      h(
        "a",
        { href: `/v1/agents/${agent.id}/card`, class: "btn btn-secondary", id: "card-link" },
        "Open /card as published",
      ),
      copied,
    ),
    agent.visibility === "private"
      ? h(
          "p",
          { class: "hint" },
          "The /card link opens without your token, so a private agent answers 404 there.",
        )
      : null,
    h("pre", { class: "raw-card", tabindex: "0", "aria-label": "Agent card JSON" }, h("code", null, text)),
  );
}

export function renderAgent(root: HTMLElement, id: string): () => void {
  const controller = new AbortController();
  root.replaceChildren(h("p", { class: "loading", role: "status" }, "Loading agent…"));
  void (async () => {
    try {
      const path = `/v1/agents/${encodeURIComponent(id)}`;
      const [agent, versions] = await Promise.all([
        api<AgentRecord>(path, controller.signal),
        api<Versions>(`${path}/versions`, controller.signal).catch(() => undefined),
      ]);
      const card = (agent.card ?? {}) as Record<string, unknown>;
      document.title = `${agent.name} · A2A Agent Registry`;
      root.replaceChildren(
        h(
          "article",
          { class: "agent-view" },
          header(agent),
          h(
            "div",
            { class: "agent-grid" },
            h(
              "div",
              { class: "agent-main" },
              skillsSection(card),
              interfacesSection(agent),
              securitySection(card),
            ),
            h("div", { class: "agent-side" }, sourceSection(agent), versionsSection(agent, versions)),
          ),
          rawSection(agent),
        ),
      );
      root.querySelector<HTMLElement>("h1")?.focus();
      announce(`Agent ${agent.name}`);
    } catch (error) {
      if ((error as Error).name === "AbortError") return;
      const failure = error instanceof ApiFailure ? error : undefined;
      document.title = "Agent not found · A2A Agent Registry";
      const notFound = failure?.status === 404;
      root.replaceChildren(
        h(
          "section",
          { class: "agent-view" },
          h("p", { class: "crumbs" }, h("a", { href: "/", "data-route": true }, "← All agents")),
          h(
            "h1",
            { class: "page-title", tabindex: "-1" },
            notFound ? "Agent not found" : "Could not load the agent",
          ),
          errorBox(
            notFound
              ? "No agent with this id is visible to you."
              : (failure?.message ?? "Something went wrong."),
            notFound
              ? getToken()
                ? "It may have been removed, or be private to another client."
                : "It may have been removed, or be private: paste a token under “Access token” to see what that client may."
              : undefined,
          ),
        ),
      );
      root.querySelector<HTMLElement>("h1")?.focus();
    }
  })();
  return () => controller.abort();
}
