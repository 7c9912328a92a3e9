/**
 * Reading an Agent Card of any accepted generation (1.0, 0.3.x, legacy 0.2.x) into what the agent page
 * shows. Cards are arbitrary JSON from publishers: every accessor tolerates missing or mistyped fields.
 */

type Json = Record<string, unknown>;

const isObject = (value: unknown): value is Json =>
  typeof value === "object" && value !== null && !Array.isArray(value);
const str = (value: unknown): string | undefined =>
  typeof value === "string" && value !== "" ? value : undefined;
const strings = (value: unknown): string[] =>
  Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : [];

export type Interface = { url: string; transport: string; protocolVersion?: string; primary: boolean };

/** Every endpoint the card declares, primary first, each with its transport (protocol binding). */
export function interfacesOf(card: Json): Interface[] {
  const supported = card.supportedInterfaces;
  if (Array.isArray(supported)) {
    return supported.filter(isObject).map((entry, index) => ({
      url: str(entry.url) ?? "",
      transport: str(entry.protocolBinding) ?? str(entry.transport) ?? "unspecified",
      protocolVersion: str(entry.protocolVersion),
      primary: index === 0,
    }));
  }
  const result: Interface[] = [];
  const primaryUrl = str(card.url);
  const preferred = str(card.preferredTransport) ?? "JSONRPC";
  const protocolVersion = str(card.protocolVersion);
  if (primaryUrl) result.push({ url: primaryUrl, transport: preferred, protocolVersion, primary: true });
  if (Array.isArray(card.additionalInterfaces))
    for (const entry of card.additionalInterfaces.filter(isObject)) {
      const url = str(entry.url) ?? "";
      const transport = str(entry.transport) ?? "unspecified";
      if (url === primaryUrl && transport === preferred) continue;
      result.push({ url, transport, protocolVersion, primary: false });
    }
  return result;
}

export type SecurityScheme = {
  name: string;
  type: string;
  description?: string;
  details: { label: string; value: string; url?: boolean }[];
};

const SCHEME_KEYS: Record<string, string> = {
  apiKeySecurityScheme: "apiKey",
  httpAuthSecurityScheme: "http",
  oauth2SecurityScheme: "oauth2",
  openIdConnectSecurityScheme: "openIdConnect",
  mtlsSecurityScheme: "mutualTLS",
};

const TYPE_LABELS: Record<string, string> = {
  apiKey: "API key",
  http: "HTTP authentication",
  oauth2: "OAuth 2.0",
  openIdConnect: "OpenID Connect",
  mutualTLS: "Mutual TLS",
};

/** Security schemes in both shapes: 0.3's `{type, ...}` and 1.0's `{apiKeySecurityScheme: {...}}`. */
export function securitySchemesOf(card: Json): SecurityScheme[] {
  const schemes = card.securitySchemes;
  if (!isObject(schemes)) return [];
  return Object.entries(schemes).map(([name, raw]) => {
    let type = "unknown";
    let body: Json = {};
    if (isObject(raw)) {
      const wrapped = Object.keys(SCHEME_KEYS).find((key) => isObject(raw[key]));
      if (wrapped) {
        type = SCHEME_KEYS[wrapped]!;
        body = raw[wrapped] as Json;
      } else {
        type = str(raw.type) ?? "unknown";
        body = raw;
      }
    }
    const details: SecurityScheme["details"] = [];
    const location = str(body.location) ?? str(body.in);
    if (location) details.push({ label: "sent in", value: location });
    if (str(body.name)) details.push({ label: "parameter", value: str(body.name)! });
    if (str(body.scheme)) details.push({ label: "scheme", value: str(body.scheme)! });
    if (str(body.bearerFormat)) details.push({ label: "bearer format", value: str(body.bearerFormat)! });
    if (str(body.openIdConnectUrl))
      details.push({ label: "discovery", value: str(body.openIdConnectUrl)!, url: true });
    if (isObject(body.flows))
      for (const [flow, spec] of Object.entries(body.flows)) {
        if (!isObject(spec)) continue;
        details.push({ label: "flow", value: flow });
        if (str(spec.authorizationUrl))
          details.push({ label: "authorization URL", value: str(spec.authorizationUrl)!, url: true });
        if (str(spec.tokenUrl)) details.push({ label: "token URL", value: str(spec.tokenUrl)!, url: true });
        if (isObject(spec.scopes) && Object.keys(spec.scopes).length > 0)
          details.push({ label: "scopes", value: Object.keys(spec.scopes).join(", ") });
      }
    return { name, type: TYPE_LABELS[type] ?? type, description: str(body.description), details };
  });
}

/** Security requirements as readable alternatives: each entry lists scheme names with their scopes. */
export function securityRequirementsOf(card: Json): string[] {
  const out: string[] = [];
  const describe = (name: string, scopes: string[]) =>
    scopes.length ? `${name} (${scopes.join(", ")})` : name;
  if (Array.isArray(card.securityRequirements))
    for (const requirement of card.securityRequirements.filter(isObject)) {
      const schemes = isObject(requirement.schemes) ? requirement.schemes : {};
      out.push(
        Object.entries(schemes)
          .map(([name, value]) => describe(name, isObject(value) ? strings(value.list) : []))
          .join(" and "),
      );
    }
  else if (Array.isArray(card.security))
    for (const requirement of card.security.filter(isObject))
      out.push(
        Object.entries(requirement)
          .map(([name, scopes]) => describe(name, strings(scopes)))
          .join(" and "),
      );
  return out.filter((entry) => entry !== "");
}

export type Skill = {
  id: string;
  name: string;
  description?: string;
  tags: string[];
  examples: string[];
  inputModes: string[];
  outputModes: string[];
};

export function skillsOf(card: Json): Skill[] {
  if (!Array.isArray(card.skills)) return [];
  return card.skills.filter(isObject).map((skill) => ({
    id: str(skill.id) ?? "",
    name: str(skill.name) ?? str(skill.id) ?? "Unnamed skill",
    description: str(skill.description),
    tags: strings(skill.tags),
    examples: strings(skill.examples),
    inputModes: strings(skill.inputModes),
    outputModes: strings(skill.outputModes),
  }));
}

export function providerOf(card: Json): { organization?: string; url?: string } {
  const provider = card.provider;
  if (!isObject(provider)) return {};
  return { organization: str(provider.organization), url: str(provider.url) };
}

/** Declared capabilities that are switched on, plus extension URIs. */
export function capabilitiesOf(card: Json): { flags: { name: string; on: boolean }[]; extensions: string[] } {
  const caps = isObject(card.capabilities) ? card.capabilities : {};
  const flags = Object.entries(caps)
    .filter(([, value]) => typeof value === "boolean")
    .map(([name, value]) => ({ name, on: value as boolean }));
  const extensions = Array.isArray(caps.extensions)
    ? caps.extensions.filter(isObject).flatMap((e) => (str(e.uri) ? [str(e.uri)!] : []))
    : [];
  return { flags, extensions };
}

export function modesOf(card: Json) {
  return { input: strings(card.defaultInputModes), output: strings(card.defaultOutputModes) };
}

export function streamingOf(card: Json): boolean {
  return isObject(card.capabilities) && card.capabilities.streaming === true;
}

export function tagsOf(card: Json): string[] {
  return [...new Set(skillsOf(card).flatMap((skill) => skill.tags))];
}

export const documentationUrlOf = (card: Json) => str(card.documentationUrl);
export const iconUrlOf = (card: Json) => str(card.iconUrl);

/** Splits camelCase capability names into words: "pushNotifications" -> "push notifications". */
export const humanize = (name: string) => name.replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
