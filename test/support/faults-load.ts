/**
 * A steady mixed load from inside the test process (or the soak): reads of known agents, searches and
 * publishes (and, for the soak, updates and deletes), each kind in its own loop of workers. Every answer
 * is classified ("2xx", "404", "503 DEPENDENCY_UNAVAILABLE", "500 INTERNAL", "network ECONNREFUSED", ...)
 * and counted per kind and per phase (the test names phases: "before", "redis down", ...; a request that
 * spans a phase change counts under "before->redis down"); latencies go
 * into a log-bucketed histogram, so hours of load cost constant memory. Every 2xx publish is kept (id and
 * sha256 of the card bytes sent) for the "nothing lost" check.
 */
import { type AckedWrite, searchWord, sha256, uniqueCard } from "./faults";

export type Kind = "read" | "search" | "publish" | "update" | "delete";

/** Latencies to within 2 %: bucket i holds values in [1.02^i, 1.02^(i+1)) microseconds. */
export class Histogram {
  private readonly buckets = new Map<number, number>();
  count = 0;
  record(ms: number) {
    const i = Math.max(0, Math.floor(Math.log(Math.max(1, ms * 1000)) / Math.log(1.02)));
    this.buckets.set(i, (this.buckets.get(i) ?? 0) + 1);
    this.count++;
  }
  percentile(p: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil((p / 100) * this.count);
    let seen = 0;
    for (const i of [...this.buckets.keys()].sort((a, b) => a - b)) {
      seen += this.buckets.get(i)!;
      if (seen >= rank) return 1.02 ** (i + 1) / 1000;
    }
    return 0;
  }
  merge(other: Histogram) {
    for (const [i, n] of other.buckets) this.buckets.set(i, (this.buckets.get(i) ?? 0) + n);
    this.count += other.count;
  }
}

export type Failure = {
  kind: Kind;
  phase: string;
  cls: string;
  status: number;
  retryAfter: string | null;
  contentType: string | null;
  at: number;
  /** How long it took to fail. */
  ms: number;
  detail?: string;
};

export type LoadOptions = {
  base: string;
  /** Bearer token of the publishing client. */
  token: string;
  /** Ids the readers pick from (read each time, so it may grow). */
  readIds: () => string[];
  /** Workers per kind. */
  workers: Partial<Record<Kind, number>>;
  /** Pause after each request of a worker, in ms (0: back to back). */
  pauseMs?: number;
  /** The word prefix of published names (see uniqueCard). */
  prefix: string;
  /** Per-request timeout: a request that takes longer counts as "timeout". */
  timeoutMs?: number;
  /** Failures kept in full (the rest are only counted). */
  keepFailures?: number;
  /**
   * Deleters keep at most this many of the load's agents live (the soak: a bounded working set, so RSS
   * growth means a leak rather than a bigger data set). Unset: they delete one in ten at most.
   */
  maxLive?: number;
};

/** "2xx", "304", "404 NOT_FOUND", "503 DEPENDENCY_UNAVAILABLE", "network ECONNRESET", "timeout". */
export function isSuccess(cls: string) {
  return cls === "2xx" || cls === "304";
}

export function startLoad(options: LoadOptions) {
  const timeoutMs = options.timeoutMs ?? 20_000;
  const keep = options.keepFailures ?? 500;
  let running = true;
  let phase = "before";
  let published = 0;
  /** kind -> phase -> class -> count */
  const counts = new Map<Kind, Map<string, Map<string, number>>>();
  const latency = new Map<Kind, Histogram>();
  const failures: Failure[] = [];
  const acked: AckedWrite[] = [];
  /** Agents this load published and has not deleted: what updates and deletes pick from. */
  const live: AckedWrite[] = [];
  const deleted = new Set<string>();
  /** Updated or deleted right now: no second writer on the same agent, so "latest card" stays known. */
  const busy = new Set<string>();
  /** An update whose outcome is unknown (timeout, reset): its current card may be either version. */
  const uncertain = new Set<string>();
  let inFlight = 0;

  const count = (kind: Kind, at: string, cls: string) => {
    const byPhase = counts.get(kind) ?? new Map<string, Map<string, number>>();
    counts.set(kind, byPhase);
    const byClass = byPhase.get(at) ?? new Map<string, number>();
    byPhase.set(at, byClass);
    byClass.set(cls, (byClass.get(cls) ?? 0) + 1);
  };

  /** One request, classified; returns the class and the response body text on success. */
  async function request(
    kind: Kind,
    path: string,
    init: RequestInit = {},
  ): Promise<{ cls: string; text?: string }> {
    const started = performance.now();
    const at = phase;
    inFlight++;
    let cls: string;
    let text: string | undefined;
    try {
      const res = await fetch(`${options.base}${path}`, { ...init, signal: AbortSignal.timeout(timeoutMs) });
      text = await res.text();
      if (res.status >= 200 && res.status < 300) cls = "2xx";
      else if (res.status === 304) cls = "304";
      else {
        let code = "";
        try {
          code = (JSON.parse(text) as { code?: string }).code ?? "";
        } catch {
          code = "non-json";
        }
        cls = `${res.status} ${code}`.trim();
        if (failures.length < keep)
          failures.push({
            kind,
            phase: at,
            cls,
            status: res.status,
            retryAfter: res.headers.get("retry-after"),
            contentType: res.headers.get("content-type"),
            at: Date.now(),
            ms: performance.now() - started,
            detail: text.slice(0, 300),
          });
      }
    } catch (error) {
      const e = error as { name?: string; code?: string; message?: string };
      cls = e.name === "TimeoutError" ? "timeout" : `network ${e.code ?? e.name ?? "error"}`;
      if (failures.length < keep)
        failures.push({
          kind,
          phase: at,
          cls,
          status: 0,
          retryAfter: null,
          contentType: null,
          at: Date.now(),
          ms: performance.now() - started,
          detail: e.message,
        });
    } finally {
      inFlight--;
    }
    const ms = performance.now() - started;
    const h = latency.get(kind) ?? new Histogram();
    latency.set(kind, h);
    h.record(ms);
    // A request in flight while the phase changed belongs to neither: "before->pg down".
    count(kind, at === phase ? at : `${at}->${phase}`, cls);
    // Nobody listening (a stopped registry): do not spin on refused connections.
    if (cls.startsWith("network")) await Bun.sleep(20);
    return { cls, text: isSuccess(cls) ? text : undefined };
  }

  const auth = { authorization: `Bearer ${options.token}` };
  const json = { ...auth, "content-type": "application/json" };
  const pick = <T>(list: T[]): T | undefined => list[Math.floor(Math.random() * list.length)];

  const steps: Record<Kind, () => Promise<void>> = {
    read: async () => {
      const id = pick(options.readIds());
      if (id) await request("read", `/v1/agents/${id}`);
      else await Bun.sleep(50);
    },
    search: async () => {
      // A word of an agent that exists (or of a seeded one): the search has something to find.
      const n = Math.floor(Math.random() * Math.max(1, published));
      await request("search", `/v1/search?q=${encodeURIComponent(searchWord(options.prefix, n))}&limit=5`);
    },
    publish: async () => {
      const n = published++;
      const cardText = JSON.stringify(uniqueCard(options.prefix, n));
      const { cls, text } = await request("publish", "/v1/agents", {
        method: "POST",
        headers: json,
        body: `{"card":${cardText}}`,
      });
      if (cls === "2xx" && text) {
        const write = {
          id: (JSON.parse(text) as { id: string }).id,
          sha256: sha256(cardText),
          name: searchWord(options.prefix, n),
        };
        acked.push(write);
        live.push(write);
      }
    },
    update: async () => {
      const target = pick(live);
      if (!target || busy.has(target.id)) return void (await Bun.sleep(20));
      busy.add(target.id);
      try {
        const n = Number(target.name.slice(target.name.lastIndexOf("x") + 1));
        const version = `1.${Date.now() % 1_000_000}.${Math.floor(Math.random() * 1000)}`;
        const cardText = JSON.stringify(uniqueCard(options.prefix, n, version));
        const { cls } = await request("update", `/v1/agents/${target.id}`, {
          method: "PUT",
          headers: json,
          body: `{"card":${cardText}}`,
        });
        if (cls === "2xx") {
          target.sha256 = sha256(cardText);
          uncertain.delete(target.id);
        } else if (cls === "timeout" || cls.startsWith("network") || cls.startsWith("5")) {
          uncertain.add(target.id);
        }
      } finally {
        busy.delete(target.id);
      }
    },
    delete: async () => {
      // Keep most of what was published (one in ten deleted at most), or keep the live set bounded.
      const overCap = options.maxLive !== undefined && live.length > options.maxLive;
      if (live.length < 10 || (!overCap && deleted.size * 10 >= acked.length))
        return void (await Bun.sleep(100));
      const index = Math.floor(Math.random() * live.length);
      const target = live[index]!;
      if (busy.has(target.id)) return;
      busy.add(target.id);
      live.splice(index, 1);
      const { cls } = await request("delete", `/v1/agents/${target.id}`, { method: "DELETE", headers: auth });
      // A delete that failed for sure leaves the agent live; an unknown outcome is checked either way.
      if (cls === "2xx") deleted.add(target.id);
      else if (cls.startsWith("4")) live.push(target);
      else {
        uncertain.add(target.id);
        deleted.add(target.id);
      }
      busy.delete(target.id);
    },
  };

  const loops: Promise<void>[] = [];
  for (const [kind, n] of Object.entries(options.workers) as Array<[Kind, number]>) {
    for (let w = 0; w < n; w++)
      loops.push(
        (async () => {
          while (running) {
            await steps[kind]();
            if (options.pauseMs) await Bun.sleep(options.pauseMs);
          }
        })(),
      );
  }

  return {
    get phase() {
      return phase;
    },
    set phase(value: string) {
      phase = value;
    },
    inFlight: () => inFlight,
    /** Class -> count for one kind, over the given phases (all when omitted). */
    classes(kind: Kind, phases?: string[]): Record<string, number> {
      const out: Record<string, number> = {};
      for (const [at, byClass] of counts.get(kind) ?? [])
        if (!phases || phases.includes(at)) for (const [cls, n] of byClass) out[cls] = (out[cls] ?? 0) + n;
      return out;
    },
    /** Requests of `kind` in `phases` that did not succeed. */
    failed(kind: Kind, phases?: string[]): number {
      return Object.entries(this.classes(kind, phases))
        .filter(([cls]) => !isSuccess(cls))
        .reduce((sum, [, n]) => sum + n, 0);
    },
    succeeded(kind: Kind, phases?: string[]): number {
      return Object.entries(this.classes(kind, phases))
        .filter(([cls]) => isSuccess(cls))
        .reduce((sum, [, n]) => sum + n, 0);
    },
    counts,
    latency,
    failures,
    acked,
    /** Acknowledged and not deleted by this load, with the hash of the latest acknowledged card. */
    live: () => live.filter((w) => !deleted.has(w.id)),
    deleted,
    /** Agents whose last update or delete has an unknown outcome: presence and bytes are not asserted. */
    uncertain,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

export type Load = ReturnType<typeof startLoad>;

/** "2xx: 120, 503 DEPENDENCY_UNAVAILABLE: 14" */
export function describeClasses(classes: Record<string, number>): string {
  return (
    Object.entries(classes)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([cls, n]) => `${cls}: ${n}`)
      .join(", ") || "none"
  );
}
