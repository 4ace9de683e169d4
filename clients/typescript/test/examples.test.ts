// examples/browser.ts, as docs/browsers.md shows it, against examples/demo.py and
// examples/resumable.py (tests/test_typescript_client.py serves them).

import assert from "node:assert/strict";
import { test } from "node:test";

import { connect, reply, tour } from "../examples/browser.js";

test("the tour logs what the docs say", async () => {
  const lines: string[] = [];
  await tour(connect(process.env["SERVERFN_DEMO_URL"] ?? ""), (line) => lines.push(line));
  assert.deepEqual(lines.slice(0, 4), [
    '{"progress":0}',
    '{"progress":33}',
    '{"progress":66}',
    '{"progress":100,"done":true}',
  ]);
  assert.equal(lines[5], "Cancelled: CANCELLED: the call was cancelled");
  assert.match(lines[6] ?? "", /^\[\{"field":"message","description":".+"\}\]$/);
  assert.deepEqual(lines.slice(7), [
    "process_large_file POST",
    "stream_chat POST resumable",
    "stream_data GET",
  ]);
});

test("a reload mid-reply goes on from where it was", async () => {
  const client = connect(process.env["SERVERFN_RESUMABLE_URL"] ?? "");
  const storage = new Map<string, string>();
  const session = {
    getItem: (key: string) => storage.get(key) ?? null,
    setItem: (key: string, value: string) => void storage.set(key, value),
    removeItem: (key: string) => void storage.delete(key),
  };
  const words: string[] = [];
  const page = new AbortController();
  await assert.rejects(
    reply(
      client,
      "hi",
      (word) => {
        words.push(word);
        if (words.length === 3) page.abort(); // the page reloads
      },
      session,
      page.signal,
    ),
    { name: "Cancelled" },
  );
  assert.equal(words.length, 3);
  assert.ok(storage.has("reply"));
  await reply(
    connect(process.env["SERVERFN_RESUMABLE_URL"] ?? ""),
    "ignored",
    (word) => words.push(word),
    session,
  );
  assert.equal(words.join(""), "You said 'hi'. Here is a long answer, one word at a time. ");
  assert.ok(!storage.has("reply"));
});
