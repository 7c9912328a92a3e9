/**
 * Finds the exact source text of a top-level member's value in a JSON object text, so a card can be
 * stored and served byte for byte as its publisher wrote it (key order, spacing and number spelling
 * included), which a parse and re-serialise would not preserve. Like JSON.parse, the last occurrence of
 * a duplicated key wins. Expects text that JSON.parse has already accepted; returns undefined otherwise.
 * Iterative, so deeply nested input cannot exhaust the stack.
 */
export function topLevelMemberText(json: string, key: string): string | undefined {
  let i = 0;
  const n = json.length;
  const skipWhitespace = () => {
    while (i < n) {
      const c = json.charCodeAt(i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d || c === 0xfeff) i++;
      else break;
    }
  };
  const skipString = () => {
    // json[i] is the opening quote
    i++;
    while (i < n) {
      const c = json.charCodeAt(i);
      if (c === 0x5c) i += 2;
      else if (c === 0x22) {
        i++;
        return true;
      } else i++;
    }
    return false;
  };
  const skipValue = () => {
    const first = json.charCodeAt(i);
    if (first === 0x22) return skipString();
    if (first === 0x7b || first === 0x5b) {
      let depth = 0;
      while (i < n) {
        const c = json.charCodeAt(i);
        if (c === 0x22) {
          if (!skipString()) return false;
          continue;
        }
        if (c === 0x7b || c === 0x5b) depth++;
        else if (c === 0x7d || c === 0x5d) {
          depth--;
          if (depth === 0) {
            i++;
            return true;
          }
        }
        i++;
      }
      return false;
    }
    while (i < n) {
      const c = json.charCodeAt(i);
      if (c === 0x2c || c === 0x7d || c === 0x5d || c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d)
        break;
      i++;
    }
    return true;
  };

  skipWhitespace();
  if (json.charCodeAt(i) !== 0x7b) return undefined;
  i++;
  let found: string | undefined;
  for (;;) {
    skipWhitespace();
    if (json.charCodeAt(i) === 0x7d) return found;
    if (json.charCodeAt(i) !== 0x22) return undefined;
    const nameStart = i;
    if (!skipString()) return undefined;
    let name: unknown;
    try {
      name = JSON.parse(json.slice(nameStart, i));
    } catch {
      return undefined;
    }
    skipWhitespace();
    if (json.charCodeAt(i) !== 0x3a) return undefined;
    i++;
    skipWhitespace();
    const valueStart = i;
    if (!skipValue()) return undefined;
    if (name === key) found = json.slice(valueStart, i);
    skipWhitespace();
    const c = json.charCodeAt(i);
    if (c === 0x2c) i++;
    else if (c === 0x7d) return found;
    else return undefined;
  }
}
