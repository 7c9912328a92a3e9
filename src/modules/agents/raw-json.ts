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

/**
 * The JSON pointer (RFC 6901) of the first member whose name repeats an earlier one in the same object,
 * or undefined when every object's names are unique (I-JSON, RFC 7493). A card is stored and served as
 * its exact text, so a duplicated name would let readers that keep the first occurrence see another
 * card than the one validated here (JSON.parse keeps the last), and RFC 8785, which card signatures
 * canonicalise with, is only defined over I-JSON. Expects text JSON.parse accepted; iterative.
 */
export function duplicateMemberPath(json: string): string | undefined {
  type Frame = { keys: Set<string> | null; path: string; key: string; index: number };
  const stack: Frame[] = [];
  const pointerEscape = (name: string) => name.replaceAll("~", "~0").replaceAll("/", "~1");
  const childPath = () => {
    const top = stack.at(-1);
    if (!top) return "";
    return top.keys ? `${top.path}/${pointerEscape(top.key)}` : `${top.path}/${top.index}`;
  };
  let expectKey = false;
  const n = json.length;
  for (let i = 0; i < n; i++) {
    const c = json.charCodeAt(i);
    if (c === 0x22) {
      const start = i;
      for (i++; i < n; i++) {
        const d = json.charCodeAt(i);
        if (d === 0x5c) i++;
        else if (d === 0x22) break;
      }
      const top = stack.at(-1);
      if (top?.keys && expectKey) {
        const name = JSON.parse(json.slice(start, i + 1)) as string;
        if (top.keys.has(name)) return `${top.path}/${pointerEscape(name)}`;
        top.keys.add(name);
        top.key = name;
        expectKey = false;
      }
    } else if (c === 0x7b) {
      stack.push({ keys: new Set(), path: childPath(), key: "", index: 0 });
      expectKey = true;
    } else if (c === 0x5b) {
      stack.push({ keys: null, path: childPath(), key: "", index: 0 });
      expectKey = false;
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop();
    } else if (c === 0x2c) {
      const top = stack.at(-1);
      if (top?.keys) expectKey = true;
      else if (top) top.index++;
    }
  }
  return undefined;
}
