// The demo's server functions (examples/demo.py) as the page calls them, in the document's
// shape: `streamData()`, `streamChat({ data })`, `processLargeFile({ data })`, each an async
// iterable of the chunks the function yields.
import { createClient } from "@grpc-serverfn/client";
import type { CallOptions, ChunkStream, Protocol } from "@grpc-serverfn/client";

// ?protocol=connect | connect-binary | grpc-web picks the wire protocol (default: Connect JSON);
// ?server=URL calls a web port on another origin (that origin must allow this page: CORS).
const params = new URLSearchParams(window.location.search);
export const protocol = (params.get("protocol") ?? "connect") as Protocol;
export const client = createClient({
  baseUrl: params.get("server") ?? window.location.origin,
  transport: protocol,
});

export interface Progress {
  progress: number;
  done?: boolean;
}

export interface ChatToken {
  text: string;
}

export interface FileProgress {
  processed: number;
  total: number;
  percent: number;
  complete?: boolean;
}

/** A stream of chunks of a known type (the client decodes JSON; the server defines the shape). */
export type Chunks<T> = AsyncIterable<T> & Pick<ChunkStream, "streamId" | "nextSeq">;

export function streamData(options?: CallOptions): Chunks<Progress> {
  return client.invoke("stream_data", undefined, options) as Chunks<Progress>;
}

export function streamChat(
  { data }: { data: { message: string } },
  options?: CallOptions,
): Chunks<ChatToken> {
  return client.invoke("stream_chat", data, options) as Chunks<ChatToken>;
}

/** Picks a chat reply up again after a reload, from its stream id and the next chunk's number. */
export function resumeChat(streamId: string, nextSeq: number, options?: CallOptions): Chunks<ChatToken> {
  return client.resume(streamId, nextSeq, { ...options, function: "stream_chat" }) as Chunks<ChatToken>;
}

export function processLargeFile(
  { data }: { data: { file: string } },
  options?: CallOptions,
): Chunks<FileProgress> {
  return client.invoke("process_large_file", data, options) as Chunks<FileProgress>;
}
