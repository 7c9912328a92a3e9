import { resolve } from "node:path";

/** One file of the built page: its bytes, a gzip copy, content type and strong ETag. */
export type WebAsset = {
  body: Uint8Array<ArrayBuffer>;
  gzip: Uint8Array<ArrayBuffer>;
  type: string;
  etag: string;
};
export type WebBundle = {
  html: WebAsset;
  /** Fingerprinted assets by file name (e.g. "index-1a2b3c4d.js"), served under /assets/. */
  assets: Map<string, WebAsset>;
};

export const ASSET_PREFIX = "/assets/";
export const WEB_ENTRY = resolve(import.meta.dir, "../../web/index.html");

const asset = (body: Uint8Array<ArrayBuffer>, type: string, hash: string): WebAsset => ({
  body,
  gzip: new Uint8Array(Bun.gzipSync(body, { level: 9 })),
  type,
  etag: `"${hash}"`,
});

/**
 * Bundles the page with Bun's HTML bundler: TypeScript and CSS from src/web become minified files whose
 * names carry a content hash, and the HTML is rewritten to point at them under /assets/. Everything
 * stays in memory: no build step, nothing written to disk (the image's files are read-only).
 */
export async function buildWebBundle(entry = WEB_ENTRY): Promise<WebBundle> {
  const result = await Bun.build({
    entrypoints: [entry],
    target: "browser",
    minify: true,
    sourcemap: "none",
    publicPath: ASSET_PREFIX,
    naming: { entry: "[name]-[hash].[ext]", chunk: "[name]-[hash].[ext]", asset: "[name]-[hash].[ext]" },
    // Only the page's own sources end up in it; nothing is fetched from anywhere at run time.
    define: { "process.env.NODE_ENV": '"production"' },
  });
  if (!result.success) {
    const messages = result.logs.map((log) => String(log.message ?? log)).join("; ");
    throw new Error(`web bundle failed: ${messages}`);
  }
  let html: WebAsset | undefined;
  const assets = new Map<string, WebAsset>();
  for (const output of result.outputs) {
    const body = new Uint8Array(await output.arrayBuffer());
    const name = output.path.replace(/^\.\//, "");
    const type = output.type || "application/octet-stream";
    const hash = output.hash ?? new Bun.CryptoHasher("sha256").update(body).digest("hex").slice(0, 16);
    if (name.endsWith(".html")) html = asset(body, "text/html; charset=utf-8", hash);
    else assets.set(name, asset(body, type, hash));
  }
  if (!html) throw new Error("web bundle failed: no HTML output");
  return { html, assets };
}

let cached: Promise<WebBundle> | undefined;

/** The page, built once per process on first use; a failed build is retried on the next request. */
export function webBundle(): Promise<WebBundle> {
  cached ??= buildWebBundle().catch((error) => {
    cached = undefined;
    throw error;
  });
  return cached;
}
