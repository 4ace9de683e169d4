// The client against a real server (tests/test_typescript_client.py starts it and sets the
// URLs): the test app's web port, a TCP proxy in front of it that the control server cuts on
// request, and the control server itself. Every test runs over each protocol.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import type { Interceptor, StreamResponse } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import {
  Cancelled,
  DeadlineExceeded,
  FailedPrecondition,
  Internal,
  InvalidArgument,
  NotFound,
  type Protocol,
  ServerFnError,
  Unavailable,
  createClient,
} from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined) {
    throw new Error(`${name} is not set: run tests/test_typescript_client.py`);
  }
  return value;
}

const WEB_URL = env("SERVERFN_WEB_URL");
const PROXY_URL = env("SERVERFN_PROXY_URL");
const control = createClient({ baseUrl: env("SERVERFN_CONTROL_URL") });
const PROTOCOLS: Protocol[] = ["connect", "connect-binary", "grpc-web"];

async function collect(stream: AsyncIterable<unknown>): Promise<unknown[]> {
  const values: unknown[] = [];
  for await (const value of stream) {
    values.push(value);
  }
  return values;
}

/** The values a stream delivered before it failed, and its error. */
async function collectUntilError(
  stream: AsyncIterable<unknown>,
): Promise<[unknown[], ServerFnError]> {
  const values: unknown[] = [];
  try {
    for await (const value of stream) {
      values.push(value);
    }
  } catch (error) {
    assert.ok(error instanceof ServerFnError, `not a ServerFnError: ${String(error)}`);
    return [values, error];
  }
  assert.fail(`the stream ended without an error after ${JSON.stringify(values)}`);
}

function uniqueKey(name: string): string {
  return `ts-${name}-${Math.random().toString(36).slice(2)}`;
}

async function cleanedUp(key: string): Promise<boolean> {
  const probe = (await control.call("cleaned_up", key)) as { cleaned_up: boolean };
  return probe.cleaned_up;
}

for (const protocol of PROTOCOLS) {
  describe(`over ${protocol}`, () => {
    const client = createClient({ baseUrl: WEB_URL, transport: protocol });

    test("chunks arrive in order, one value per yield", async () => {
      assert.deepEqual(await collect(client.invoke("count_async", { n: 5 })), [0, 1, 2, 3, 4]);
      assert.deepEqual(await collect(client.invoke("count_sync", { n: 3 })), [0, 1, 2]);
    });

    test("coalesced batches are unpacked in order", async () => {
      // A transport of our own, counting the messages under the values.
      let messages = 0;
      const counting: Interceptor = (next) => async (request) => {
        const response = await next(request);
        if (!response.stream) {
          return response;
        }
        return {
          ...response,
          message: (async function* () {
            for await (const message of (response as StreamResponse).message) {
              messages += 1;
              yield message;
            }
          })(),
        };
      };
      const transport =
        protocol === "grpc-web"
          ? createGrpcWebTransport({ baseUrl: WEB_URL, interceptors: [counting] })
          : createConnectTransport({
              baseUrl: WEB_URL,
              useBinaryFormat: protocol === "connect-binary",
              interceptors: [counting],
            });
      const counted = createClient({ baseUrl: WEB_URL, transport });
      const n = 20_000;
      const values = await collect(counted.invoke("count_async", { n }));
      assert.deepEqual(
        values,
        Array.from({ length: n }, (_, i) => i),
      );
      assert.ok(messages < n, `${messages} messages for ${n} chunks: nothing was coalesced`);

      const uncoalesced = createClient({ baseUrl: WEB_URL, transport, coalesce: false });
      messages = 0;
      assert.equal((await collect(uncoalesced.invoke("count_async", { n: 50 }))).length, 50);
      assert.equal(messages, 50);
    });

    test("call returns the single value; rich values survive", async () => {
      assert.deepEqual(await client.call("echo_async", { a: [1, 2], b: "é", c: null }), {
        a: [1, 2],
        b: "é",
        c: null,
      });
      assert.deepEqual(await client.call("no_input"), await client.call("no_input"));
      await assert.rejects(client.call("count_async", { n: 2 }), /streamed more than one chunk/);
    });

    test("an error after chunks comes after the chunks", async () => {
      const [values, error] = await collectUntilError(client.invoke("fail_after", { n: 3 }));
      assert.deepEqual(values, [0, 1, 2]);
      assert.ok(error instanceof FailedPrecondition);
      assert.equal(error.codeName, "FAILED_PRECONDITION");
      assert.equal(error.message, "the widget is not ready");
    });

    test("invalid input names its fields", async () => {
      const [values, error] = await collectUntilError(client.invoke("count_async", { n: -1 }));
      assert.deepEqual(values, []);
      assert.ok(error instanceof InvalidArgument);
      assert.deepEqual(
        error.fieldViolations.map((violation) => violation.field),
        ["n"],
      );
      const [, raised] = await collectUntilError(client.invoke("raise_invalid"));
      assert.ok(raised instanceof InvalidArgument);
      assert.equal(raised.message, "two fields are wrong");
      assert.deepEqual(raised.fieldViolations, [
        { field: "a", description: "must be set" },
        { field: "b.c", description: "too long" },
      ]);
      assert.equal(raised.details[0]?.$typeName, "google.rpc.BadRequest");
    });

    test("unknown functions and unexpected exceptions", async () => {
      await assert.rejects(client.call("no_such_function"), (error: unknown) => {
        assert.ok(error instanceof NotFound);
        assert.match(error.message, /no_such_function/);
        return true;
      });
      const [values, error] = await collectUntilError(client.invoke("crash_after", { n: 1 }));
      assert.deepEqual(values, [0]);
      assert.ok(error instanceof Internal);
      assert.doesNotMatch(error.message, /hunter2/);
    });

    test("functions() describes every function", async () => {
      const infos = await client.functions();
      const byName = new Map(infos.map((info) => [info.name, info]));
      assert.deepEqual(
        infos.map((info) => info.name),
        [...byName.keys()].sort(),
      );
      assert.equal(byName.get("resumable_ticks")?.resumable, true);
      assert.equal(byName.get("count_async")?.resumable, false);
      assert.equal(byName.get("post_wait")?.method, "POST");
      assert.equal(byName.get("count_async")?.method, "GET");
      assert.equal(byName.get("count_async")?.streaming, true);
      const schema = byName.get("count_async")?.inputSchema as {
        properties: { n: { type: string } };
      };
      assert.equal(schema.properties.n.type, "integer");
      assert.equal(byName.get("no_input")?.takesInput, false);
    });

    test("aborting the signal cancels the call and closes the server's generator", async () => {
      const key = uniqueKey("abort");
      const controller = new AbortController();
      const stream = client.invoke(
        "wait_async",
        { probe: key, chunks: 1 },
        { signal: controller.signal },
      );
      const values: unknown[] = [];
      await assert.rejects(
        (async () => {
          for await (const value of stream) {
            values.push(value);
            controller.abort();
          }
        })(),
        Cancelled,
      );
      assert.deepEqual(values, [0]);
      assert.ok(await cleanedUp(key), "the handler's finally did not run");
    });

    test("no value of a batch comes after the abort", async () => {
      const controller = new AbortController();
      const values: unknown[] = [];
      await assert.rejects(async () => {
        const stream = client.invoke("count_async", { n: 5000 }, { signal: controller.signal });
        for await (const value of stream) {
          values.push(value);
          controller.abort();
        }
      }, Cancelled);
      assert.deepEqual(values, [0]);
    });

    test("leaving the loop early cancels the call", async () => {
      const key = uniqueKey("break");
      for await (const value of client.invoke("wait_async", { probe: key, chunks: 2 })) {
        assert.equal(value, 0);
        break;
      }
      assert.ok(await cleanedUp(key), "the handler's finally did not run");
    });

    test("timeoutMs ends the call with DeadlineExceeded", async () => {
      const key = uniqueKey("deadline");
      const started = Date.now();
      const [values, error] = await collectUntilError(
        client.invoke("wait_async", { probe: key, chunks: 1 }, { timeoutMs: 300 }),
      );
      assert.deepEqual(values, [0]);
      assert.ok(error instanceof DeadlineExceeded, String(error));
      assert.ok(Date.now() - started < 5000);
      assert.ok(await cleanedUp(key), "the handler's finally did not run");
    });

    test("resume(streamId, nextSeq) picks a stream up in a new client", async () => {
      const ids: string[] = [];
      const first = client.invoke(
        "resumable_ticks",
        { count: 10, seconds: 0 },
        { onStreamId: (id) => ids.push(id) },
      );
      const head: unknown[] = [];
      for await (const chunk of first) {
        head.push((chunk as { tick: number }).tick);
        if (head.length === 4) {
          break; // a page reload: the producer goes on, the stream is kept
        }
      }
      assert.equal(first.nextSeq, 4);
      assert.ok(first.streamId !== undefined);
      assert.deepEqual(ids, [first.streamId]);

      const second = createClient({ baseUrl: WEB_URL, transport: protocol });
      const rest = await collect(
        second.resume(first.streamId, first.nextSeq, { function: "resumable_ticks" }),
      );
      assert.deepEqual(
        [...head, ...rest.map((chunk) => (chunk as { tick: number }).tick)],
        [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      );
      assert.equal(await second.cancelStream(first.streamId), false); // it has finished
      await assert.rejects(collect(second.resume("0".repeat(32))), NotFound);
    });

    test("a resumable stream resumes by itself after its connection drops", async () => {
      const proxied = createClient({ baseUrl: PROXY_URL, transport: protocol });
      const before = (await control.call("connections")) as number;
      const stream = proxied.invoke("resumable_ticks", { count: 60, seconds: 0.01 });
      const ticks: number[] = [];
      for await (const chunk of stream) {
        ticks.push((chunk as { tick: number }).tick);
        if (ticks.length === 10 || ticks.length === 30) {
          await control.call("drop");
        }
      }
      assert.deepEqual(
        ticks,
        Array.from({ length: 60 }, (_, i) => i),
      );
      assert.ok(stream.streamId !== undefined);
      const after = (await control.call("connections")) as number;
      // fetch may reuse an open connection for the first call; each resume needs a new one.
      assert.ok(
        after - before >= 2,
        `${after - before} new connections: it did not reconnect twice`,
      );
    });
  });
}

// The proxy is shared: tests that cut every connection through it run one at a time, here.
describe("retries (through the proxy)", { concurrency: 1 }, () => {
  test("a GET function's call is made again when its connection fails", async () => {
    const proxied = createClient({ baseUrl: PROXY_URL, transport: "connect" });
    await control.call("outage", 0.2);
    assert.deepEqual(await collect(proxied.invoke("count_async", { n: 3 })), [0, 1, 2]);
  });

  test("a POST function's call is not made again", async () => {
    const proxied = createClient({ baseUrl: PROXY_URL, transport: "connect" });
    await proxied.functions(); // knows post_wait is POST without asking during the outage
    await control.call("outage", 0.5);
    const [, error] = await collectUntilError(
      proxied.invoke("post_wait", { probe: uniqueKey("post"), chunks: 1, seconds: 0 }),
    );
    assert.ok(error instanceof Unavailable, String(error));
    await new Promise((resolve) => setTimeout(resolve, 600));
  });
});
