import { describe, expect, test } from "bun:test";
import { topLevelMemberText } from "../src/modules/agents/raw-json";

describe("topLevelMemberText", () => {
  test("returns the exact source text of a member, whatever its spacing and key order", () => {
    const card = '{ "b": 1.50, "a" : [ "x", {"y": "}\\"]"} ] }';
    expect(topLevelMemberText(`{"visibility":"public","card":${card}}`, "card")).toBe(card);
    expect(topLevelMemberText(`{\n  "card" :\t${card}\n, "z": null}`, "card")).toBe(card);
  });

  test("finds scalars, nested keys are not top-level, absent is undefined", () => {
    expect(topLevelMemberText('{"n": -1.5e3, "s": "x"}', "n")).toBe("-1.5e3");
    expect(topLevelMemberText('{"outer": {"card": 1}}', "card")).toBeUndefined();
    expect(topLevelMemberText('{"a": 1}', "card")).toBeUndefined();
    expect(topLevelMemberText("[1,2]", "card")).toBeUndefined();
    expect(topLevelMemberText("{}", "card")).toBeUndefined();
  });

  test("escaped key names are decoded; the last duplicate wins like JSON.parse", () => {
    expect(topLevelMemberText('{"c\\u0061rd": {"v": 1}}', "card")).toBe('{"v": 1}');
    expect(topLevelMemberText('{"card": {"v": 1}, "card": {"v": 2}}', "card")).toBe('{"v": 2}');
  });

  test("agrees with JSON.parse on a string holding braces, quotes and backslashes", () => {
    const value = { s: 'he said "}" and \\ then {', arr: ["]", "[", '\\"'] };
    const text = JSON.stringify({ card: value });
    expect(JSON.parse(topLevelMemberText(text, "card")!)).toEqual(value);
  });

  test("deep nesting does not exhaust the stack", () => {
    const deep = `${"[".repeat(100_000)}${"]".repeat(100_000)}`;
    expect(topLevelMemberText(`{"card": ${deep}}`, "card")).toBe(deep);
  });

  test("truncated input is undefined, not an exception", () => {
    expect(topLevelMemberText('{"card": {"a": ', "card")).toBeUndefined();
    expect(topLevelMemberText('{"card": "abc', "card")).toBeUndefined();
  });
});
