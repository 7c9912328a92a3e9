/**
 * A tiny element builder. Text is always set as text (never parsed as HTML), so data from cards can
 * not inject markup; the CSP forbids inline scripts and handlers on top of that.
 */
type Child = Node | string | number | null | undefined | false;
export type Children = Child | Children[];
type Attrs = Record<string, string | number | boolean | null | undefined | EventListener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs | null = null,
  ...children: Children[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  setAttrs(element, attrs);
  append(element, children);
  return element;
}

const SVG_NS = "http://www.w3.org/2000/svg";

export function svg(tag: string, attrs: Attrs | null = null, ...children: Children[]): SVGElement {
  const element = document.createElementNS(SVG_NS, tag) as SVGElement;
  setAttrs(element, attrs);
  append(element, children);
  return element;
}

function setAttrs(element: Element, attrs: Attrs | null) {
  if (!attrs) return;
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") element.addEventListener(name.replace(/^on/, ""), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
}

function append(element: Element, children: Children[]) {
  for (const child of children) {
    if (Array.isArray(child)) append(element, child);
    else if (child !== null && child !== undefined && child !== false)
      element.append(child instanceof Node ? child : String(child));
  }
}

/** Only http(s) URLs become links: a card cannot smuggle `javascript:` or `data:` URLs into the page. */
export function safeUrl(value: unknown): string | undefined {
  if (typeof value !== "string") return undefined;
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : undefined;
  } catch {
    return undefined;
  }
}

/** A link to another site (or plain text when the URL is not http(s)). */
export function externalLink(value: unknown, label?: string): Node {
  const href = safeUrl(value);
  const text = label ?? (typeof value === "string" ? value : "");
  return href
    ? h("a", { href, rel: "noopener noreferrer nofollow", class: "ext" }, text)
    : h("span", null, text);
}

export function clear(element: Element) {
  element.replaceChildren();
}

export function formatDate(iso: string | null | undefined): string {
  if (!iso) return "never";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function debounce<A extends unknown[]>(fn: (...args: A) => void, ms: number) {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const debounced = (...args: A) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  debounced.cancel = () => clearTimeout(timer);
  return debounced;
}
