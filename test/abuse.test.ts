/**
 * Abuse (issue 8, part 5): a flood from one client meets the rate limiter exactly; slow bodies are cut
 * off by the server's idle timeout; oversized bodies are refused early without being buffered; huge
 * cards are refused by the documented card limits, with a path.
 *
 * The limiter runs in-process, and against a real Redis shared by two app instances when
 * TEST_REDIS_URL is set. Slow and oversized bodies go over raw TCP to a real `bun src/index.ts`, which
 * is what production runs (its Bun server settings included). No timing assertions: only "eventually".
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { CARD_LIMITS } from "../src/modules/agents/card";
import { REQUEST_IDLE_TIMEOUT_SECONDS } from "../src/infra/web";
import { createTestApp, json, type TestApp } from "./support/app";
import { BACKENDS, createTestDatabase } from "./support/db";
import { recordFigures } from "./support/figures";
import { freshCard } from "./support/fuzz";

const ROOT = resolve(import.meta.dir, "..");
const FLOOD = 10_000;
const BUCKET = 50;
/** So long that no token refills during the test: the bucket holds exactly BUCKET for the flood. */
const DAY_MS = 86_400_000;

type Problem = { code: string; status: number; errors?: Array<{ path: string; message: string }> };

async function flood(send: (i: number) => Promise<Response>) {
  let ok = 0;
  let limited = 0;
  const other: string[] = [];
  const bad: string[] = [];
  for (let start = 0; start < FLOOD; start += 200) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(200, FLOOD - start) }, (_, k) => send(start + k)),
    );
    for (const res of batch) {
      if (res.status === 200) {
        ok++;
        if (res.headers.get("ratelimit-limit") !== String(BUCKET))
          bad.push(`200 with RateLimit-Limit ${res.headers.get("ratelimit-limit")}`);
        await res.arrayBuffer();
      } else if (res.status === 429) {
        limited++;
        const retry = Number(res.headers.get("retry-after"));
        const body = (await res.json()) as Problem;
        if (!(retry >= 1) || body.code !== "RATE_LIMITED" || res.headers.get("ratelimit-remaining") !== "0")
          bad.push(
            `429 with Retry-After ${res.headers.get("retry-after")}, code ${body.code}, remaining ${res.headers.get("ratelimit-remaining")}`,
          );
      } else other.push(`${res.status} ${await res.text()}`);
    }
  }
  return { ok, limited, other, bad: bad.slice(0, 5) };
}

function recordFlood(backend: string, check: string, result: Awaited<ReturnType<typeof flood>>) {
  recordFigures({
    suite: "abuse",
    backend,
    check,
    figures: {
      requests: result.ok + result.limited + result.other.length,
      expectedPassed: BUCKET,
      passed: result.ok,
      limited: result.limited,
      other: result.other.length,
      fiveXx: result.other.filter((line) => /^5\d\d /.test(line)).length,
      badHeaders: result.bad.length,
    },
  });
}

for (const backend of BACKENDS) {
  describe(`abuse: the rate limiter under a flood [${backend}]`, () => {
    const limits = (read: { limit: number; periodMs: number }) => {
      const generous = { limit: 1_000_000, periodMs: 1000 };
      return { token: generous, read, search: generous, write: generous, admin: generous };
    };

    test(`${FLOOD} requests from one client: exactly ${BUCKET} pass, the rest are 429 with Retry-After (in-process)`, async () => {
      const t = await createTestApp(backend, {
        config: { rateLimits: limits({ limit: BUCKET, periodMs: DAY_MS }) },
      });
      try {
        const writer = await t.client(["agents:write"], "flooder");
        const published = await t.request("/v1/agents", {
          method: "POST",
          token: writer.token,
          json: { card: freshCard("Flood") },
        });
        expect(published.status).toBe(201);
        const { id } = await json<{ id: string }>(published);
        // Half cached agent reads (answered by the fast path once warm), half lists: one "read" bucket.
        const result = await flood((i) =>
          t.request(i % 2 ? `/v1/agents/${id}` : "/v1/agents?limit=1", { token: writer.token }),
        );
        console.log(
          `abuse [${backend}] in-process limiter: ${FLOOD} requests, ${result.ok} passed, ${result.limited} limited`,
        );
        recordFlood(backend, "limiter-in-process", result);
        expect(result).toEqual({ ok: BUCKET, limited: FLOOD - BUCKET, other: [], bad: [] });
      } finally {
        await t.close();
      }
    }, 300_000);

    test.skipIf(!process.env.TEST_REDIS_URL)(
      `${FLOOD} requests from one client spread over two instances sharing Redis: exactly ${BUCKET} pass`,
      async () => {
        const db = await createTestDatabase(backend);
        const options = {
          db,
          redisUrl: process.env.TEST_REDIS_URL,
          config: { rateLimits: limits({ limit: BUCKET, periodMs: DAY_MS }) },
        };
        const a = await createTestApp(backend, options);
        const b = await createTestApp(backend, options);
        try {
          expect(a.app.services.limiter.mode()).toBe("redis");
          const reader = await a.client(["agents:read"], "flooder over redis");
          const result = await flood((i) =>
            (i % 2 ? a : b).request("/v1/agents?limit=1", { token: reader.token }),
          );
          console.log(
            `abuse [${backend}] redis limiter, two instances: ${FLOOD} requests, ${result.ok} passed, ${result.limited} limited`,
          );
          recordFlood(backend, "limiter-redis-two-instances", result);
          expect(result).toEqual({ ok: BUCKET, limited: FLOOD - BUCKET, other: [], bad: [] });
        } finally {
          await a.close();
          await b.close();
          await db.drop();
        }
      },
      300_000,
    );
  });
}

// ---------------------------------------------------------------------------------------------------
// Against the real server: bun src/index.ts
// ---------------------------------------------------------------------------------------------------

type Raw = {
  text: () => string;
  closed: Promise<void>;
  isClosed: () => boolean;
  write: (data: string | Uint8Array) => number;
  end: () => void;
};

/** A raw TCP connection: what it receives, and whether the server closed it. */
async function connect(port: number): Promise<Raw> {
  let received = "";
  let closed = false;
  const done = Promise.withResolvers<void>();
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, data) {
        received += data.toString("latin1");
      },
      close() {
        closed = true;
        done.resolve();
      },
      error() {
        closed = true;
        done.resolve();
      },
    },
  });
  return {
    text: () => received,
    closed: done.promise,
    isClosed: () => closed,
    write: (data) => (closed ? 0 : socket.write(data)),
    end: () => socket.end(),
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const statusOf = (text: string) => Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);

function memoryKb(pid: number, field: "VmRSS" | "VmHWM") {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
}

describe("abuse: slow and oversized bodies against bun src/index.ts", () => {
  let server: Subprocess<"ignore", "pipe", "pipe">;
  let port = 0;
  let dataDir = "";
  let logs = "";

  beforeAll(async () => {
    dataDir = mkdtempSync(join(tmpdir(), "a2a-abuse-"));
    server = Bun.spawn(["bun", "src/index.ts"], {
      cwd: ROOT,
      env: {
        ...process.env,
        DEBUG: "true",
        PORT: "0",
        HOST: "127.0.0.1",
        DATA_DIR: dataDir,
        LOG_LEVEL: "info",
        ENABLE_FEDERATION: "false",
        PROBE_ENABLED: "false",
        WEB_CONCURRENCY: "1",
        DATABASE_URL: "",
        REDIS_URL: "",
      },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const reader = server.stdout.getReader();
    const deadline = Date.now() + 120_000;
    while (!port && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      logs += new TextDecoder().decode(value);
      const match = /"port":(\d+)/.exec(logs);
      if (match) port = Number(match[1]);
    }
    // Keep draining the logs so the child never blocks on a full pipe.
    void (async () => {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        logs += new TextDecoder().decode(value);
      }
    })();
    if (!port) throw new Error(`server did not start: ${logs}\n${await new Response(server.stderr).text()}`);
  }, 150_000);

  afterAll(async () => {
    server?.kill("SIGTERM");
    await server?.exited;
    rmSync(dataDir, { recursive: true, force: true });
  });

  const metric5xx = async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    return text
      .split("\n")
      .filter((line) => line.startsWith("a2a_registry_requests_total") && /status_code="5\d\d"/.test(line));
  };

  test(`a body trickled a byte a second is cut off (idleTimeout ${REQUEST_IDLE_TIMEOUT_SECONDS} s), counted as the client's fault`, async () => {
    const conn = await connect(port);
    conn.write(
      "POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
    );
    let sent = 1;
    const giveUp = Date.now() + (REQUEST_IDLE_TIMEOUT_SECONDS + 90) * 1000;
    while (!conn.isClosed() && Date.now() < giveUp) {
      await sleep(1000);
      if (conn.write(" ") > 0) sent++;
    }
    expect(conn.isClosed()).toBe(true);
    // Far fewer bytes than declared: the server stopped waiting for the rest.
    expect(sent).toBeLessThan(1000);
    // The server lives on, and an aborted body is a 400 in its metrics and logs, not a 500.
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    expect(await metric5xx()).toEqual([]);
    expect(logs).not.toContain('"unhandled error"');
  }, 240_000);

  test("headers that never end are cut off too", async () => {
    const conn = await connect(port);
    conn.write("GET /v1/agents HTTP/1.1\r\nHost: x\r\n");
    const giveUp = Date.now() + (REQUEST_IDLE_TIMEOUT_SECONDS + 90) * 1000;
    let i = 0;
    while (!conn.isClosed() && Date.now() < giveUp) {
      await sleep(1000);
      conn.write(`X-Slow-${i++}: a\r\n`);
    }
    expect(conn.isClosed()).toBe(true);
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
  }, 240_000);

  test("a declared 2 GiB body (or 3 MiB: past Bun's old backstop) is refused with 413 problem+json before any is sent", async () => {
    for (const length of [2 ** 31, 3 * 1024 * 1024]) {
      const conn = await connect(port);
      conn.write(
        `POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n\r\n`,
      );
      for (let i = 0; i < 600 && !conn.text().includes("\r\n\r\n{") && !conn.isClosed(); i++)
        await sleep(100);
      const answer = conn.text();
      expect(statusOf(answer)).toBe(413);
      // Bun's own bare "413 Request Entity Too Large" answered this before the app saw it: no problem+json.
      expect(answer.toLowerCase()).toContain("content-type: application/problem+json");
      expect(answer.toLowerCase()).toContain("x-request-id: ");
      expect(answer).toContain('"code":"PAYLOAD_TOO_LARGE"');
      conn.end();
    }
  }, 120_000);

  const unbounded = (head: string) => async () => {
    const pid = server.pid;
    const rssBefore = memoryKb(pid, "VmRSS");
    const conn = await connect(port);
    conn.write(head);
    const chunk = new TextEncoder().encode(`10000\r\n${"x".repeat(0x10000)}\r\n`);
    const ceiling = 256 * 1024 * 1024;
    let accepted = 0;
    // Push as fast as the server takes it, until it answers or closes (or the ceiling is reached).
    while (accepted < ceiling && !conn.isClosed() && !conn.text().includes("\r\n\r\n")) {
      const n = conn.write(chunk);
      accepted += n;
      if (n < chunk.length) await sleep(20);
    }
    for (let i = 0; i < 300 && !conn.text().includes("\r\n\r\n") && !conn.isClosed(); i++) await sleep(100);
    const answer = conn.text();
    const rssAfter = memoryKb(pid, "VmRSS");
    console.log(
      `abuse oversized: server answered ${statusOf(answer)} after ${(accepted / 1048576).toFixed(1)} MiB pushed; RSS ${Math.round(rssBefore / 1024)} -> ${Math.round(rssAfter / 1024)} MiB`,
    );
    expect(statusOf(answer)).toBeGreaterThanOrEqual(400);
    expect(statusOf(answer)).toBeLessThan(500);
    // Answered long before the ceiling, and what it did read stayed far below the ceiling in memory.
    expect(accepted).toBeLessThan(ceiling);
    expect(rssAfter - rssBefore).toBeLessThan(64 * 1024);
    conn.end();
    expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200);
    expect(await metric5xx()).toEqual([]);
    return answer;
  };

  test("a chunked JSON body of unbounded size gets 413 early; the server does not buffer it (memory does not grow by it)", async () => {
    const answer = await unbounded(
      "POST /v1/agents HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )();
    expect(statusOf(answer)).toBe(413);
    expect(answer).toContain('"code":"PAYLOAD_TOO_LARGE"');
    expect(answer.toLowerCase()).toContain("connection: close");
  }, 180_000);

  test("unbounded chunked bodies the app does not read (no content type; a bodiless route) are not buffered either", async () => {
    await unbounded("POST /v1/agents HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")();
    await unbounded(
      "POST /v1/agents/00000000-0000-7000-8000-000000000000/heartbeat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )();
  }, 180_000);
});

// ---------------------------------------------------------------------------------------------------
// Huge cards: explicit limits, 422 with a path
// ---------------------------------------------------------------------------------------------------

for (const backend of BACKENDS) {
  describe(`abuse: huge cards meet the documented card limits [${backend}]`, () => {
    let t: TestApp;
    let token: string;
    const cards = new Map<string, unknown>();

    beforeAll(async () => {
      t = await createTestApp(backend, {
        fetchOptions: {
          lookup: async () => ["203.0.113.7"],
          fetchImpl: async (url) => {
            const card = cards.get(new URL(url).pathname);
            return card
              ? new Response(JSON.stringify(card), { headers: { "content-type": "application/json" } })
              : new Response("no", { status: 404 });
          },
        },
      });
      token = (await t.client(["agents:write"], "huge cards")).token;
    }, 120_000);
    afterAll(async () => {
      await t?.close();
    });

    const skill = (i: number) => ({ id: `s${i}`, name: `Skill ${i}`, description: "d", tags: ["t"] });
    const refused = async (res: Response, path: string) => {
      const body = (await res.json()) as Problem;
      expect(res.status).toBe(422);
      expect(body.code).toBe("INVALID_AGENT_CARD");
      expect(body.errors?.map((e) => e.path)).toContain(path);
      return body;
    };

    test("10,000 skills: 422 at /skills (limit 256), inline and by the compat route", async () => {
      const card = freshCard("Many skills", { skills: Array.from({ length: 10_000 }, (_, i) => skill(i)) });
      expect(JSON.stringify(card).length).toBeLessThan(t.config.maxBodyBytes);
      const body = await refused(
        await t.request("/v1/agents", { method: "POST", token, json: { card } }),
        "/skills",
      );
      expect(JSON.stringify(body.errors)).toContain(String(CARD_LIMITS.skills));
      await refused(await t.request("/agents/publish", { method: "POST", token, json: { card } }), "/skills");
    });

    test("a 100 KB description: 422 at /description (limit 16,384); in a skill: at /skills/0/description", async () => {
      const long = "d".repeat(100_000);
      await refused(
        await t.request("/v1/agents", {
          method: "POST",
          token,
          json: { card: freshCard("Long", { description: long }) },
        }),
        "/description",
      );
      await refused(
        await t.request("/v1/agents", {
          method: "POST",
          token,
          json: { card: freshCard("Long skill", { skills: [{ ...skill(0), description: long }] }) },
        }),
        "/skills/0/description",
      );
    });

    test("by cardUrl: a card past 256 KiB is refused at /cardUrl; a small one past the skill limit at /skills", async () => {
      cards.set(
        "/huge.json",
        freshCard("Huge by URL", { skills: Array.from({ length: 10_000 }, (_, i) => skill(i)) }),
      );
      await refused(
        await t.request("/v1/agents", {
          method: "POST",
          token,
          json: { cardUrl: "https://cards.example.com/huge.json" },
        }),
        "/cardUrl",
      );
      cards.set(
        "/many.json",
        freshCard("Many by URL", {
          skills: Array.from({ length: 300 }, (_, i) => ({
            id: `s${i}`,
            name: "n",
            description: "d",
            tags: [],
          })),
        }),
      );
      await refused(
        await t.request("/v1/agents", {
          method: "POST",
          token,
          json: { cardUrl: "https://cards.example.com/many.json" },
        }),
        "/skills",
      );
    });

    test("the limits are documented in the README with the values the code enforces", () => {
      const readme = readFileSync(join(ROOT, "README.md"), "utf8");
      const section = readme
        .slice(readme.indexOf("Card limits"), readme.indexOf("Card limits") + 800)
        .replaceAll(",", "");
      for (const value of [
        CARD_LIMITS.skills,
        CARD_LIMITS.descriptionLength,
        CARD_LIMITS.nameLength,
        CARD_LIMITS.depth,
      ])
        expect(section).toContain(String(value));
    });
  });
}
