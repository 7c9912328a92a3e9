import type { Database } from "../../infra/db/client";
import type { Caller } from "../auth/model";
import type { Stats } from "./model";
import { statsRepo } from "./repo";

const DAY_MS = 86_400_000;
/** Answers stay this long at most, and only while no agent changed (the change sequence is unchanged). */
const CACHE_TTL_MS = 10_000;
const CACHE_ENTRIES = 512;

/** One cache line per kind of viewer: what anonymous callers see is the same for all of them. */
function viewerKey(caller: Caller): string {
  if (caller.kind !== "client") return "public";
  return caller.admin ? "admin" : `client:${caller.clientId}`;
}

/** Midnight UTC of the first day of a window of `days` days ending today. */
export function windowStart(now: Date, days: number): Date {
  const today = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return new Date(today - (days - 1) * DAY_MS);
}

export function createStatsService(deps: { database: Database; now?: () => Date }) {
  const repo = statsRepo(deps.database);
  const now = deps.now ?? (() => new Date());
  const cache = new Map<string, { at: number; maxSeq: number; stats: Stats }>();

  async function compute(caller: Caller, days: number): Promise<Stats> {
    const since = windowStart(now(), days);
    const [counts, perDay] = await Promise.all([
      repo.counts(caller, since),
      repo.registrationsPerDay(caller, since),
    ]);
    const buckets = Array.from({ length: days }, (_, i) => {
      const date = new Date(since.getTime() + i * DAY_MS).toISOString().slice(0, 10);
      return { date, count: perDay.get(date) ?? 0 };
    });
    return {
      total: counts.total,
      byStatus: { active: counts.active, deprecated: counts.deprecated },
      byHealth: { up: counts.up, down: counts.down, unknown: counts.unknown },
      bySignature: { none: counts.sigNone, valid: counts.sigValid, invalid: counts.sigInvalid },
      bySource: { local: counts.local, federated: counts.federated },
      registrations: { days, before: counts.before, buckets },
      generatedAt: now().toISOString(),
    };
  }

  return {
    /** Counts of what `caller` may see: public agents, plus own, entitled, or all of them for admins. */
    async stats(caller: Caller, days = 30): Promise<Stats> {
      const key = `${viewerKey(caller)}|${days}|${windowStart(now(), days).toISOString()}`;
      const maxSeq = await repo.maxSeq();
      const hit = cache.get(key);
      if (hit && hit.maxSeq === maxSeq && performance.now() - hit.at < CACHE_TTL_MS) return hit.stats;
      const stats = await compute(caller, days);
      cache.delete(key);
      if (cache.size >= CACHE_ENTRIES) cache.delete(cache.keys().next().value!);
      cache.set(key, { at: performance.now(), maxSeq, stats });
      return stats;
    },
  };
}

export type StatsService = ReturnType<typeof createStatsService>;
