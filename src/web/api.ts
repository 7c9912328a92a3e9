/** The public HTTP API, with the optional bearer token this tab holds (sessionStorage, never localStorage). */

const TOKEN_KEY = "a2a-registry.token";

export function getToken(): string | null {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

export function setToken(token: string | null) {
  try {
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Storage disabled: the token simply is not kept.
  }
}

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    detail: string,
  ) {
    super(detail);
  }
}

export async function api<T>(path: string, signal?: AbortSignal): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  const token = getToken();
  if (token) headers.authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(path, { headers, signal, credentials: "omit" });
  } catch (error) {
    if ((error as Error).name === "AbortError") throw error;
    throw new ApiFailure(0, "NETWORK", "The registry could not be reached. Check your connection.");
  }
  if (!response.ok) {
    let code = "HTTP_" + response.status;
    let detail = response.statusText || "Request failed";
    try {
      const problem = (await response.json()) as { code?: string; detail?: string };
      code = problem.code ?? code;
      detail = problem.detail ?? detail;
    } catch {
      // not problem+json
    }
    throw new ApiFailure(response.status, code, detail);
  }
  return (await response.json()) as T;
}

export type FacetValue = { value: string; count: number };
export type Facets = Record<"tags" | "skills" | "providers" | "inputModes" | "outputModes", FacetValue[]>;

export type AgentRecord = {
  id: string;
  name: string;
  description: string;
  url: string;
  visibility: "public" | "private";
  status: "active" | "deprecated" | "deleted";
  statusMessage: string | null;
  version: string;
  generation: "1.0" | "0.3" | "0.2";
  protocolVersion: string | null;
  cardHash: string;
  card: Record<string, unknown>;
  signature: "none" | "valid" | "invalid";
  health: "unknown" | "up" | "down";
  checkedAt: string | null;
  source: { registry: string; originId: string; federated: boolean };
  owner: string | null;
  createdAt: string;
  updatedAt: string;
};

export type SearchResults = {
  items: { agent: AgentRecord; score: number }[];
  total: number;
  facets: Facets;
  nextCursor: string | null;
};

export type Versions = { items: { version: string; cardHash: string; createdAt: string }[] };

export type Stats = {
  total: number;
  byStatus: { active: number; deprecated: number };
  byHealth: { up: number; down: number; unknown: number };
  bySignature: { none: number; valid: number; invalid: number };
  bySource: { local: number; federated: number };
  registrations: { days: number; before: number; buckets: { date: string; count: number }[] };
  generatedAt: string;
};
