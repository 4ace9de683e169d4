// The module `grpc-serverfn codegen typescript` wrote for tests/typed_app.py
// (typed-serverfns.gen.ts), calling a real server serving that app
// (tests/test_typescript_client.py serves it at SERVERFN_TYPED_URL).

import assert from "node:assert/strict";
import { test } from "node:test";

import { createClient } from "@grpc-serverfn/client";

import {
  type GreetChunk,
  countdown,
  createServerFns,
  getOrder,
  greet,
  maybeTotal,
  progress,
  setClient,
} from "./typed-serverfns.gen.js";

const baseUrl = process.env["SERVERFN_TYPED_URL"] ?? "";

test("the generated functions call the server and get its values", async () => {
  setClient(createClient({ baseUrl }));
  const updates: number[] = [];
  for await (const update of progress()) {
    updates.push(update.progress);
    if (update.done) break;
  }
  assert.deepEqual(updates, [0, 50, 100]);
  const greetings: GreetChunk[] = [];
  const home = { street: "1 rue", postCode: "75001" };
  for await (const greeting of greet({ data: { name: "Ada", home, tags: ["!", "?"] } })) {
    greetings.push(greeting);
  }
  assert.deepEqual(
    greetings.map((greeting) => [greeting.text, greeting.colour, greeting.home.city]),
    [
      ["Hello Ada!", "green", "Paris"],
      ["Hello Ada?", "green", "Paris"],
    ],
  );
  assert.equal(greetings[0]?.home.postCode, "75001");
  const numbers: number[] = [];
  for await (const n of countdown({ data: 2 })) numbers.push(n);
  for await (const n of countdown(2)) numbers.push(n); // the input itself, not { data }
  assert.deepEqual(numbers, [2, 1, 0, 2, 1, 0]);
  assert.deepEqual(await getOrder({ data: "A1" }), { id: "A1", total: 9.5, lines: ["tea", "cake"] });
  assert.equal(await maybeTotal(), null);
  assert.equal(await maybeTotal({ data: [1, 2.5] }), 3.5);
});

test("createServerFns binds them to a client of its own, over each protocol", async () => {
  for (const transport of ["connect", "connect-binary", "grpc-web"] as const) {
    const fns = createServerFns(createClient({ baseUrl, transport }));
    const areas = [];
    const data = { shapes: [{ radius: 1 }, { kind: "square" as const, side: 2 }], scale: 2 };
    for await (const chunk of fns.areas({ data })) areas.push(chunk.area);
    assert.deepEqual(areas, [6, 8], transport);
    assert.deepEqual(await fns.anything({ data: { any: ["json"] } }), { any: ["json"] });
  }
});
