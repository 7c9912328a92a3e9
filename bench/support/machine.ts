import { readFileSync } from "node:fs";
import os from "node:os";
import { capture } from "./process";

function firstMatch(path: string, pattern: RegExp): string | undefined {
  try {
    return pattern.exec(readFileSync(path, "utf8"))?.[1]?.trim();
  } catch {
    return undefined;
  }
}

/**
 * What the figures depend on: the hardware, the kernel, the runtime and tools, and which registry code
 * was measured (commit plus whether src/ had uncommitted edits, since others change it while we run).
 */
export function machineInfo(repo: string): Array<[string, string]> {
  const cpus = os.cpus();
  const model = firstMatch("/proc/cpuinfo", /^model name\s*:\s*(.+)$/m) ?? cpus[0]?.model ?? "unknown";
  const distro = firstMatch("/etc/os-release", /^PRETTY_NAME="?([^"\n]+)"?$/m) ?? os.type();
  const wrk = capture(["wrk", "-v"])?.split("\n")[0] ?? "unknown";
  // Read-only git: --no-optional-locks keeps `status` from refreshing (writing) the index.
  const commit = capture(["git", "rev-parse", "--short=12", "HEAD"], repo) ?? "unknown";
  const srcStatus = capture(["git", "--no-optional-locks", "status", "--porcelain", "--", "src"], repo);
  const dirty =
    srcStatus === undefined ? "unknown" : srcStatus === "" ? "clean" : "uncommitted changes in src/";
  return [
    ["CPU", model],
    ["Cores (logical)", String(cpus.length)],
    ["Memory", `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`],
    ["OS / kernel", `${distro}, ${os.type()} ${os.release()} ${os.arch()}`],
    ["Bun", `${Bun.version} (${Bun.revision.slice(0, 9)})`],
    ["wrk", wrk],
    ["Registry commit", `${commit} (${dirty})`],
  ];
}
