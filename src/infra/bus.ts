import type Redis from "ioredis";
import type { Logger } from "./logger";

/** `kind` names what changed ("agent", "client"), `id` which one. */
export type Invalidation = { kind: string; id: string };
type Wire = Invalidation & { from: string; nonce: number };

const CHANNEL = "a2a:invalidate";
/** How long a writer waits to see its own invalidation come back through Redis. */
const ECHO_WAIT_MS = 1000;

/**
 * Invalidations every instance obeys. Without Redis it is in-process only (one instance, nothing to
 * tell). With Redis, `publish` resolves once the message has come back to this instance's own
 * subscriber: Redis fans a message out to all subscribers before that, so by the time a write returns
 * the other instances have been sent the invalidation too.
 *
 * `coherent()` is false while the subscriber is disconnected: invalidations may then be missed, so the
 * caches stop trusting their in-process copies until the subscription is back.
 */
export function createInvalidationBus(options: { subscriber?: Redis; publisher?: Redis; logger: Logger }) {
  const { subscriber, publisher, logger } = options;
  const instance = crypto.randomUUID();
  const handlers = new Set<(message: Invalidation) => void>();
  const coherenceListeners = new Set<(coherent: boolean) => void>();
  const echoes = new Map<number, () => void>();
  let nonce = 0;
  let subscribed = subscriber === undefined;

  const deliver = (message: Invalidation) => {
    for (const handler of handlers) handler(message);
  };
  const setCoherent = (value: boolean) => {
    if (subscribed === value) return;
    subscribed = value;
    for (const listener of coherenceListeners) listener(value);
  };

  if (subscriber) {
    subscriber.on("message", (_channel: string, text: string) => {
      let wire: Wire;
      try {
        wire = JSON.parse(text) as Wire;
      } catch {
        return;
      }
      if (wire.from === instance) {
        echoes.get(wire.nonce)?.();
        return;
      }
      deliver({ kind: wire.kind, id: wire.id });
    });
    const subscribe = () => {
      subscriber
        .subscribe(CHANNEL)
        .then(() => setCoherent(true))
        .catch((error: Error) => logger.warn({ err: error.message }, "invalidation subscribe failed"));
    };
    subscriber.on("ready", subscribe);
    subscriber.on("close", () => setCoherent(false));
    if (subscriber.status === "ready") subscribe();
  }

  return {
    instance,
    coherent: () => subscribed,
    /** Whether other processes hear these invalidations (Redis), or only this one. */
    distributed: publisher !== undefined,
    onInvalidation(handler: (message: Invalidation) => void) {
      handlers.add(handler);
    },
    onCoherenceChange(listener: (coherent: boolean) => void) {
      coherenceListeners.add(listener);
    },
    /** Applies locally at once, then tells the other instances; never rejects. Returns whether they were told. */
    async publish(message: Invalidation): Promise<boolean> {
      deliver(message);
      if (!publisher) return true;
      const id = ++nonce;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const echoed = new Promise<boolean>((resolve) => {
        echoes.set(id, () => resolve(true));
        timer = setTimeout(() => resolve(false), ECHO_WAIT_MS);
      });
      try {
        await publisher.publish(
          CHANNEL,
          JSON.stringify({ ...message, from: instance, nonce: id } satisfies Wire),
        );
        return subscriber && subscribed ? await echoed : true;
      } catch (error) {
        logger.debug({ err: (error as Error).message }, "invalidation publish failed");
        return false;
      } finally {
        clearTimeout(timer);
        echoes.delete(id);
      }
    },
  };
}

export type InvalidationBus = ReturnType<typeof createInvalidationBus>;
