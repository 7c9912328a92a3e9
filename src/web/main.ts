import { renderAgent } from "./agent";
import { getToken, setToken } from "./api";
import { renderSearch } from "./search";
import { renderStats } from "./stats";
import { announce } from "./ui";

const TITLE = "A2A Agent Registry";
const main = document.getElementById("main") as HTMLElement;
let cleanup: (() => void) | undefined;

/** Client-side routes; the server answers each of these paths with the same page. */
function route() {
  cleanup?.();
  cleanup = undefined;
  const path = location.pathname;
  const agent = /^\/agents\/([^/]+)\/?$/.exec(path);
  for (const link of document.querySelectorAll<HTMLAnchorElement>(".site-nav a")) {
    const current = link.pathname === "/" ? path === "/" : path.startsWith(link.pathname);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (agent) {
    cleanup = renderAgent(main, decodeURIComponent(agent[1]!));
  } else if (path === "/about") {
    document.title = `Stats · ${TITLE}`;
    cleanup = renderStats(main);
  } else {
    document.title = TITLE;
    cleanup = renderSearch(main);
  }
}

function navigate(href: string) {
  history.pushState(null, "", href);
  route();
  // Move focus to the new page's heading so keyboard and screen reader users start at the top.
  const heading = main.querySelector<HTMLElement>("h1");
  if (heading) {
    heading.focus();
    announce(heading.textContent ?? "");
  }
  window.scrollTo(0, 0);
}

document.addEventListener("click", (event) => {
  if (event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const link = (event.target as Element).closest?.("a[data-route]") as HTMLAnchorElement | null;
  if (!link || link.origin !== location.origin) return;
  event.preventDefault();
  navigate(link.pathname + link.search);
});
window.addEventListener("popstate", route);

/** The optional token: kept in sessionStorage only, so it leaves with the tab. */
function setupToken() {
  const form = document.getElementById("token-form") as HTMLFormElement | null;
  const input = document.getElementById("token-input") as HTMLInputElement | null;
  const forget = document.getElementById("token-forget") as HTMLButtonElement | null;
  const state = document.getElementById("token-state");
  if (!form || !input || !forget || !state) return;
  const show = () => {
    const active = getToken() !== null;
    state.textContent = active ? "token in use" : "anonymous";
    state.className = active ? "token-state token-on" : "token-state";
    forget.hidden = !active;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!value) return;
    setToken(value);
    input.value = "";
    show();
    announce("Token saved for this tab. Showing what that client may see.");
    route();
  });
  forget.addEventListener("click", () => {
    setToken(null);
    show();
    announce("Token forgotten. Showing public agents.");
    route();
  });
  show();
}

setupToken();
route();
