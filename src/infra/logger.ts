import pino from "pino";

export type Logger = pino.Logger;

/**
 * JSON logs on stdout. Secrets are redacted by path as a second line of defence: code never passes
 * them to the logger in the first place.
 */
export function createLogger(level: string, options: { name?: string } = {}): Logger {
  return pino({
    level,
    name: options.name ?? "a2a-registry",
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: {
      paths: [
        "*.authorization",
        "*.client_secret",
        "*.clientSecret",
        "*.password",
        "*.secret",
        "*.secretKey",
        "*.access_token",
      ],
      censor: "[redacted]",
    },
  });
}
