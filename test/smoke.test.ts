import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { BACKENDS } from "./support/db";
import { createTestApp, json, type TestApp } from "./support/app";

for (const backend of BACKENDS) {
  describe(`smoke [${backend}]`, () => {
    let t: TestApp;
    beforeAll(async () => {
      t = await createTestApp(backend);
    });
    afterAll(() => t.close());
    test("publish and read", async () => {
      const writer = await t.client(["agents:write"]);
      const card = await Bun.file("../shared/fixtures/agent-cards/valid/minimal-0.3.json").json();
      const res = await t.request("/v1/agents", { method: "POST", json: { card }, token: writer.token });
      expect(res.status).toBe(201);
      const body = await json(res);
      const got = await t.request(`/v1/agents/${body.id}`);
      expect(got.status).toBe(200);
    });
  });
}
