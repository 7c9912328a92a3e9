/**
 * Peer client secrets at rest: AES-256-GCM (Web Crypto) under a key derived from SECRET_KEY with HKDF
 * (SHA-256, fixed salt and purpose label), so the key used for secrets is never the JWT signing key
 * itself. The peer id is bound as additional data: a ciphertext copied onto another peer row does not
 * decrypt. Stored as `v1.<iv>.<ciphertext+tag>` (base64url). Changing SECRET_KEY makes stored secrets
 * unreadable; the sync then fails with a message saying so, and the peer must be given its secret again.
 */

const VERSION = "v1";
const SALT = new TextEncoder().encode("a2a-registry/federation/peer-secrets");
const INFO = new TextEncoder().encode("peer client secret, AES-256-GCM, v1");

export class SecretDecryptionError extends Error {
  override name = "SecretDecryptionError";
}

const keys = new Map<string, Promise<CryptoKey>>();

function keyFor(secretKey: string): Promise<CryptoKey> {
  let key = keys.get(secretKey);
  if (!key) {
    key = (async () => {
      const material = await crypto.subtle.importKey(
        "raw",
        new TextEncoder().encode(secretKey),
        "HKDF",
        false,
        ["deriveKey"],
      );
      return crypto.subtle.deriveKey(
        { name: "HKDF", hash: "SHA-256", salt: SALT, info: INFO },
        material,
        { name: "AES-GCM", length: 256 },
        false,
        ["encrypt", "decrypt"],
      );
    })();
    keys.set(secretKey, key);
  }
  return key;
}

const b64 = (bytes: ArrayBuffer | Uint8Array) => Buffer.from(bytes as Uint8Array).toString("base64url");

export async function encryptSecret(secretKey: string, peerId: string, plaintext: string): Promise<string> {
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const sealed = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: new TextEncoder().encode(peerId) },
    await keyFor(secretKey),
    new TextEncoder().encode(plaintext),
  );
  return `${VERSION}.${b64(iv)}.${b64(sealed)}`;
}

export async function decryptSecret(secretKey: string, peerId: string, stored: string): Promise<string> {
  const [version, iv, sealed] = stored.split(".");
  if (version !== VERSION || !iv || !sealed)
    throw new SecretDecryptionError("the stored peer secret has an unknown format");
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: Buffer.from(iv, "base64url"),
        additionalData: new TextEncoder().encode(peerId),
      },
      await keyFor(secretKey),
      Buffer.from(sealed, "base64url"),
    );
    return new TextDecoder().decode(plain);
  } catch {
    throw new SecretDecryptionError(
      "the stored peer secret cannot be decrypted (was SECRET_KEY changed?); set the peer's clientSecret again",
    );
  }
}
