import { createHmac, randomBytes } from "node:crypto";
import type { Config } from "../../config";
import { ApiError } from "../../errors";
import type { Audit } from "../../infra/audit";
import type { Database, Executor } from "../../infra/db/client";
import type { AgentRow } from "../../infra/db/schema";
import { OutboundFetchError, type SafeFetchOptions, safeFetch } from "../../infra/http";
import type { Logger } from "../../infra/logger";
import type { Metrics } from "../../infra/metrics";
import type { WriteContext } from "../agents/service";
import { UUID_PATTERN } from "../agents/repo";
import type { Caller } from "../auth/model";
import { decryptSecret, encryptSecret } from "../federation/crypto";
import type { CreateWebhookInput, WebhookEvent } from "./model";
import { type WebhookRow, webhooksRepo } from "./repo";

export type WebhooksDeps = {
  config: Config;
  database: Database;
  audit: Audit;
  metrics: Metrics;
  logger: Logger;
  fetchOptions?: Partial<SafeFetchOptions>;
};

const BATCH = 50;
const LEASE_SECONDS = 60;
const MAX_BACKOFF_SECONDS = 3600;
/** First retry after about this long, doubling each time (10 s, 20 s, 40 s, ... capped at an hour). */
const FIRST_RETRY_SECONDS = 10;

/** The signature header a receiver checks: HMAC-SHA256 over `${t}.${body}` with the webhook secret. */
export function signatureHeader(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac("sha256", secret).update(`${unixSeconds}.${body}`).digest("hex");
  return `t=${unixSeconds},v1=${mac}`;
}

/** What a delivery says about the agent: enough to act on, with the record's URL for the rest. */
export function eventPayload(event: WebhookEvent, agent: AgentRow, registryBaseUrl: string): string {
  return JSON.stringify({
    event,
    occurredAt: new Date().toISOString(),
    agent: {
      id: agent.id,
      name: agent.name,
      url: agent.url,
      version: agent.latestVersion,
      status: agent.status,
      visibility: agent.visibility,
      health: agent.health,
      owner: agent.owner,
      seq: agent.seq,
      href: `${registryBaseUrl}/v1/agents/${agent.id}`,
    },
  });
}

function view(row: WebhookRow) {
  return {
    id: row.id,
    url: row.url,
    events: row.events as WebhookEvent[],
    owner: row.owner,
    createdAt: row.createdAt.toISOString(),
  };
}

/**
 * Webhooks: owners (and admins, for every agent) subscribe a URL to agent events. Deliveries are rows
 * written in the same transaction as the change, so nothing committed is lost to a crash or restart;
 * a loop in every instance claims due rows (skip locked), POSTs them signed, and retries failures with
 * exponential backoff until WEBHOOK_MAX_ATTEMPTS, keeping each attempt's outcome for the delivery log.
 */
export function createWebhooksService(deps: WebhooksDeps) {
  const { config, database, audit, metrics, logger } = deps;
  const repo = webhooksRepo(database);
  const fetchOptions: SafeFetchOptions = {
    allowInsecure: config.debug,
    maxBytes: 64 * 1024,
    timeoutMs: config.webhooks.timeoutMs,
    maxRedirects: 0,
    ...deps.fetchOptions,
  };
  let timer: ReturnType<typeof setInterval> | undefined;
  let running: Promise<number> | undefined;
  let stopped = false;

  function ownerOf(caller: Caller) {
    if (caller.kind !== "client") throw new ApiError("UNAUTHORIZED", "Webhooks need a bearer token");
    return caller;
  }

  async function visibleWebhook(caller: Caller, id: string) {
    const client = ownerOf(caller);
    const row = UUID_PATTERN.test(id) ? await repo.find(id) : undefined;
    if (!row || (!client.admin && row.owner !== client.clientId))
      throw new ApiError("NOT_FOUND", `No webhook ${id}`);
    return row;
  }

  async function deliverOne(delivery: Awaited<ReturnType<typeof repo.claimDue>>[number]) {
    const attempt = delivery.attempts + 1;
    let statusCode: number | null = null;
    let error: string;
    try {
      const secret = await decryptSecret(config.secretKey, delivery.webhook_id, delivery.secret_enc);
      const response = await safeFetch(delivery.url, {
        ...fetchOptions,
        method: "POST",
        body: delivery.payload,
        headers: {
          "content-type": "application/json",
          "user-agent": `${config.appName}/${config.appVersion} webhooks`,
          "x-a2a-event": delivery.event,
          "x-a2a-delivery": String(delivery.id),
          "x-a2a-signature": signatureHeader(secret, delivery.payload, Math.floor(Date.now() / 1000)),
        },
      });
      statusCode = response.status;
      if (response.status >= 200 && response.status < 300) {
        await repo.markDelivered(delivery.id, response.status);
        metrics.webhookDeliveries.inc({ result: "delivered" });
        return;
      }
      error = `receiver answered HTTP ${response.status}`;
    } catch (caught) {
      error = caught instanceof OutboundFetchError ? caught.message : (caught as Error).message;
    }
    const giveUp = attempt >= config.webhooks.maxAttempts;
    const backoff =
      Math.min(MAX_BACKOFF_SECONDS, FIRST_RETRY_SECONDS * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
    await repo.markFailedAttempt(delivery.id, { statusCode, error, retryInSeconds: giveUp ? null : backoff });
    metrics.webhookDeliveries.inc({ result: giveUp ? "failed" : "retry" });
    logger.info({ delivery: delivery.id, attempt, error, giveUp }, "webhook delivery failed");
  }

  async function deliverDueOnce(): Promise<number> {
    let sent = 0;
    while (!stopped) {
      const due = await repo.claimDue(BATCH, LEASE_SECONDS);
      if (due.length === 0) break;
      // Webhooks in parallel, each one's deliveries in order (oldest first), so a receiver sees events
      // of one batch in the order they happened; agent.seq in the payload orders the rest.
      const byWebhook = Map.groupBy(
        due.sort((a, b) => a.id - b.id),
        (delivery) => delivery.webhook_id,
      );
      await Promise.all(
        [...byWebhook.values()].map(async (deliveries) => {
          for (const delivery of deliveries) await deliverOne(delivery);
        }),
      );
      sent += due.length;
      if (due.length < BATCH) break;
    }
    return sent;
  }

  const service = {
    async create(ctx: WriteContext, input: CreateWebhookInput) {
      const client = ownerOf(ctx.caller);
      let url: URL;
      try {
        url = new URL(input.url);
      } catch {
        throw new ApiError("VALIDATION_FAILED", "url is not a URL", {
          errors: [{ path: "/url", message: "must be an absolute URL" }],
        });
      }
      if (url.protocol !== "https:" && !(config.debug && url.protocol === "http:"))
        throw new ApiError("VALIDATION_FAILED", "Webhook URLs must use https", {
          errors: [{ path: "/url", message: "must be https" }],
        });
      if (url.username || url.password)
        throw new ApiError("VALIDATION_FAILED", "Webhook URLs must not carry credentials", {
          errors: [{ path: "/url", message: "remove user:password@ and authenticate with the signature" }],
        });
      const id = Bun.randomUUIDv7();
      const secret = `whsec_${randomBytes(32).toString("base64url")}`;
      const row = await database.db.transaction(async (tx) => {
        const inserted = await repo.insert(
          {
            id,
            owner: client.clientId,
            url: url.toString(),
            events: input.events,
            secretEnc: await encryptSecret(config.secretKey, id, secret),
          },
          tx,
        );
        await audit.record(
          {
            actor: client.clientId,
            action: "webhook.created",
            target: id,
            outcome: "success",
            ip: ctx.ip,
            requestId: ctx.requestId,
            details: { url: url.origin, events: input.events },
          },
          tx,
        );
        return inserted;
      });
      return { ...view(row), secret };
    },

    async list(caller: Caller) {
      const client = ownerOf(caller);
      const rows = await repo.list(client.admin ? undefined : client.clientId);
      return { items: rows.map(view) };
    },

    async get(caller: Caller, id: string) {
      return view(await visibleWebhook(caller, id));
    },

    async remove(ctx: WriteContext, id: string) {
      const row = await visibleWebhook(ctx.caller, id);
      await database.db.transaction(async (tx) => {
        await repo.remove(row.id, tx);
        await audit.record(
          {
            actor: ownerOf(ctx.caller).clientId,
            action: "webhook.deleted",
            target: row.id,
            outcome: "success",
            ip: ctx.ip,
            requestId: ctx.requestId,
            details: { url: new URL(row.url).origin },
          },
          tx,
        );
      });
    },

    async deliveries(caller: Caller, id: string, limit: number, cursor: string | undefined) {
      const row = await visibleWebhook(caller, id);
      let beforeId: number | undefined;
      if (cursor !== undefined && cursor !== "") {
        beforeId = /^[0-9]{1,15}$/.test(cursor) ? Number(cursor) : Number.NaN;
        if (!Number.isSafeInteger(beforeId))
          throw new ApiError("VALIDATION_FAILED", "Malformed cursor", {
            errors: [{ path: "/query/cursor", message: "Not a cursor this registry issued" }],
          });
      }
      const rows = await repo.deliveries(row.id, beforeId, limit + 1);
      const page = rows.slice(0, limit);
      return {
        items: page.map((d) => ({
          id: d.id,
          event: d.event as WebhookEvent,
          agentId: d.agentId,
          status: d.status,
          attempts: d.attempts,
          lastStatusCode: d.lastStatusCode,
          lastError: d.lastError,
          createdAt: d.createdAt.toISOString(),
          deliveredAt: d.deliveredAt?.toISOString() ?? null,
          nextAttemptAt: d.status === "pending" ? d.nextAttemptAt.toISOString() : null,
        })),
        nextCursor: rows.length > limit && page.length > 0 ? String(page.at(-1)!.id) : null,
      };
    },

    /**
     * Inside an agent write's transaction: queue the event of each agent for every subscribed webhook,
     * in one statement. Returns how many deliveries were queued (none: nothing for kick() to send).
     */
    emit(event: WebhookEvent, agents: AgentRow[], executor: Executor): Promise<number> {
      return repo.enqueue(
        event,
        agents.map((agent) => ({
          id: agent.id,
          owner: agent.owner,
          payload: eventPayload(event, agent, config.registryBaseUrl),
        })),
        executor,
      );
    },

    /** Sends what is due now; concurrent callers share one pass. */
    deliverDue(): Promise<number> {
      running ??= deliverDueOnce()
        .catch((error) => {
          logger.warn({ err: error }, "webhook delivery pass failed");
          return 0;
        })
        .finally(() => {
          running = undefined;
        });
      return running;
    },

    /** After a commit that queued deliveries: send them now rather than at the next tick. */
    kick() {
      if (timer) void service.deliverDue();
    },

    start(intervalMs = 1000) {
      stopped = false;
      if (timer) return;
      timer = setInterval(() => void service.deliverDue(), intervalMs);
      timer.unref?.();
    },

    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
    },
  };
  return service;
}

export type WebhooksService = ReturnType<typeof createWebhooksService>;
