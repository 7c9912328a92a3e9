import { type AgentRecord, ApiFailure, api, type Facets, getToken, type SearchResults } from "./api";
import { providerOf, streamingOf, tagsOf } from "./card";
import { debounce, h } from "./dom";
import { errorBox, summaryBadges } from "./ui";

const PAGE_SIZE = 20;
const DEBOUNCE_MS = 250;
const CHIPS_SHOWN = 8;

type FilterKey = "tag" | "skill" | "provider" | "inputMode" | "outputMode" | "streaming" | "health";
type FilterDef = { key: FilterKey; label: string; facet?: keyof Facets; fixed?: [string, string][] };

/** The filter panel: five groups built from the search facets, two with fixed values. */
export const FILTERS: FilterDef[] = [
  { key: "tag", label: "Tags", facet: "tags" },
  { key: "skill", label: "Skills", facet: "skills" },
  { key: "inputMode", label: "Input modes", facet: "inputModes" },
  { key: "outputMode", label: "Output modes", facet: "outputModes" },
  {
    key: "streaming",
    label: "Streaming",
    fixed: [
      ["true", "streaming"],
      ["false", "not streaming"],
    ],
  },
  {
    key: "health",
    label: "Health",
    fixed: [
      ["up", "up"],
      ["down", "down"],
      ["unknown", "unknown"],
    ],
  },
  { key: "provider", label: "Provider", facet: "providers" },
];

export type SearchState = { q: string; filters: Partial<Record<FilterKey, string>> };

export function stateFromUrl(search: string): SearchState {
  const params = new URLSearchParams(search);
  const filters: SearchState["filters"] = {};
  for (const def of FILTERS) {
    const value = params.get(def.key);
    if (value) filters[def.key] = value;
  }
  return { q: params.get("q") ?? "", filters };
}

export function queryOf(state: SearchState): URLSearchParams {
  const params = new URLSearchParams();
  if (state.q.trim()) params.set("q", state.q.trim());
  for (const def of FILTERS) {
    const value = state.filters[def.key];
    if (value) params.set(def.key, value);
  }
  return params;
}

/**
 * Skills are indexed by id and by name, so "current-conditions" and "current conditions" both appear;
 * the filter matches either, so the panel shows one chip per skill (the spelling with spaces).
 */
export function mergeSkillSpellings(values: { value: string; count: number }[]) {
  const byKey = new Map<string, { value: string; count: number }>();
  for (const entry of values) {
    const key = entry.value
      .toLowerCase()
      .replace(/[-_\s]+/g, " ")
      .trim();
    const seen = byKey.get(key);
    if (!seen) byKey.set(key, entry);
    else if (
      entry.count > seen.count ||
      (entry.count === seen.count && /\s/.test(entry.value) && !/\s/.test(seen.value))
    )
      byKey.set(key, entry);
  }
  return [...byKey.values()];
}

const labelOf = (key: FilterKey, value: string) => {
  const def = FILTERS.find((d) => d.key === key)!;
  const fixed = def.fixed?.find(([v]) => v === value);
  return `${def.label.toLowerCase()}: ${fixed ? fixed[1] : value}`;
};

function resultItem(agent: AgentRecord) {
  const card = (agent.card ?? {}) as Record<string, unknown>;
  const provider = providerOf(card).organization;
  const tags = tagsOf(card).slice(0, 8);
  return h(
    "li",
    { class: "result", "data-agent-id": agent.id },
    h(
      "h3",
      { class: "result-name" },
      h("a", { href: `/agents/${agent.id}`, "data-route": true }, agent.name),
    ),
    h(
      "p",
      { class: "result-meta" },
      provider ? h("span", null, provider) : h("span", null, "Unknown provider"),
      h("span", null, `v${agent.version}`),
    ),
    agent.description ? h("p", { class: "result-desc" }, agent.description) : null,
    h("div", { class: "badges" }, summaryBadges(agent, streamingOf(card))),
    tags.length
      ? h(
          "ul",
          { class: "tag-list", "aria-label": "Tags" },
          tags.map((tag) => h("li", null, tag)),
        )
      : null,
  );
}

/** Renders the search page into `root`; returns a cleanup that cancels pending work. */
export function renderSearch(root: HTMLElement): () => void {
  const state = stateFromUrl(location.search);
  let controller: AbortController | undefined;
  let generation = 0;
  let nextCursor: string | null = null;
  let shown = 0;
  let total = 0;
  let lastFacets: Facets | undefined;
  const expanded = new Set<FilterKey>();

  const input = h("input", {
    id: "q",
    type: "search",
    name: "q",
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "Try “weather” or “translate”",
    "aria-describedby": "q-hint",
    value: state.q,
  });
  const form = h(
    "form",
    { class: "searchbar", role: "search", action: "/", onsubmit: (e: Event) => onSubmit(e) },
    h("label", { for: "q" }, "Search agents"),
    h("div", { class: "searchbar-row" }, input, h("button", { type: "submit", class: "btn" }, "Search")),
    h(
      "p",
      { id: "q-hint", class: "hint" },
      "Results update as you type. Names match despite typos. Press / to come back here.",
    ),
  );
  const filterBody = h("div", { class: "filter-groups" });
  const filters = h(
    "details",
    { class: "filters", open: matchMedia("(min-width: 48rem)").matches },
    h("summary", null, h("h2", { class: "filters-title" }, "Filters")),
    filterBody,
  );
  const active = h("div", { class: "active-filters" });
  const status = h("p", {
    id: "result-status",
    class: "result-status",
    role: "status",
    "aria-live": "polite",
  });
  const list = h("ol", { class: "results", id: "results", "aria-label": "Search results" });
  const moreButton = h(
    "button",
    { type: "button", class: "btn btn-secondary", id: "load-more", hidden: true },
    "Load more",
  );
  moreButton.addEventListener("click", () => loadMore());
  const errorSlot = h("div");

  root.replaceChildren(
    h(
      "section",
      { class: "search-view" },
      h("h1", { class: "page-title", tabindex: "-1" }, "Find an agent"),
      h(
        "p",
        { class: "lede" },
        "Browse the A2A agents registered here: search by name, skill or description, then narrow by tag, mode, health or provider.",
      ),
      form,
      h(
        "div",
        { class: "search-layout" },
        h("aside", { class: "filter-col", "aria-label": "Filters" }, filters),
        h(
          "div",
          { class: "results-col" },
          active,
          status,
          errorSlot,
          list,
          h("div", { class: "more" }, moreButton),
        ),
      ),
    ),
  );

  const runDebounced = debounce(() => run(), DEBOUNCE_MS);
  input.addEventListener("input", () => {
    state.q = input.value;
    syncUrl();
    runDebounced();
  });

  function onSubmit(event: Event) {
    event.preventDefault();
    runDebounced.cancel();
    state.q = input.value;
    syncUrl();
    void run();
  }

  function syncUrl() {
    const query = queryOf(state).toString();
    history.replaceState(history.state, "", query ? `/?${query}` : "/");
  }

  function setFilter(key: FilterKey, value: string | undefined) {
    if (value === undefined || state.filters[key] === value) delete state.filters[key];
    else state.filters[key] = value;
    syncUrl();
    runDebounced.cancel();
    void run();
  }

  function renderActive() {
    const entries = Object.entries(state.filters) as [FilterKey, string][];
    if (entries.length === 0) {
      active.replaceChildren();
      return;
    }
    active.replaceChildren(
      h("span", { class: "active-label" }, "Filtered by"),
      ...entries.map(([key, value]) =>
        h(
          "button",
          {
            type: "button",
            class: "chip chip-on",
            "aria-label": `Remove filter ${labelOf(key, value)}`,
            onclick: () => setFilter(key, undefined),
          },
          labelOf(key, value),
          h("span", { "aria-hidden": "true", class: "chip-x" }, "×"),
        ),
      ),
      h(
        "button",
        {
          type: "button",
          class: "link-button",
          onclick: () => {
            state.filters = {};
            syncUrl();
            void run();
          },
        },
        "Clear all",
      ),
    );
  }

  function renderFilters(facets: Facets | undefined) {
    const groups = FILTERS.map((def) => {
      let values: { value: string; label: string; count?: number }[];
      if (def.fixed) values = def.fixed.map(([value, label]) => ({ value, label }));
      else {
        const raw = facets?.[def.facet!] ?? [];
        values = (def.key === "skill" ? mergeSkillSpellings(raw) : raw).map((f) => ({
          value: f.value,
          label: f.value,
          count: f.count,
        }));
        const selected = state.filters[def.key];
        if (selected && !values.some((v) => v.value === selected))
          values.unshift({ value: selected, label: selected, count: total });
      }
      if (values.length === 0) return null;
      const all = expanded.has(def.key);
      const visible = all ? values : values.slice(0, CHIPS_SHOWN);
      const groupId = `filter-${def.key}`;
      return h(
        "fieldset",
        { class: "filter-group", id: groupId },
        h("legend", null, def.label),
        h(
          "div",
          { class: "chips" },
          visible.map((v) => {
            const pressed = state.filters[def.key] === v.value;
            return h(
              "button",
              {
                type: "button",
                class: pressed ? "chip chip-on" : "chip",
                "aria-pressed": pressed ? "true" : "false",
                "data-filter": def.key,
                "data-value": v.value,
                onclick: () => setFilter(def.key, v.value),
              },
              v.label,
              v.count !== undefined
                ? h(
                    "span",
                    { class: "count" },
                    h("span", { class: "visually-hidden" }, ", "),
                    String(v.count),
                    h("span", { class: "visually-hidden" }, v.count === 1 ? " agent" : " agents"),
                  )
                : null,
            );
          }),
        ),
        values.length > CHIPS_SHOWN
          ? h(
              "button",
              {
                type: "button",
                class: "link-button",
                "aria-expanded": all ? "true" : "false",
                "aria-controls": groupId,
                onclick: () => {
                  if (all) expanded.delete(def.key);
                  else expanded.add(def.key);
                  renderFilters(lastFacets);
                  document.querySelector<HTMLElement>(`#${groupId} .link-button`)?.focus();
                },
              },
              all ? "Show fewer" : `Show all ${values.length}`,
            )
          : null,
      );
    });
    filterBody.replaceChildren(...groups.filter((g) => g !== null));
  }

  function describe() {
    const what = state.q.trim() ? ` for “${state.q.trim()}”` : "";
    if (total === 0) return `No agents found${what}.`;
    const noun = total === 1 ? "agent" : "agents";
    return shown < total ? `Showing ${shown} of ${total} ${noun}${what}.` : `${total} ${noun}${what}.`;
  }

  function showError(error: unknown) {
    if ((error as Error).name === "AbortError") return;
    const failure = error instanceof ApiFailure ? error : undefined;
    const hint =
      failure?.status === 401
        ? getToken()
          ? "The access token was rejected (expired or revoked). Forget it or paste a new one under “Access token”."
          : undefined
        : failure?.status === 429
          ? "Too many requests: wait a few seconds and try again."
          : undefined;
    errorSlot.replaceChildren(errorBox(failure ? failure.message : "Something went wrong.", hint));
    status.textContent = "Search failed.";
  }

  async function run() {
    controller?.abort();
    controller = new AbortController();
    const mine = ++generation;
    renderActive();
    status.textContent = "Searching…";
    list.setAttribute("aria-busy", "true");
    const params = queryOf(state);
    params.set("limit", String(PAGE_SIZE));
    try {
      const page = await api<SearchResults>(`/v1/search?${params}`, controller.signal);
      if (mine !== generation) return;
      errorSlot.replaceChildren();
      total = page.total;
      shown = page.items.length;
      nextCursor = page.nextCursor;
      lastFacets = page.facets;
      list.replaceChildren(...page.items.map((item) => resultItem(item.agent)));
      renderFilters(page.facets);
      moreButton.hidden = nextCursor === null;
      status.textContent = describe();
    } catch (error) {
      if (mine === generation) showError(error);
    } finally {
      if (mine === generation) list.removeAttribute("aria-busy");
    }
  }

  async function loadMore() {
    if (!nextCursor) return;
    const mine = generation;
    const params = queryOf(state);
    params.set("limit", String(PAGE_SIZE));
    params.set("cursor", nextCursor);
    // Facets describe the whole result set: the first page already has them.
    params.set("facets", "false");
    moreButton.disabled = true;
    moreButton.textContent = "Loading…";
    try {
      const page = await api<SearchResults>(`/v1/search?${params}`, controller?.signal);
      if (mine !== generation) return;
      const items = page.items.map((item) => resultItem(item.agent));
      list.append(...items);
      shown += items.length;
      nextCursor = page.nextCursor;
      moreButton.hidden = nextCursor === null;
      status.textContent = describe();
      // Keyboard users continue from the first new result rather than jumping back to the top.
      items[0]?.querySelector("a")?.focus();
    } catch (error) {
      if (mine === generation) showError(error);
    } finally {
      moreButton.disabled = false;
      moreButton.textContent = "Load more";
    }
  }

  const onKey = (event: KeyboardEvent) => {
    const target = event.target as HTMLElement;
    if (event.key !== "/" || event.ctrlKey || event.metaKey || event.altKey) return;
    if (target.closest("input, textarea, select, [contenteditable]")) return;
    event.preventDefault();
    input.focus();
    input.select();
  };
  document.addEventListener("keydown", onKey);

  renderFilters(undefined);
  void run();
  return () => {
    runDebounced.cancel();
    controller?.abort();
    document.removeEventListener("keydown", onKey);
  };
}
