import { Elysia, t } from "elysia";
import { ApiError, ProblemSchema } from "../../errors";
import type { Logger } from "../../infra/logger";
import { documentedResponses } from "../../infra/openapi";
import { matchesIfNoneMatch } from "../agents/routes";
import { type WebAsset, webBundle } from "./bundle";

/**
 * The pages' own CSP, replacing the API's `default-src 'none'` for the HTML only: scripts, styles and
 * fetches from this origin and nothing else. No 'unsafe-inline' (the page has no inline script or
 * style), no third-party origins. img-src allows data: for the browser's own favicon probe.
 */
export const PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const IMMUTABLE = "public, max-age=31536000, immutable";
const ASSET_NAME = /^[A-Za-z0-9_-]{1,64}\.(js|css|svg|png|woff2)$/;

type ResponseSet = { headers: Record<string, unknown>; status?: unknown };

function send(request: Request, set: ResponseSet, file: WebAsset, cacheControl: string) {
  const headers = set.headers;
  headers.etag = file.etag;
  headers["cache-control"] = cacheControl;
  headers.vary = "Accept-Encoding";
  if (matchesIfNoneMatch(request.headers.get("if-none-match"), file.etag)) {
    set.status = 304;
    return null;
  }
  headers["content-type"] = file.type;
  const acceptsGzip = /\bgzip\b/.test(request.headers.get("accept-encoding") ?? "");
  if (acceptsGzip && file.gzip.byteLength < file.body.byteLength) {
    headers["content-encoding"] = "gzip";
    return new Response(file.gzip, { headers: headers as Record<string, string> });
  }
  return new Response(file.body, { headers: headers as Record<string, string> });
}

const pageDocs = (summary: string) => ({
  tags: ["web"],
  summary,
  responses: documentedResponses({
    200: { description: "The HTML page (the same shell for every page; it reads the public API)" },
    304: { description: "Not modified" },
    500: { description: "The page could not be built", schema: ProblemSchema },
  }),
});

/**
 * The discovery page: `/`, `/agents/:id` and `/about` all answer the same HTML (no-cache, revalidated
 * by ETag), which routes in the browser; its script and stylesheet are fingerprinted files under
 * /assets/ cached for a year. The page uses only the public HTTP API.
 *
 * `/agents/:id` is not registered here: that path also answers the older registry's JSON (compat
 * module), which negotiates on Accept and hands browsers `page()`. One route per path, so the served
 * app and `app.handle` agree.
 */
export function webRoutes(deps: { logger: Logger }) {
  const bundle = () =>
    webBundle().catch((error) => {
      deps.logger.error({ err: error }, "web page build failed");
      throw new ApiError("INTERNAL", "The web page could not be built");
    });
  const page = async ({ request, set }: { request: Request; set: ResponseSet }) => {
    const { html } = await bundle();
    set.headers["content-security-policy"] = PAGE_CSP;
    return send(request, set, html, "no-cache");
  };

  const routes = new Elysia({ name: "web-routes" })
    .get("/", page, { detail: pageDocs("Web page: search and browse agents") })
    .get("/about", page, { detail: pageDocs("Web page: registry statistics with charts") })
    .get(
      "/assets/:file",
      async ({ params, request, set }) => {
        const file = ASSET_NAME.test(params.file) ? (await bundle()).assets.get(params.file) : undefined;
        if (!file) throw new ApiError("NOT_FOUND", "No such asset");
        return send(request, set, file, IMMUTABLE);
      },
      {
        params: t.Object({ file: t.String({ maxLength: 100 }) }),
        detail: {
          tags: ["web"],
          summary: "Fingerprinted script and stylesheet of the web page (immutable, cached for a year)",
          responses: documentedResponses({
            200: { description: "The asset" },
            304: { description: "Not modified" },
            404: {
              description: "No such asset (an old fingerprint, or a name never built)",
              schema: ProblemSchema,
            },
          }),
        },
      },
    );

  /** The page as a standalone response, for routes that serve it beside other representations. */
  async function respond(request: Request): Promise<Response> {
    const set: ResponseSet = { headers: {} };
    const answer = await page({ request, set });
    return answer ?? new Response(null, { status: 304, headers: set.headers as Record<string, string> });
  }

  return { routes, respond };
}
