/** Bounds on what a query may cost, whatever the caller sends. */
const MAX_TOKENS = 16;
const MAX_TOKEN_LENGTH = 64;

/**
 * The words of a query: lower-cased runs of letters and digits. Everything else (operators, quotes,
 * punctuation) separates words, so no input can change the shape of a backend query.
 */
export function queryTokens(q: string | undefined): string[] {
  if (!q) return [];
  const words =
    q
      .toLowerCase()
      .normalize("NFKC")
      .match(/[\p{L}\p{N}]+/gu) ?? [];
  const tokens: string[] = [];
  for (const word of words) {
    const token = word.slice(0, MAX_TOKEN_LENGTH);
    if (!tokens.includes(token)) tokens.push(token);
    if (tokens.length === MAX_TOKENS) break;
  }
  return tokens;
}
