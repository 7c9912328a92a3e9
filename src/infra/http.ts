/**
 * Outbound HTTP with an SSRF guard.
 *
 * Every URL the registry fetches on behalf of a user (agent cards, JWKS, ...)
 * must go through `safeFetch` / `safeFetchJson`:
 *
 *  - only `https:` (plus `http:` when `allowInsecure`, i.e. DEBUG mode);
 *  - no credentials in the URL;
 *  - unless `allowInsecure`, the host is resolved and the request is refused
 *    if ANY resolved address is loopback / private / link-local / reserved
 *    (see `isBlockedAddress`), and `localhost` / `*.localhost` are refused
 *    without resolving;
 *  - redirects are followed manually, re-validating scheme and address at
 *    every hop;
 *  - a single deadline covers DNS + connect + headers + body (all hops);
 *  - the body is capped at `maxBytes` (Content-Length first, then counted
 *    while streaming; the read is aborted once over the limit).
 *
 * KNOWN LIMITATION — DNS rebinding (TOCTOU): we resolve the host ourselves to
 * validate it, but `fetch` resolves it again when it connects; Bun's fetch has
 * no option to pin the connection to a pre-validated IP (no `lookup` hook, and
 * connecting to the IP literal with a Host header would break TLS SNI /
 * certificate verification). An attacker controlling an authoritative DNS
 * server with a very short TTL could therefore answer with a public address for
 * our check and a private one for the connect. We accept this because:
 *  - outside DEBUG only `https:` is allowed, so the rebound target must also
 *    complete a TLS handshake with a certificate valid for the attacker's
 *    hostname — internal HTTP services (cloud metadata at 169.254.169.254,
 *    admin ports, Redis, ...) cannot do that;
 *  - requests are bodiless GETs without ambient credentials, responses are
 *    size/time capped, and only parsed JSON is used by the caller;
 *  - Bun's fetch keeps its own DNS cache, which narrows the window further.
 * Deployments that need a hard guarantee should additionally enforce an
 * egress policy (firewall / egress proxy) that blocks private ranges.
 */
import { lookup as dnsLookup } from "node:dns/promises";
import { isIP } from "node:net";

export type OutboundFetchReason =
  | "invalid_url"
  | "scheme_not_allowed"
  | "address_not_allowed"
  | "dns_failed"
  | "timeout"
  | "too_large"
  | "too_many_redirects"
  | "http_status"
  | "network"
  | "invalid_json";

export class OutboundFetchError extends Error {
  constructor(
    public reason: OutboundFetchReason,
    message: string,
  ) {
    super(message);
    this.name = "OutboundFetchError";
  }
}

/** Minimal fetch signature; injectable for tests (never sends traffic when stubbed). */
export type FetchImpl = (url: string, init: RequestInit) => Promise<Response>;

export type SafeFetchOptions = {
  /** true only when the registry runs with DEBUG: allows http: and loopback/private targets */
  allowInsecure: boolean;
  /** maximum body size in bytes (e.g. 256 * 1024) */
  maxBytes: number;
  /** total time for DNS + connect + headers + body, across all redirect hops */
  timeoutMs: number;
  /** default 3 */
  maxRedirects?: number;
  /** Accept header, default "application/json" */
  accept?: string;
  headers?: Record<string, string>;
  /** Default GET. A POST body is sent on the first hop only (use maxRedirects: 0 with POST). */
  method?: "GET" | "POST";
  body?: string;
  /** DNS resolver injection for tests; default node:dns/promises lookup(host, {all:true, verbatim:true}) */
  lookup?: (host: string) => Promise<string[]>;
  /** fetch injection for tests; default globalThis.fetch */
  fetchImpl?: FetchImpl;
};

export type SafeFetchResult = {
  status: number;
  headers: Headers;
  body: Uint8Array;
  finalUrl: string;
};

const DEFAULT_MAX_REDIRECTS = 3;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Headers that must not follow a redirect to another origin. */
const CREDENTIAL_HEADERS = new Set(["authorization", "cookie", "proxy-authorization"]);

// ---------------------------------------------------------------------------
// Address classification
// ---------------------------------------------------------------------------

type V4Cidr = readonly [base: number, prefix: number];

function v4(a: number, b: number, c: number, d: number): number {
  return ((a << 24) | (b << 16) | (c << 8) | d) >>> 0;
}

const BLOCKED_V4: readonly V4Cidr[] = [
  [v4(0, 0, 0, 0), 8], // "this network"
  [v4(10, 0, 0, 0), 8], // private
  [v4(100, 64, 0, 0), 10], // CGNAT shared space
  [v4(127, 0, 0, 0), 8], // loopback
  [v4(169, 254, 0, 0), 16], // link-local (cloud metadata)
  [v4(172, 16, 0, 0), 12], // private
  [v4(192, 0, 0, 0), 24], // IETF protocol assignments
  [v4(192, 0, 2, 0), 24], // TEST-NET-1
  [v4(192, 168, 0, 0), 16], // private
  [v4(198, 18, 0, 0), 15], // benchmarking
  [v4(198, 51, 100, 0), 24], // TEST-NET-2
  [v4(203, 0, 113, 0), 24], // TEST-NET-3
  [v4(224, 0, 0, 0), 4], // multicast
  [v4(240, 0, 0, 0), 4], // reserved (includes 255.255.255.255 broadcast)
  [v4(255, 255, 255, 255), 32], // broadcast (explicit)
];

function v4InCidr(addr: number, [base, prefix]: V4Cidr): boolean {
  if (prefix === 0) return true;
  const mask = (0xffffffff << (32 - prefix)) >>> 0;
  return (addr & mask) >>> 0 === (base & mask) >>> 0;
}

function parseV4(ip: string): number | null {
  const parts = ip.split(".");
  if (parts.length !== 4) return null;
  let n = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return null;
    const o = Number(p);
    if (o > 255) return null;
    n = n * 256 + o;
  }
  return n >>> 0;
}

function isBlockedV4(addr: number): boolean {
  return BLOCKED_V4.some((c) => v4InCidr(addr, c));
}

/** Parses an IPv6 address (optionally with zone id / embedded IPv4) into 8 16-bit groups. */
function parseV6(input: string): number[] | null {
  let ip = input;
  const zone = ip.indexOf("%");
  if (zone >= 0) ip = ip.slice(0, zone);
  if (ip.startsWith("[") && ip.endsWith("]")) ip = ip.slice(1, -1);

  // Embedded dotted IPv4 tail (e.g. ::ffff:127.0.0.1) -> two hex groups.
  const lastColon = ip.lastIndexOf(":");
  if (lastColon >= 0 && ip.slice(lastColon + 1).includes(".")) {
    const tail = parseV4(ip.slice(lastColon + 1));
    if (tail === null) return null;
    ip = `${ip.slice(0, lastColon + 1)}${(tail >>> 16).toString(16)}:${(tail & 0xffff).toString(16)}`;
  }

  const halves = ip.split("::");
  if (halves.length > 2) return null;
  const parseGroups = (s: string): number[] | null => {
    if (s === "") return [];
    const out: number[] = [];
    for (const g of s.split(":")) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      out.push(Number.parseInt(g, 16));
    }
    return out;
  };
  const head = parseGroups(halves[0] ?? "");
  if (head === null) return null;
  if (halves.length === 1) return head.length === 8 ? head : null;
  const tail = parseGroups(halves[1] ?? "");
  if (tail === null) return null;
  const missing = 8 - head.length - tail.length;
  if (missing < 1) return null;
  return [...head, ...new Array<number>(missing).fill(0), ...tail];
}

type V6Cidr = readonly [groups: readonly number[], prefix: number];

function v6InCidr(addr: readonly number[], [base, prefix]: V6Cidr): boolean {
  let bits = prefix;
  for (let i = 0; i < 8 && bits > 0; i++) {
    const take = Math.min(16, bits);
    const mask = (0xffff << (16 - take)) & 0xffff;
    if (((addr[i] ?? 0) & mask) !== ((base[i] ?? 0) & mask)) return false;
    bits -= take;
  }
  return true;
}

const BLOCKED_V6: readonly V6Cidr[] = [
  [[0, 0, 0, 0, 0, 0, 0, 0], 128], // :: unspecified
  [[0, 0, 0, 0, 0, 0, 0, 1], 128], // ::1 loopback
  [[0xfc00], 7], // unique local
  [[0xfe80], 10], // link-local
  [[0xff00], 8], // multicast
  [[0x2001, 0x0db8], 32], // documentation
  [[0x0064, 0xff9b, 0, 0, 0, 0], 96], // NAT64 well-known prefix
  [[0x0064, 0xff9b, 0x0001], 48], // NAT64 local-use prefix (RFC 8215)
];

function isBlockedV6(g: readonly number[]): boolean {
  if (BLOCKED_V6.some((c) => v6InCidr(g, c))) return true;
  const embedded = (hi: number, lo: number): number => ((hi << 16) | lo) >>> 0;
  const zero = (from: number, to: number): boolean => g.slice(from, to).every((x) => x === 0);
  // IPv4-mapped ::ffff:a.b.c.d
  if (zero(0, 5) && g[5] === 0xffff) return isBlockedV4(embedded(g[6] ?? 0, g[7] ?? 0));
  // IPv4-translated ::ffff:0:a.b.c.d (RFC 2765)
  if (zero(0, 4) && g[4] === 0xffff && g[5] === 0) return isBlockedV4(embedded(g[6] ?? 0, g[7] ?? 0));
  // IPv4-compatible ::a.b.c.d (deprecated)
  if (zero(0, 6)) return isBlockedV4(embedded(g[6] ?? 0, g[7] ?? 0));
  // 6to4 2002:AABB:CCDD::/48 embeds an IPv4 address
  if (g[0] === 0x2002) return isBlockedV4(embedded(g[1] ?? 0, g[2] ?? 0));
  return false;
}

/**
 * True when `ip` must not be contacted (loopback, private, link-local,
 * reserved, ...). Anything that is not a valid IP literal is blocked
 * (fail closed). Accepts bracketed IPv6 and zone ids.
 */
export function isBlockedAddress(ip: string): boolean {
  const bare = ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip;
  const noZone = bare.split("%")[0] ?? "";
  const family = isIP(noZone);
  if (family === 4) {
    const n = parseV4(noZone);
    return n === null ? true : isBlockedV4(n);
  }
  if (family === 6) {
    const g = parseV6(noZone);
    return g === null ? true : isBlockedV6(g);
  }
  return true;
}

// ---------------------------------------------------------------------------
// URL validation
// ---------------------------------------------------------------------------

async function defaultLookup(host: string): Promise<string[]> {
  const res = await dnsLookup(host, { all: true, verbatim: true });
  return res.map((r) => r.address);
}

function isLocalhostName(host: string): boolean {
  const h = host.toLowerCase().replace(/\.+$/, "");
  return h === "localhost" || h.endsWith(".localhost");
}

/** Rejects when `signal` aborts; used so DNS lookups count against the deadline. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e);
      },
    );
  });
}

/**
 * Parses and validates `url` (scheme, credentials, and — unless
 * `allowInsecure` — host address). Throws `OutboundFetchError`; performs DNS
 * resolution via `opts.lookup` but never connects. Exported for tests and for
 * callers that want to validate a URL at registration time.
 */
export async function assertAllowedUrl(
  url: string | URL,
  opts: Pick<SafeFetchOptions, "allowInsecure" | "lookup">,
  signal?: AbortSignal,
): Promise<URL> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new OutboundFetchError("invalid_url", "invalid URL");
  }
  const allowed = opts.allowInsecure ? ["https:", "http:"] : ["https:"];
  if (!allowed.includes(u.protocol)) {
    throw new OutboundFetchError("scheme_not_allowed", `URL scheme "${u.protocol}" is not allowed`);
  }
  if (u.username !== "" || u.password !== "") {
    throw new OutboundFetchError("invalid_url", "URLs with credentials are not allowed");
  }
  if (u.hostname === "") {
    throw new OutboundFetchError("invalid_url", "URL has no host");
  }
  if (opts.allowInsecure) return u;

  const host = u.hostname.startsWith("[") && u.hostname.endsWith("]") ? u.hostname.slice(1, -1) : u.hostname;
  if (isLocalhostName(host)) {
    throw new OutboundFetchError("address_not_allowed", `host "${u.hostname}" is not allowed`);
  }

  let addresses: string[];
  if (isIP(host) !== 0) {
    // IP literal (WHATWG URL already normalised decimal/octal/hex IPv4 forms).
    addresses = [host];
  } else {
    const lookup = opts.lookup ?? defaultLookup;
    try {
      addresses = await raceAbort(lookup(host), signal);
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new OutboundFetchError("dns_failed", `could not resolve host "${u.hostname}"`);
    }
    if (addresses.length === 0) {
      throw new OutboundFetchError("dns_failed", `could not resolve host "${u.hostname}"`);
    }
  }
  if (addresses.some((a) => isBlockedAddress(a))) {
    throw new OutboundFetchError(
      "address_not_allowed",
      `host "${u.hostname}" resolves to a non-public address`,
    );
  }
  return u;
}

// ---------------------------------------------------------------------------
// Fetch
// ---------------------------------------------------------------------------

function safeNetworkMessage(err: unknown, origin: string): string {
  const code =
    typeof err === "object" &&
    err !== null &&
    "code" in err &&
    typeof (err as { code: unknown }).code === "string"
      ? (err as { code: string }).code
      : undefined;
  return code && /^[A-Za-z0-9_]{1,40}$/.test(code)
    ? `could not connect to ${origin} (${code})`
    : `could not connect to ${origin}`;
}

async function readBody(res: Response, maxBytes: number, controller: AbortController): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      controller.abort(new OutboundFetchError("too_large", `response body exceeds ${maxBytes} bytes`));
      await reader.cancel().catch(() => {});
      throw new OutboundFetchError("too_large", `response body exceeds ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.byteLength;
  }
  return out;
}

/**
 * GETs `url` with the SSRF guard, manual redirect handling, a total deadline
 * and a body size cap. Non-2xx final statuses are returned, not thrown.
 */
export async function safeFetch(url: string, opts: SafeFetchOptions): Promise<SafeFetchResult> {
  const maxRedirects = opts.maxRedirects ?? DEFAULT_MAX_REDIRECTS;
  const fetchImpl: FetchImpl = opts.fetchImpl ?? ((u, init) => fetch(u, init));
  const controller = new AbortController();
  const timeoutError = new OutboundFetchError("timeout", `request timed out after ${opts.timeoutMs} ms`);
  const timer = setTimeout(() => controller.abort(timeoutError), opts.timeoutMs);
  const signal = controller.signal;

  const translate = (err: unknown, origin: string): OutboundFetchError => {
    if (signal.aborted && signal.reason instanceof OutboundFetchError) return signal.reason;
    if (err instanceof OutboundFetchError) return err;
    return new OutboundFetchError("network", safeNetworkMessage(err, origin));
  };

  let headers: Record<string, string> = {
    ...(opts.headers ?? {}),
    accept: opts.accept ?? "application/json",
  };
  let current = url;
  let origin = "";
  try {
    for (let hop = 0; ; hop++) {
      const u = await assertAllowedUrl(current, opts, signal);
      if (origin !== "" && u.origin !== origin) {
        headers = Object.fromEntries(
          Object.entries(headers).filter(([k]) => !CREDENTIAL_HEADERS.has(k.toLowerCase())),
        );
      }
      origin = u.origin;

      let res: Response;
      try {
        res = await fetchImpl(u.href, {
          method: opts.method ?? "GET",
          headers,
          redirect: "manual",
          signal,
          ...(opts.body !== undefined && hop === 0 ? { body: opts.body } : {}),
        });
      } catch (err) {
        throw translate(err, u.origin);
      }

      const location = res.headers.get("location");
      if (REDIRECT_STATUSES.has(res.status) && location !== null) {
        await res.body?.cancel().catch(() => {});
        if (hop >= maxRedirects) {
          throw new OutboundFetchError("too_many_redirects", `more than ${maxRedirects} redirects`);
        }
        try {
          current = new URL(location, u).href;
        } catch {
          throw new OutboundFetchError("invalid_url", "invalid redirect location");
        }
        continue;
      }

      const cl = res.headers.get("content-length");
      if (cl !== null && /^\d+$/.test(cl.trim()) && Number(cl.trim()) > opts.maxBytes) {
        controller.abort(new OutboundFetchError("too_large", `response body exceeds ${opts.maxBytes} bytes`));
        await res.body?.cancel().catch(() => {});
        throw new OutboundFetchError("too_large", `response body exceeds ${opts.maxBytes} bytes`);
      }

      let body: Uint8Array;
      try {
        body = await readBody(res, opts.maxBytes, controller);
      } catch (err) {
        throw translate(err, u.origin);
      }
      return { status: res.status, headers: res.headers, body, finalUrl: u.href };
    }
  } catch (err) {
    throw translate(err, origin || "remote host");
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Like `safeFetch`, but requires a 2xx status and a JSON body. `text` is the
 * exact decoded body (UTF-8; a leading BOM is dropped), e.g. for signature
 * verification or hashing.
 */
export async function safeFetchJson(
  url: string,
  opts: SafeFetchOptions,
): Promise<{ value: unknown; text: string; finalUrl: string }> {
  const res = await safeFetch(url, opts);
  if (res.status < 200 || res.status > 299) {
    throw new OutboundFetchError(
      "http_status",
      `unexpected HTTP status ${res.status} from ${new URL(res.finalUrl).origin}`,
    );
  }
  let text: string;
  let value: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(res.body);
    value = JSON.parse(text);
  } catch {
    throw new OutboundFetchError("invalid_json", "response body is not valid JSON");
  }
  return { value, text, finalUrl: res.finalUrl };
}
