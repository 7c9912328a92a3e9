import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors as joseErrors,
  flattenedVerify,
  importJWK,
  type JSONWebKeySet,
  type JWK,
  type JWSHeaderParameters,
} from "jose";
import type { FieldError } from "../../errors";
import { OutboundFetchError, type SafeFetchOptions, safeFetchJson } from "../../infra/http";
import type { Metrics } from "../../infra/metrics";
import { canonicalCardJson } from "./card";

/**
 * Agent Card signatures (A2A `signatures[]`): each is a JWS in flattened JSON form without its payload
 * (detached), computed over the RFC 8785 canonical JSON of the card minus `signatures`. The key is the
 * one named by the protected header: an embedded public `jwk`, or `jku` (a JWK Set URL, fetched through
 * the SSRF guard and matched by `kid`). A key served from the agent's own origin at
 * `/.well-known/jwks.json` also vouches for that domain (`verifiedDomain`).
 */

/** Asymmetric algorithms only: an HMAC or `none` signature proves nothing to a third party. */
export const SIGNATURE_ALGORITHMS = [
  "ES256",
  "ES384",
  "ES512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "EdDSA",
  "Ed25519",
];

export type SignatureOutcome =
  | { state: "none"; kid: null; verifiedDomain: null }
  | { state: "valid"; kid: string | null; verifiedDomain: string | null }
  | {
      state: "invalid";
      kid: string | null;
      verifiedDomain: null;
      errors: FieldError[];
      /**
       * True when nothing was proven wrong, only that the key could not be obtained (its key set
       * unreachable or malformed): the card is accepted and stored as not verified, saying why.
       */
      unverifiable: boolean;
    };

const JWKS_TTL_MS = 5 * 60_000;
const JWKS_MAX_BYTES = 64 * 1024;

export type VerifierDeps = {
  metrics: Metrics;
  /** The registry's outbound fetch settings (DEBUG allows http and loopback, as for cardUrl). */
  fetchOptions: SafeFetchOptions;
};

class SignatureProblem extends Error {
  constructor(
    message: string,
    /** The key could not be obtained: not evidence of forgery. */
    readonly unverifiable = false,
  ) {
    super(message);
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The origins a card's keys may legitimately come from: its primary url's and its cardUrl's. */
function ownOrigins(context: { primaryUrl: string; cardUrl: string | null }): Set<string> {
  const origins = new Set<string>();
  for (const url of [context.primaryUrl, context.cardUrl])
    if (url)
      try {
        origins.add(new URL(url).origin);
      } catch {
        // not a URL: vouches for nothing
      }
  return origins;
}

export function createSignatureVerifier(deps: VerifierDeps) {
  const jwksCache = new Map<string, { expires: number; keys: JSONWebKeySet }>();

  async function fetchJwks(jku: string): Promise<JSONWebKeySet> {
    const cached = jwksCache.get(jku);
    if (cached && cached.expires > Date.now()) return cached.keys;
    let value: unknown;
    try {
      ({ value } = await safeFetchJson(jku, {
        ...deps.fetchOptions,
        maxBytes: Math.min(deps.fetchOptions.maxBytes, JWKS_MAX_BYTES),
        accept: "application/jwk-set+json, application/json",
      }));
    } catch (error) {
      const reason = error instanceof OutboundFetchError ? error.message : "fetch failed";
      throw new SignatureProblem(`the key set at jku could not be fetched: ${reason}`, true);
    }
    if (!isRecord(value) || !Array.isArray(value.keys))
      throw new SignatureProblem("jku does not serve a JWK Set ({keys: [...]})", true);
    const keys = value as unknown as JSONWebKeySet;
    if (jwksCache.size > 1000) jwksCache.clear();
    jwksCache.set(jku, { expires: Date.now() + JWKS_TTL_MS, keys });
    return keys;
  }

  async function verifyOne(
    signature: Record<string, unknown>,
    payload: string,
    origins: Set<string>,
  ): Promise<{ kid: string | null; verifiedDomain: string | null }> {
    const protectedText = signature.protected;
    const signatureText = signature.signature;
    if (typeof protectedText !== "string" || typeof signatureText !== "string")
      throw new SignatureProblem("needs string members protected and signature");
    let header: JWSHeaderParameters;
    try {
      header = decodeProtectedHeader({ protected: protectedText, signature: signatureText, payload: "" });
    } catch {
      throw new SignatureProblem("the protected header is not base64url-encoded JSON");
    }
    const alg = header.alg;
    if (typeof alg !== "string" || !SIGNATURE_ALGORITHMS.includes(alg))
      throw new SignatureProblem(`unsupported algorithm ${JSON.stringify(alg ?? null)}`);
    const kid = typeof header.kid === "string" ? header.kid : null;

    let key: Parameters<typeof flattenedVerify>[1];
    let verifiedDomain: string | null = null;
    if (isRecord(header.jwk)) {
      if ("d" in header.jwk) throw new SignatureProblem("the embedded jwk is a private key");
      try {
        key = await importJWK(header.jwk as JWK, alg);
      } catch {
        throw new SignatureProblem("the embedded jwk is not a usable public key for this algorithm");
      }
    } else if (typeof header.jku === "string") {
      let jkuUrl: URL;
      try {
        jkuUrl = new URL(header.jku);
      } catch {
        throw new SignatureProblem("jku is not a URL");
      }
      key = createLocalJWKSet(await fetchJwks(jkuUrl.toString()));
      if (origins.has(jkuUrl.origin) && jkuUrl.pathname === "/.well-known/jwks.json")
        verifiedDomain = jkuUrl.hostname;
    } else {
      throw new SignatureProblem("the protected header names no key (jwk or jku)");
    }

    // RFC 7797: with b64=false the payload is the canonical JSON itself, else its base64url encoding.
    const unencoded = header.b64 === false;
    try {
      await flattenedVerify(
        {
          protected: protectedText,
          signature: signatureText,
          payload: unencoded ? payload : Buffer.from(payload).toString("base64url"),
          ...(isRecord(signature.header) ? { header: signature.header as JWSHeaderParameters } : {}),
        },
        key,
        { algorithms: SIGNATURE_ALGORITHMS },
      );
    } catch (error) {
      if (error instanceof joseErrors.JWKSNoMatchingKey)
        throw new SignatureProblem(`no key in the jku key set matches kid ${JSON.stringify(kid)}`);
      if (error instanceof joseErrors.JWSSignatureVerificationFailed)
        throw new SignatureProblem("the signature does not match the card (tampered, or another key)");
      throw new SignatureProblem(`the signature could not be verified: ${(error as Error).message}`);
    }
    return { kid, verifiedDomain };
  }

  return {
    /** Verifies every signature on the card; invalid when any of them fails. */
    async verify(
      card: unknown,
      context: { primaryUrl: string; cardUrl: string | null },
    ): Promise<SignatureOutcome> {
      const signatures = isRecord(card) && Array.isArray(card.signatures) ? card.signatures : [];
      if (signatures.length === 0) {
        deps.metrics.signatureVerifications.inc({ result: "none" });
        return { state: "none", kid: null, verifiedDomain: null };
      }
      const payload = canonicalCardJson(card);
      const origins = ownOrigins(context);
      const errors: FieldError[] = [];
      let proven = false;
      let first: { kid: string | null; verifiedDomain: string | null } | undefined;
      let firstKid: string | null = null;
      for (const [index, signature] of signatures.entries()) {
        try {
          if (!isRecord(signature)) throw new SignatureProblem("is not a JWS object");
          const result = await verifyOne(signature, payload, origins);
          first ??= result;
          if (!first.verifiedDomain && result.verifiedDomain) first = result;
        } catch (error) {
          if (!(error instanceof SignatureProblem)) throw error;
          errors.push({ path: `/card/signatures/${index}`, message: error.message });
          if (!error.unverifiable) proven = true;
          if (firstKid === null && isRecord(signature) && typeof signature.protected === "string")
            try {
              const kid = decodeProtectedHeader({
                protected: signature.protected,
                payload: "",
                signature: "",
              }).kid;
              firstKid = typeof kid === "string" ? kid : null;
            } catch {
              // undecodable header: no kid to report
            }
        }
      }
      if (errors.length > 0) {
        deps.metrics.signatureVerifications.inc({ result: "invalid" });
        return {
          state: "invalid",
          kid: first?.kid ?? firstKid,
          verifiedDomain: null,
          errors,
          unverifiable: !proven,
        };
      }
      deps.metrics.signatureVerifications.inc({ result: "valid" });
      return { state: "valid", kid: first?.kid ?? null, verifiedDomain: first?.verifiedDomain ?? null };
    },
  };
}

export type SignatureVerifier = ReturnType<typeof createSignatureVerifier>;
