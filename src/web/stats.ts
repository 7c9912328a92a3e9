import { ApiFailure, api, type Stats } from "./api";
import { h, svg } from "./dom";
import { dataTable, errorBox } from "./ui";

type Bucket = { date: string; count: number };

const shortDate = (iso: string) =>
  new Date(`${iso}T00:00:00Z`).toLocaleDateString(undefined, {
    month: "short",
    day: "numeric",
    timeZone: "UTC",
  });

/** A round upper bound for an axis: 1, 2, 5, 10, 20, 50, ... at least `max`. */
export function niceMax(max: number): number {
  if (max <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * magnitude >= max) return step * magnitude;
  return 10 * magnitude;
}

const W = 640;
const H = 220;
const M = { top: 12, right: 12, bottom: 30, left: 40 };
const PLOT_W = W - M.left - M.right;
const PLOT_H = H - M.top - M.bottom;

/** An accessible chart over time: titled and described, with a y axis from 0 to `top`, then `content`. */
function timeChart(id: string, title: string, description: string, top: number, content: SVGElement[]) {
  const yTicks = [0, top / 2, top].filter((v, i, all) => Number.isInteger(v) && all.indexOf(v) === i);
  return svg(
    "svg",
    {
      class: "chart",
      id,
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`,
    },
    svg("title", { id: `${id}-title` }, title),
    svg("desc", { id: `${id}-desc` }, description),
    ...yTicks.map((tick) => {
      const y = M.top + PLOT_H - (tick / top) * PLOT_H;
      return svg(
        "g",
        { class: "tick" },
        svg("line", {
          x1: M.left,
          x2: W - M.right,
          y1: y,
          y2: y,
          class: tick === 0 ? "axis-line" : "grid-line",
        }),
        svg("text", { x: M.left - 6, y: y + 4, "text-anchor": "end", class: "axis-text" }, String(tick)),
      );
    }),
    content,
  );
}

function xLabels(buckets: Bucket[], xOf: (i: number) => number) {
  const picks = [...new Set([0, Math.floor((buckets.length - 1) / 2), buckets.length - 1])];
  return picks.map((i, n) =>
    svg(
      "text",
      {
        x: xOf(i),
        y: H - 8,
        "text-anchor":
          n === 0 && picks.length > 1
            ? "start"
            : n === picks.length - 1 && picks.length > 1
              ? "end"
              : "middle",
        class: "axis-text",
      },
      shortDate(buckets[i]!.date),
    ),
  );
}

/** New registrations per day as bars. */
export function registrationsChart(buckets: Bucket[]): SVGElement {
  const top = niceMax(Math.max(0, ...buckets.map((b) => b.count)));
  const slot = PLOT_W / Math.max(1, buckets.length);
  const barW = Math.max(1, slot * 0.72);
  const added = buckets.reduce((sum, b) => sum + b.count, 0);
  return timeChart(
    "chart-registrations",
    "New registrations per day",
    `${added} agents registered over the last ${buckets.length} days; at most ${Math.max(0, ...buckets.map((b) => b.count))} on one day.`,
    top,
    [
      ...buckets.map((b, i) => {
        const height = (b.count / top) * PLOT_H;
        return svg(
          "rect",
          {
            class: "bar",
            x: M.left + i * slot + (slot - barW) / 2,
            y: M.top + PLOT_H - height,
            width: barW,
            height: Math.max(0, height),
            "data-date": b.date,
            "data-count": b.count,
          },
          svg("title", null, `${shortDate(b.date)}: ${b.count} registered`),
        );
      }),
      ...xLabels(buckets, (i) => M.left + i * slot + slot / 2),
    ],
  );
}

/** Visible agents over time (those registered before the window, plus each day's new ones) as a line. */
export function totalsChart(before: number, buckets: Bucket[]): SVGElement {
  let running = before;
  const totals = buckets.map((b) => (running += b.count));
  const top = niceMax(Math.max(0, ...totals));
  const step = buckets.length > 1 ? PLOT_W / (buckets.length - 1) : 0;
  const xOf = (i: number) => M.left + i * step;
  const yOf = (v: number) => M.top + PLOT_H - (v / top) * PLOT_H;
  const points = totals.map((v, i) => `${xOf(i).toFixed(1)},${yOf(v).toFixed(1)}`).join(" ");
  const baseline = M.top + PLOT_H;
  return timeChart(
    "chart-totals",
    "Agents over time",
    `From ${totals[0] ?? before} to ${totals.at(-1) ?? before} visible agents over the last ${buckets.length} days.`,
    top,
    [
      svg("polygon", {
        class: "area",
        points: `${xOf(0)},${baseline} ${points} ${xOf(totals.length - 1)},${baseline}`,
      }),
      svg("polyline", { class: "line", points }),
      ...xLabels(buckets, xOf),
    ],
  );
}

type Part = { label: string; value: number; tone: string };

/** One labelled horizontal bar per part, scaled to the largest. */
export function partsChart(id: string, title: string, parts: Part[]): SVGElement {
  const rowH = 30;
  const labelW = 120;
  const valueW = 48;
  const width = 480;
  const height = parts.length * rowH + 4;
  const top = Math.max(1, ...parts.map((p) => p.value));
  const barSpace = width - labelW - valueW;
  return svg(
    "svg",
    {
      class: "chart chart-parts",
      id,
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": `${id}-title`,
    },
    svg("title", { id: `${id}-title` }, `${title}: ${parts.map((p) => `${p.label} ${p.value}`).join(", ")}`),
    ...parts.map((p, i) => {
      const y = i * rowH + 4;
      const barW = (p.value / top) * barSpace;
      return svg(
        "g",
        { class: "part" },
        svg("text", { x: 0, y: y + 17, class: "part-label" }, p.label),
        svg("rect", {
          x: labelW,
          y,
          width: Math.max(p.value > 0 ? 2 : 0, barW),
          height: rowH - 10,
          class: `bar bar-${p.tone}`,
          rx: 3,
        }),
        svg("text", { x: labelW + Math.max(0, barW) + 6, y: y + 17, class: "part-value" }, String(p.value)),
      );
    }),
  );
}

function tableOf(caption: string, headers: [string, string], rows: [string, number][]) {
  return h(
    "details",
    { class: "data-table" },
    h("summary", null, `${caption} as a table`),
    dataTable(
      caption,
      headers,
      rows.map(([k, v]) => [k, String(v)]),
    ),
  );
}

const tile = (label: string, value: number, id: string) =>
  h(
    "div",
    { class: "tile" },
    h("span", { class: "tile-value", id }, String(value)),
    h("span", { class: "tile-label" }, label),
  );

export function renderStats(root: HTMLElement): () => void {
  const controller = new AbortController();
  root.replaceChildren(
    h(
      "section",
      { class: "stats-view" },
      h("h1", { class: "page-title", tabindex: "-1" }, "About this registry"),
      h(
        "p",
        { class: "lede" },
        "This registry lists A2A agents by their Agent Cards. The numbers below count only the agents you may see: public ones, plus what your token allows.",
      ),
      h("p", { class: "loading", role: "status" }, "Loading statistics…"),
    ),
  );
  void (async () => {
    try {
      const stats = await api<Stats>("/v1/stats?days=30", controller.signal);
      const buckets = stats.registrations.buckets;
      const view = root.querySelector(".stats-view")!;
      view.querySelector(".loading")?.remove();
      view.append(
        h(
          "div",
          { class: "tiles", role: "group", "aria-label": "Totals" },
          tile("agents", stats.total, "stat-total"),
          tile("active", stats.byStatus.active, "stat-active"),
          tile("deprecated", stats.byStatus.deprecated, "stat-deprecated"),
          tile("federated copies", stats.bySource.federated, "stat-federated"),
        ),
        h(
          "div",
          { class: "chart-grid" },
          h(
            "section",
            { class: "panel", "aria-labelledby": "reg-h" },
            h("h2", { id: "reg-h" }, "Registrations, last 30 days"),
            registrationsChart(buckets),
            tableOf(
              "Registrations per day",
              ["Day", "Registered"],
              buckets.map((b) => [b.date, b.count]),
            ),
          ),
          h(
            "section",
            { class: "panel", "aria-labelledby": "tot-h" },
            h("h2", { id: "tot-h" }, "Agents over time"),
            totalsChart(stats.registrations.before, buckets),
          ),
          h(
            "section",
            { class: "panel", "aria-labelledby": "status-h" },
            h("h2", { id: "status-h" }, "Agents by status"),
            partsChart("chart-status", "Agents by status", [
              { label: "active", value: stats.byStatus.active, tone: "ok" },
              { label: "deprecated", value: stats.byStatus.deprecated, tone: "warn" },
            ]),
            h("h2", { id: "health-h" }, "Health"),
            partsChart("chart-health", "Agents by health", [
              { label: "up", value: stats.byHealth.up, tone: "ok" },
              { label: "down", value: stats.byHealth.down, tone: "bad" },
              { label: "unknown", value: stats.byHealth.unknown, tone: "neutral" },
            ]),
            h("h2", { id: "sig-h" }, "Signatures"),
            partsChart("chart-signature", "Agents by card signature", [
              { label: "signed", value: stats.bySignature.valid, tone: "ok" },
              { label: "invalid", value: stats.bySignature.invalid, tone: "bad" },
              { label: "unsigned", value: stats.bySignature.none, tone: "neutral" },
            ]),
          ),
        ),
        h(
          "p",
          { class: "hint" },
          "Counts come from ",
          h("a", { href: "/v1/stats" }, "GET /v1/stats"),
          "; the whole API is described at ",
          h("a", { href: "/docs" }, "/docs"),
          ".",
        ),
      );
    } catch (error) {
      if ((error as Error).name === "AbortError") return;
      root
        .querySelector(".loading")
        ?.replaceWith(
          errorBox(error instanceof ApiFailure ? error.message : "Statistics could not be loaded."),
        );
    }
  })();
  return () => controller.abort();
}
