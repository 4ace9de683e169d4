// What a page does with @grpc-serverfn/client, against examples/demo.py and
// examples/resumable.py served with --web-port (README.md and docs/browsers.md copy these lines;
// test/examples.test.ts runs them).

import { InvalidArgument, createClient, type ServerFnClient } from "@grpc-serverfn/client";

export function connect(baseUrl: string): ServerFnClient {
  // "connect" (JSON, the default), "connect-binary" or "grpc-web"
  return createClient({ baseUrl, transport: "connect" });
}

export async function tour(client: ServerFnClient, log: (line: string) => void): Promise<void> {
  for await (const update of client.invoke("stream_data")) {
    log(JSON.stringify(update)); // {"progress":0} ... {"progress":100,"done":true}
  }

  const stop = new AbortController(); // e.g. a Stop button's
  const chat = client.invoke("stream_chat", { message: "hi" }, { signal: stop.signal });
  try {
    for await (const token of chat) {
      log((token as { text: string }).text);
      stop.abort(); // the call ends with Cancelled; the server closes the generator
    }
  } catch (error) {
    log(String(error)); // Cancelled: CANCELLED: the call was cancelled
  }

  try {
    await client.call("stream_chat", { message: "" });
  } catch (error) {
    if (!(error instanceof InvalidArgument)) throw error;
    log(JSON.stringify(error.fieldViolations)); // [{"field":"message","description":"..."}]
  }

  for (const fn of await client.functions()) {
    log(`${fn.name} ${fn.method}${fn.resumable ? " resumable" : ""}`);
  }
}

/** Shows long_reply's words as they come; reloading the page mid-reply picks it up. */
export async function reply(
  client: ServerFnClient,
  message: string,
  show: (text: string) => void,
  storage: Pick<Storage, "getItem" | "setItem" | "removeItem"> = sessionStorage,
  signal?: AbortSignal,
): Promise<void> {
  const saved = storage.getItem("reply"); // left by a page this one replaced
  const stream = saved
    ? client.resume(JSON.parse(saved).id, JSON.parse(saved).nextSeq, { signal })
    : client.invoke("long_reply", { message }, { signal });
  for await (const chunk of stream) {
    show((chunk as { text: string }).text);
    // Where the next page picks up: no word lost or shown twice.
    storage.setItem("reply", JSON.stringify({ id: stream.streamId, nextSeq: stream.nextSeq }));
  }
  storage.removeItem("reply");
}
