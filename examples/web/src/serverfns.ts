// The demo's server functions (examples/demo.py) as the page calls them, in the document's
// shape: `streamData()`, `streamChat({ data })`, `processLargeFile({ data })`, each an async
// iterable of the chunks the function yields. The functions and their types are generated
// (serverfns.gen.ts, by `grpc-serverfn codegen typescript --app examples/demo.py:fns`); this
// file only makes the client they call.
import { createClient } from "@grpc-serverfn/client";
import type { Protocol } from "@grpc-serverfn/client";

import { setClient } from "./serverfns.gen";

// ?protocol=connect | connect-binary | grpc-web picks the wire protocol (default: Connect JSON);
// ?server=URL calls a web port on another origin (that origin must allow this page: CORS).
const params = new URLSearchParams(window.location.search);
export const protocol = (params.get("protocol") ?? "connect") as Protocol;
export const client = createClient({
  baseUrl: params.get("server") ?? window.location.origin,
  transport: protocol,
});
setClient(client);

export {
  processLargeFile,
  resumeStreamChat as resumeChat,
  streamChat,
  streamData,
} from "./serverfns.gen";
export type {
  Chunks,
  ProcessLargeFileChunk as FileProgress,
  StreamChatChunk as ChatToken,
  StreamDataChunk as Progress,
} from "./serverfns.gen";
