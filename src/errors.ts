import { Type as T } from "@sinclair/typebox";

/** The closed set of error codes of the contract, each with exactly one HTTP status and title. */
export const ERROR_CODES = {
  VALIDATION_FAILED: { status: 400, title: "Request validation failed" },
  INVALID_AGENT_CARD: { status: 422, title: "Invalid Agent Card" },
  INVALID_SIGNATURE: { status: 422, title: "Invalid Agent Card signature" },
  UNAUTHORIZED: { status: 401, title: "Authentication required" },
  FORBIDDEN: { status: 403, title: "Forbidden" },
  NOT_FOUND: { status: 404, title: "Not found" },
  AGENT_EXISTS: { status: 409, title: "Agent already exists" },
  VERSION_EXISTS: { status: 409, title: "Version already exists" },
  QUOTA_EXCEEDED: { status: 403, title: "Quota exceeded" },
  RATE_LIMITED: { status: 429, title: "Too many requests" },
  CURSOR_EXPIRED: { status: 410, title: "Cursor expired" },
  PAYLOAD_TOO_LARGE: { status: 413, title: "Payload too large" },
  DEPENDENCY_UNAVAILABLE: { status: 503, title: "Dependency unavailable" },
  INTERNAL: { status: 500, title: "Internal server error" },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;
export type FieldError = { path: string; message: string };

export class ApiError extends Error {
  readonly status: number;
  constructor(
    readonly code: ErrorCode,
    readonly detail: string,
    readonly options: { errors?: FieldError[]; headers?: Record<string, string> } = {},
  ) {
    super(detail);
    this.status = ERROR_CODES[code].status;
  }
}

/** OpenAPI description of every error body, referenced by each route's `response`. */
export const ProblemSchema = T.Object(
  {
    type: T.String(),
    title: T.String(),
    status: T.Integer(),
    detail: T.String(),
    code: T.Union(Object.keys(ERROR_CODES).map((c) => T.Literal(c))),
    requestId: T.String(),
    errors: T.Optional(T.Array(T.Object({ path: T.String(), message: T.String() }))),
  },
  { title: "Problem", description: "RFC 9457 problem details (application/problem+json)" },
);

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

export function problemBody(code: ErrorCode, detail: string, requestId: string, errors?: FieldError[]) {
  const { status, title } = ERROR_CODES[code];
  return {
    type: `https://a2a-registry.dev/problems/${code.toLowerCase().replaceAll("_", "-")}`,
    title,
    status,
    detail,
    code,
    requestId,
    ...(errors && errors.length > 0 ? { errors } : {}),
  };
}

export function problemResponse(
  code: ErrorCode,
  detail: string,
  requestId: string,
  headers: Record<string, string> = {},
  errors?: FieldError[],
): Response {
  return new Response(JSON.stringify(problemBody(code, detail, requestId, errors)), {
    status: ERROR_CODES[code].status,
    headers: { ...headers, "content-type": PROBLEM_CONTENT_TYPE },
  });
}
