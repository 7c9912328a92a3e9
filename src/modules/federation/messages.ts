/**
 * Messages between the main thread and the sync worker thread (structured clone, no shared memory).
 *
 * main -> worker: `init` once, then `wake` (peers changed or a sync was requested), `stop`, and the
 * `result` of each call the worker made.
 * worker -> main: `ready`, `heartbeat` (every HEARTBEAT_MS; readiness reports a worker that stops
 * beating as down), `call` (hooks always; store calls too on embedded PGlite, which only the main
 * thread can open), `report` after each run (metrics), `stopped`, `fatal`.
 */
import type { Config } from "../../config";
import type { RunReport } from "./engine";
import { FeedFormatError } from "./page";

export const HEARTBEAT_MS = 2000;

export type WorkerInit = {
  type: "init";
  config: Config;
  /** direct: the worker opens Postgres itself. relay: database work is sent to the main thread. */
  mode: "direct" | "relay";
  instance: string;
};

export type CallResult =
  | { type: "result"; id: number; ok: true; value: unknown }
  | { type: "result"; id: number; ok: false; error: { message: string; name: string; code?: string } };

export type ToWorker = WorkerInit | { type: "wake" } | { type: "stop" } | CallResult;

export type CallTarget = "store" | "hooks";

export type FromWorker =
  | { type: "ready" }
  | { type: "heartbeat"; running: string[] }
  | { type: "call"; id: number; target: CallTarget; method: string; args: unknown[] }
  | { type: "report"; report: RunReport }
  | { type: "stopped" }
  | { type: "fatal"; error: string };

/** An error as it crosses the thread boundary: message, name and the store's `code` survive. */
export function errorToWire(error: unknown): { message: string; name: string; code?: string } {
  const e = error instanceof Error ? error : new Error(String(error));
  const code = (e as { code?: unknown }).code;
  return { message: e.message, name: e.name, ...(typeof code === "string" ? { code } : {}) };
}

export function errorFromWire(wire: { message: string; name: string; code?: string }): Error {
  if (wire.name === "FeedFormatError") return new FeedFormatError(wire.message);
  const error = new Error(wire.message);
  error.name = wire.name;
  if (wire.code) Object.assign(error, { code: wire.code });
  return error;
}

/** The caller's side of calls to the other thread: one pending promise per id. */
export function createCaller(post: (message: FromWorker) => void) {
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  return {
    call<T>(target: CallTarget, method: string, args: unknown[]): Promise<T> {
      const id = ++next;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        post({ type: "call", id, target, method, args });
      });
    },
    settle(result: CallResult) {
      const waiting = pending.get(result.id);
      if (!waiting) return;
      pending.delete(result.id);
      if (result.ok) waiting.resolve(result.value);
      else waiting.reject(errorFromWire(result.error));
    },
    /** Fails every pending call (the other side went away). */
    abandon(reason: string) {
      for (const waiting of pending.values()) waiting.reject(new Error(reason));
      pending.clear();
    },
  };
}
