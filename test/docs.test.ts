import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createTestApp, type TestApp } from "./support/app";
import { BACKENDS } from "./support/db";

type Schema = { type?: string; properties?: Record<string, unknown>; $ref?: string; title?: string };
type MediaTypes = Record<string, { schema?: Schema }>;
type Operation = {
  requestBody?: { content?: MediaTypes };
  responses?: Record<string, { content?: MediaTypes; $ref?: string }>;
  summary?: string;
  tags?: string[];
};
type OpenApi = {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Schema> };
};

/** Every route of the contract implemented so far, as OpenAPI path + method. */
const CONTRACT_ROUTES: Array<[string, string]> = [
  ["/oauth/token", "post"],
  ["/v1/clients", "post"],
  ["/v1/clients", "get"],
  ["/v1/clients/{clientId}", "delete"],
  ["/v1/agents", "post"],
  ["/v1/agents", "get"],
  ["/v1/agents/{id}", "get"],
  ["/v1/agents/{id}", "put"],
  ["/v1/agents/{id}", "patch"],
  ["/v1/agents/{id}", "delete"],
  ["/v1/agents/{id}/card", "get"],
  ["/v1/agents/{id}/versions", "get"],
  ["/v1/agents/{id}/versions/{version}", "get"],
  ["/v1/agents/{id}/entitlements", "get"],
  ["/v1/agents/{id}/entitlements/{clientId}", "put"],
  ["/v1/agents/{id}/entitlements/{clientId}", "delete"],
  ["/v1/audit", "get"],
  ["/health", "get"],
  ["/health/ready", "get"],
  ["/metrics", "get"],
  ["/.well-known/agent-card.json", "get"],
  ["/.well-known/agent.json", "get"],
  ["/.well-known/agents/index.json", "get"],
];

const PROBLEM_FIELDS = ["type", "title", "status", "detail", "code", "requestId"];

/** Follows a local $ref (#/components/...) once, so inline and referenced schemas both work. */
function resolveSchema(doc: OpenApi, schema: Schema | undefined): Schema | undefined {
  if (!schema?.$ref) return schema;
  const parts = schema.$ref.replace(/^#\//, "").split("/");
  let node: unknown = doc;
  for (const part of parts) node = (node as Record<string, unknown> | undefined)?.[part];
  return node as Schema | undefined;
}

const toOpenApiPath = (path: string) => path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");

for (const backend of BACKENDS) {
  describe(`GET /docs [${backend}]`, () => {
    let t: TestApp;
    let base: string;
    let doc: OpenApi;

    beforeAll(async () => {
      t = await createTestApp(backend);
      // The swagger plugin serves /docs from a running server.
      t.app.listen({ port: 0, hostname: "127.0.0.1" });
      base = `http://127.0.0.1:${t.app.server!.port}`;
      const res = await fetch(`${base}/docs/json`);
      expect(res.status).toBe(200);
      doc = (await res.json()) as OpenApi;
    }, 60_000);
    afterAll(async () => {
      await t?.close();
    });

    test("happy: /docs is the Swagger UI page", async () => {
      const res = await fetch(`${base}/docs`);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-type") ?? "").toContain("text/html");
      const html = await res.text();
      expect(html.toLowerCase()).toContain("swagger");
      expect(res.headers.get("x-request-id")).toBeTruthy();
    });

    test("security: /docs carries security headers and a CSP of its own", async () => {
      const res = await fetch(`${base}/docs`);
      for (const name of [
        "strict-transport-security",
        "content-security-policy",
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
      ])
        expect(res.headers.get(name), name).toBeTruthy();
      expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    });

    test("happy: /docs/json is an OpenAPI 3 document describing this registry", () => {
      expect(doc.openapi).toMatch(/^3\./);
      expect(doc.info.title).toBe(t.config.appName);
      expect(doc.info.version).toBe(t.config.appVersion);
      expect(typeof doc.paths).toBe("object");
    });

    for (const [path, method] of CONTRACT_ROUTES) {
      test(`happy: documents ${method.toUpperCase()} ${path}`, () => {
        expect(Object.keys(doc.paths[path] ?? {}), path).toContain(method);
      });
    }

    test("happy: every route the app serves is documented (derived from app.routes)", () => {
      const served = t.app.routes
        .filter((route) => !route.path.startsWith("/docs") && route.method !== "OPTIONS")
        .map((route) => `${route.method.toLowerCase()} ${toOpenApiPath(route.path)}`);
      expect(served.length).toBeGreaterThanOrEqual(CONTRACT_ROUTES.length);
      const documented = new Set(
        Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m} ${path}`)),
      );
      const missing = served.filter((route) => !documented.has(route));
      expect(missing).toEqual([]);
    });

    test("happy: every documented operation has a summary and a tag", () => {
      const lacking: string[] = [];
      for (const [path, ops] of Object.entries(doc.paths))
        for (const [method, op] of Object.entries(ops))
          if (!op.summary || !op.tags?.length) lacking.push(`${method} ${path}`);
      expect(lacking).toEqual([]);
    });

    test("happy: POST /v1/agents documents its JSON request body", () => {
      const op = doc.paths["/v1/agents"]?.post;
      const schema = resolveSchema(doc, op?.requestBody?.content?.["application/json"]?.schema);
      expect(schema).toBeDefined();
      expect(Object.keys(schema?.properties ?? {})).toEqual(
        expect.arrayContaining(["card", "cardUrl", "visibility"]),
      );
      for (const [path, method] of [
        ["/v1/agents/{id}", "put"],
        ["/v1/agents/{id}", "patch"],
        ["/v1/clients", "post"],
      ] as const) {
        const body = doc.paths[path]?.[method]?.requestBody?.content?.["application/json"]?.schema;
        expect(resolveSchema(doc, body), `${method} ${path}`).toBeDefined();
      }
    });

    test("happy: POST /oauth/token documents a form body", () => {
      const content = doc.paths["/oauth/token"]?.post?.requestBody?.content ?? {};
      expect(Object.keys(content)).toContain("application/x-www-form-urlencoded");
    });

    test("happy: error responses reference problem details", () => {
      const wrong: string[] = [];
      let checked = 0;
      for (const [path, ops] of Object.entries(doc.paths)) {
        for (const [method, op] of Object.entries(ops)) {
          // OAuth errors follow RFC 6749 5.2 and readiness answers 503 with its own body: both by contract.
          if (path === "/oauth/token" || path === "/health/ready") continue;
          for (const [status, response] of Object.entries(op.responses ?? {})) {
            if (Number(status) < 400) continue;
            checked++;
            const schemas = Object.values(response.content ?? {}).map((m) => resolveSchema(doc, m.schema));
            const ok =
              schemas.length > 0 &&
              schemas.every((s) =>
                PROBLEM_FIELDS.every((field) => Object.keys(s?.properties ?? {}).includes(field)),
              );
            if (!ok) wrong.push(`${method} ${path} ${status}`);
          }
        }
      }
      expect(checked).toBeGreaterThan(20);
      expect(wrong).toEqual([]);
      const responses = doc.paths["/v1/agents"]?.post?.responses ?? {};
      for (const status of ["400", "401", "403", "409", "413", "422"])
        expect(Object.keys(responses)).toContain(status);
    });

    test("happy: error responses are documented as application/problem+json", () => {
      const wrong: string[] = [];
      for (const [path, ops] of Object.entries(doc.paths))
        for (const [method, op] of Object.entries(ops)) {
          if (path === "/oauth/token" || path === "/health/ready") continue;
          for (const [status, response] of Object.entries(op.responses ?? {}))
            if (
              Number(status) >= 400 &&
              !Object.keys(response.content ?? {}).includes("application/problem+json")
            )
              wrong.push(`${method} ${path} ${status}`);
        }
      expect(wrong).toEqual([]);
    });

    test("security: the document holds no secrets or internal details", async () => {
      const text = await (await fetch(`${base}/docs/json`)).text();
      expect(text).not.toContain(t.config.secretKey);
      expect(text).not.toMatch(/postgres:\/\/|node_modules|\/work\//);
    });
  });
}
