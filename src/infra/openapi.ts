import { swagger } from "@elysiajs/swagger";
import { Elysia } from "elysia";
import type { OpenAPIV3 } from "openapi-types";
import type { Config } from "../config";
import { PROBLEM_CONTENT_TYPE } from "../errors";

type Operation = {
  responses?: Record<string, { content?: Record<string, { schema?: unknown }> }>;
  requestBody?: { content?: Record<string, unknown> };
};

/**
 * The swagger plugin documents every response with the route's parser media types. Our errors are
 * problem+json and our bodies JSON, so the generated document is corrected once before it is served.
 */
function correctMediaTypes(document: { paths?: Record<string, Record<string, Operation>> }) {
  for (const operations of Object.values(document.paths ?? {}))
    for (const operation of Object.values(operations)) {
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        const schema = response.content ? Object.values(response.content)[0]?.schema : undefined;
        if (schema === undefined) continue;
        response.content = {
          [Number(status) >= 400 ? PROBLEM_CONTENT_TYPE : "application/json"]: { schema },
        };
      }
      const body = operation.requestBody?.content;
      if (body && "application/json" in body)
        operation.requestBody!.content = { "application/json": body["application/json"] };
    }
}

/** Swagger UI at /docs and the OpenAPI document at /docs/json. */
export function apiDocs(config: Config) {
  return new Elysia({ name: "api-docs" })
    .onAfterHandle(({ path, response }) => {
      if (path === "/docs/json" && response && typeof response === "object") {
        correctMediaTypes(response as Parameters<typeof correctMediaTypes>[0]);
        return response;
      }
    })
    .use(
      swagger({
        path: "/docs",
        provider: "swagger-ui",
        // The well-known documents have dots in their paths; the default would leave them out.
        excludeStaticFile: false,
        documentation: {
          info: {
            title: config.appName,
            version: config.appVersion,
            description:
              "Publish, discover and federate A2A agents by their Agent Cards. Errors are " +
              "application/problem+json with a closed set of codes.",
          },
          tags: [
            { name: "auth", description: "OAuth 2.0 client credentials" },
            { name: "clients", description: "API clients (admin)" },
            { name: "agents", description: "Publish, read, version and retire agents" },
            { name: "ops", description: "Health, readiness, metrics, audit" },
            { name: "well-known", description: "Discovery documents" },
          ],
          components: {
            securitySchemes: {
              bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
            },
          },
          security: [{ bearer: [] }, {}],
        },
      }),
    );
}

type ResponseDoc = { description: string; schema?: object };

/**
 * OpenAPI responses written by hand, for routes that return pre-serialised bytes: their `response`
 * schemas would make Elysia validate a string against an object schema, so they document here instead.
 */
export function documentedResponses(responses: Record<number, ResponseDoc>): OpenAPIV3.ResponsesObject {
  const result: OpenAPIV3.ResponsesObject = {};
  for (const [status, doc] of Object.entries(responses)) {
    const mediaType = Number(status) >= 400 ? PROBLEM_CONTENT_TYPE : "application/json";
    result[status] = doc.schema
      ? {
          description: doc.description,
          content: { [mediaType]: { schema: doc.schema as OpenAPIV3.SchemaObject } },
        }
      : { description: doc.description };
  }
  return result;
}
