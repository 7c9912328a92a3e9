/**
 * The ceiling: a bare Bun.serve answering every request with a constant small JSON body and the same
 * header set the registry sends on a cached agent read (security headers, a fresh request id, ETag,
 * cache-control, vary). Anything the registry does on top of this is framework and application cost.
 *
 * Started by bench/run.ts as `bun bench/baseline.ts` with PORT (and HOST, always loopback).
 */

// Mirrors SECURITY_HEADERS in src/infra/web.ts. Copied, not imported, so the ceiling does not load
// Elysia or anything else from src/ and stays a measurement of Bun alone.
const SECURITY_HEADERS: Record<string, string> = {
  "strict-transport-security": "max-age=63072000; includeSubDomains",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-resource-policy": "same-site",
};

const BODY = JSON.stringify({
  id: "01900000-0000-7000-8000-000000000000",
  name: "Constant",
  status: "active",
  version: "1.0.0",
});
const ETAG = `"${new Bun.CryptoHasher("sha256").update(BODY).digest("hex").slice(0, 32)}"`;

const port = Number(process.env.PORT ?? "0");
const hostname = process.env.HOST ?? "127.0.0.1";

const server = Bun.serve({
  port,
  hostname,
  // Several copies may share the port when the registry runs with WEB_CONCURRENCY > 1.
  reusePort: true,
  fetch() {
    return new Response(BODY, {
      headers: {
        ...SECURITY_HEADERS,
        "x-request-id": crypto.randomUUID(),
        "content-type": "application/json",
        etag: ETAG,
        "cache-control": "public, max-age=0, must-revalidate",
        vary: "Authorization",
      },
    });
  },
});

console.log(`baseline listening on http://${server.hostname}:${server.port}`);
process.on("SIGTERM", () => {
  server.stop(true);
  process.exit(0);
});
