/**
 * A stand-in for the older Python registry (A2AReg), built from its documented shapes
 * (app/api/agents.py): GET /agents/public?top (1-100, default 20) &skip (>= 0, default 0) answers
 * {items: [{id, name}], count, next} where count is the page length and next always points one page
 * on, even past the end; GET /agents/{id}/card needs a bearer token (require_oauth) and answers the
 * card JSON; errors are FastAPI's {detail}. Ids are the first 24 hex digits of the card hash.
 * Anything else (GET /v1/changes included) is FastAPI's 404 {"detail": "Not Found"}.
 */
import { createHash } from "node:crypto";

export type StubCard = {
  /** The card's text as the stub serves it. */
  text: string;
  /** Makes GET /agents/{id}/card fail with this status instead. */
  failWith?: number;
};

export type A2ARegStub = {
  url: string;
  /** Paths requested so far (with query). */
  requests: string[];
  ids: string[];
  stop(): void;
};

const detail = (status: number, message: string) => Response.json({ detail: message }, { status });

export function startA2ARegStub(cards: StubCard[], options: { token?: string } = {}): A2ARegStub {
  const entries = cards.map((card) => {
    let name = "unknown";
    try {
      name = String((JSON.parse(card.text) as { name?: unknown }).name ?? "unknown");
    } catch {}
    return { ...card, name, id: createHash("sha256").update(card.text).digest("hex").slice(0, 24) };
  });
  const requests: string[] = [];
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    fetch(request) {
      const url = new URL(request.url);
      requests.push(`${url.pathname}${url.search}`);
      if (request.method === "GET" && url.pathname === "/agents/public") {
        const top = Number(url.searchParams.get("top") ?? "20");
        const skip = Number(url.searchParams.get("skip") ?? "0");
        if (!Number.isInteger(top) || top < 1 || top > 100 || !Number.isInteger(skip) || skip < 0)
          return Response.json(
            { detail: [{ loc: ["query", "top"], msg: "invalid", type: "value_error" }] },
            { status: 422 },
          );
        const items = entries.slice(skip, skip + top).map((e) => ({ id: e.id, name: e.name }));
        return Response.json({
          items,
          count: items.length,
          next: `/agents/public?skip=${skip + top}&top=${top}`,
        });
      }
      const card = /^\/agents\/([^/]+)\/card$/.exec(url.pathname);
      if (request.method === "GET" && card) {
        if (options.token && request.headers.get("authorization") !== `Bearer ${options.token}`)
          return detail(401, "Not authenticated");
        const entry = entries.find((e) => e.id === card[1]);
        if (!entry) return detail(404, "Agent not found");
        if (entry.failWith) return detail(entry.failWith, "Internal server error");
        return new Response(entry.text, { headers: { "content-type": "application/json" } });
      }
      return detail(404, "Not Found");
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}`,
    requests,
    ids: entries.map((e) => e.id),
    stop: () => server.stop(true),
  };
}
