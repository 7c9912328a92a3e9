import { accessSync, constants, mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";

/** Debian's chromium package (installed by .ci/run); playwright-core never downloads a browser here. */
export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
export const SCREENSHOT_DIR = resolve(import.meta.dir, "../../docs/screenshots");

export function chromiumAvailability(): { ok: true } | { ok: false; reason: string } {
  try {
    accessSync(CHROMIUM_PATH, constants.X_OK);
    return { ok: true };
  } catch {
    return {
      ok: false,
      reason: `no executable chromium at ${CHROMIUM_PATH}: install Debian's package with \`DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium\` (or set CHROMIUM_PATH)`,
    };
  }
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    // Root in CI containers: Chromium's sandbox needs user namespaces that containers rarely grant.
    args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    timeout: 30_000,
  });
}

export function screenshotPath(name: string): string {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  return resolve(SCREENSHOT_DIR, name);
}

/** Console errors (CSP violations among them) and uncaught page errors; a clean run has none. */
export function collectProblems(page: Page): string[] {
  const problems: string[] = [];
  page.on("console", (message) => {
    // HTTP error statuses the tests provoke on purpose (404 for a hidden agent) are checked by the tests.
    if (message.type() === "error" && !message.text().startsWith("Failed to load resource"))
      problems.push(`console: ${message.text()}`);
  });
  page.on("pageerror", (error) => problems.push(`pageerror: ${error.message}`));
  return problems;
}
