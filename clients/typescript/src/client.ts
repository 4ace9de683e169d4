/**
 * The TypeScript twin of grpc_serverfn/client.py, over a server's web port (Connect or
 * gRPC-Web over fetch, so the same code runs in browsers and in Node):
 *
 *     const client = createClient({ baseUrl: "http://localhost:8080" });
 *     for await (const update of client.invoke("stream_data")) console.log(update);
 *
 * Each chunk a server function yields arrives as one decoded JSON value; the client asks the
 * server to coalesce chunks that pile up and unpacks the batches. Errors are ServerFnError
 * subclasses. Calls refused before they ran, and GET functions' calls that failed before
 * their first chunk, are made again (RetryPolicy); a resumable function's stream resumes by
 * itself when its connection drops (ResumePolicy), and `resume()` picks one up after a reload.
 */

import { create, toJson } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient as createRpcClient } from "@connectrpc/connect";
import type { Client as RpcClient, Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-web";

import {
  Cancelled,
  DeadlineExceeded,
  ServerFnError,
  errorFrom,
  isConnectionFailure,
} from "./errors.js";
import type { ErrorInfo, RetryInfo } from "./gen/google/rpc/error_details_pb.js";
import {
  type Chunk,
  Encoding,
  type InvokeRequest,
  InvokeRequestSchema,
  Method,
  ServerFunctions,
} from "./gen/serverfn/v1/serverfn_pb.js";

/** The header a resumable call announces its stream id in (see the proto's Resume). */
export const STREAM_ID_HEADER = "serverfn-stream-id";
/** How many chunks the client accepts packed into one message (the server's own cap). */
export const COALESCE_MAX_BATCH = 1024;

const ERROR_DOMAIN = "serverfn.v1";
const NOT_STARTED_REASONS = new Set(["SERVER_AT_CAPACITY", "SERVER_SHUTTING_DOWN"]);
const METHOD_LOOKUP_TIMEOUT_MS = 5000;

/** The wire protocol: Connect with JSON or binary messages, or gRPC-Web (binary). */
export type Protocol = "connect" | "connect-binary" | "grpc-web";

/**
 * How a resumable stream is picked up again when its connection drops: up to `attempts`
 * resumes per stream, waiting `backoffMs` before the first and twice as long before each
 * next one, at most `maxBackoffMs` (ResumePolicy in the Python clients).
 */
export interface ResumePolicy {
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
}

/**
 * How a call that failed before its first chunk is made again: up to `attempts` more times,
 * with doubling backoff (shortened at random by up to half), never sooner than the server's
 * google.rpc.RetryInfo asks. Made again: a call the server refused before running it
 * (ErrorInfo reason SERVER_AT_CAPACITY or SERVER_SHUTTING_DOWN), and a GET function's call
 * whose connection failed (RetryPolicy in the Python clients).
 */
export interface RetryPolicy {
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RESUME: ResumePolicy = { attempts: 5, backoffMs: 100, maxBackoffMs: 2000 };
export const DEFAULT_RETRY: RetryPolicy = { attempts: 3, backoffMs: 100, maxBackoffMs: 1000 };

export interface ClientOptions {
  /** The server's web port, e.g. `http://localhost:8080` (or `/` from the page it serves). */
  baseUrl: string;
  /** The protocol (default "connect"), or a connect-es Transport of your own. */
  transport?: Protocol | Transport;
  /** Headers sent with every call (e.g. `authorization`). */
  headers?: HeadersInit;
  /** The fetch to use (e.g. one that sets `credentials`). */
  fetch?: typeof globalThis.fetch;
  /** The timeout of every call that sets none, in milliseconds (default: none). */
  timeoutMs?: number;
  /** Let the server pack chunks that pile up into one message (default true). */
  coalesce?: boolean;
  /** null: never resume. */
  resume?: ResumePolicy | null;
  /** null: never make a call again. */
  retry?: RetryPolicy | null;
}

export interface CallOptions {
  /** Aborting it cancels the call; the server closes the function's generator. */
  signal?: AbortSignal;
  /** The call's deadline, from now, across every resume and retry (DeadlineExceeded). */
  timeoutMs?: number;
  /** Headers for this call, after the client's. */
  headers?: HeadersInit;
  /** At most this many chunks in one message (default: 1024 when coalescing, else 1). */
  maxBatch?: number;
  /** Called once with a resumable stream's id, when the server announces it. */
  onStreamId?: (streamId: string) => void;
}

export interface ResumeOptions extends CallOptions {
  /** The stream's function, when known (the server checks it). */
  function?: string;
}

/** A server function as ListFunctions describes it. */
export interface FunctionInfo {
  name: string;
  description: string;
  streaming: boolean;
  method: "GET" | "POST";
  takesInput: boolean;
  inputRequired: boolean;
  inputSchema: Record<string, unknown> | undefined;
  outputSchema: Record<string, unknown> | undefined;
  /** Calls are resumable streams: they announce a stream id and can be resumed. */
  resumable: boolean;
}

/**
 * The chunks of one call, decoded, for `for await`. Leaving the loop early cancels the call.
 * `streamId` and `nextSeq` say where to resume it (e.g. after a page reload).
 */
export class ChunkStream implements AsyncIterable<unknown> {
  /** The stream's id, once a resumable function's server announced it. */
  streamId: string | undefined;
  /** The sequence number of the next chunk: when the loop has a chunk, the ones before it. */
  nextSeq: number;
  readonly #run: (stream: ChunkStream) => AsyncGenerator<unknown>;
  #started = false;

  /** @internal */
  constructor(
    run: (stream: ChunkStream) => AsyncGenerator<unknown>,
    streamId: string | undefined,
    nextSeq: number,
  ) {
    this.#run = run;
    this.streamId = streamId;
    this.nextSeq = nextSeq;
  }

  [Symbol.asyncIterator](): AsyncIterator<unknown> {
    // One call, one pass: a second loop would silently see nothing.
    if (this.#started) {
      throw new TypeError("a ChunkStream is iterated once; call invoke() again for a new call");
    }
    this.#started = true;
    return this.#run(this);
  }
}

/** The client: `invoke`, `call`, `resume`, `functions`, `cancelStream`. */
export class ServerFnClient {
  readonly #rpc: RpcClient<typeof ServerFunctions>;
  readonly #headers: Headers;
  readonly #timeoutMs: number | undefined;
  readonly #maxBatch: number;
  readonly #resume: ResumePolicy | null;
  readonly #retry: RetryPolicy | null;
  // Each function's method, as ListFunctions told it; one lookup at a time.
  readonly #methods = new Map<string, "GET" | "POST">();
  #lookup: Promise<void> | undefined;

  constructor(options: ClientOptions) {
    this.#rpc = createRpcClient(ServerFunctions, transportFor(options));
    this.#headers = new Headers(options.headers);
    this.#timeoutMs = options.timeoutMs;
    this.#maxBatch = options.coalesce === false ? 0 : COALESCE_MAX_BATCH;
    this.#resume = options.resume === undefined ? DEFAULT_RESUME : options.resume;
    this.#retry = options.retry === undefined ? DEFAULT_RETRY : options.retry;
  }

  /** Call `name` with `data` (undefined: no input) and stream the values it yields. */
  invoke(name: string, data?: unknown, options: CallOptions = {}): ChunkStream {
    const request = create(InvokeRequestSchema, {
      function: name,
      accept: Encoding.JSON,
      maxBatch: options.maxBatch ?? this.#maxBatch,
    });
    if (data !== undefined) {
      request.input = { case: "json", value: JSON.stringify(data) };
    }
    return this.#stream(request, options, undefined, 0);
  }

  /**
   * Pick a resumable stream up again from chunk `nextSeq` (0: from the start), on any server
   * sharing its stream store; NotFound once it has expired.
   */
  resume(streamId: string, nextSeq = 0, options: ResumeOptions = {}): ChunkStream {
    const request = resumeRequest(
      options.function ?? "",
      options.maxBatch ?? this.#maxBatch,
      streamId,
      nextSeq,
    );
    return this.#stream(request, options, streamId, nextSeq);
  }

  /** Call a function that produces exactly one value and return it. */
  async call(name: string, data?: unknown, options: CallOptions = {}): Promise<unknown> {
    const values = this.invoke(name, data, options)[Symbol.asyncIterator]();
    try {
      const first = await values.next();
      if (first.done === true) {
        throw new Error(`'${name}' ended without producing a value`);
      }
      if ((await values.next()).done !== true) {
        throw new Error(
          `'${name}' streamed more than one chunk; iterate invoke() to receive them all`,
        );
      }
      return first.value;
    } finally {
      await values.return?.();
    }
  }

  /** The functions the server offers, sorted by name. */
  async functions(
    options: Omit<CallOptions, "maxBatch" | "onStreamId"> = {},
  ): Promise<FunctionInfo[]> {
    let response;
    try {
      response = await this.#rpc.listFunctions(
        {},
        {
          signal: options.signal,
          timeoutMs: options.timeoutMs ?? this.#timeoutMs,
          headers: this.#headersFor(options.headers),
        },
      );
    } catch (reason) {
      throw errorFrom(reason);
    }
    const infos = response.functions.map(
      (info): FunctionInfo => ({
        name: info.name,
        description: info.description,
        streaming: info.streaming,
        method: info.method === Method.POST ? "POST" : "GET",
        takesInput: info.takesInput,
        inputRequired: info.inputRequired,
        inputSchema: info.inputSchema,
        outputSchema: info.outputSchema,
        resumable: info.resumable,
      }),
    );
    for (const info of infos) {
      this.#methods.set(info.name, info.method);
    }
    return infos;
  }

  /**
   * Stop a resumable stream's producer, wherever it runs; false if it had already ended.
   * Only the identity that started the stream may stop it.
   */
  async cancelStream(
    streamId: string,
    options: Omit<CallOptions, "maxBatch" | "onStreamId"> = {},
  ): Promise<boolean> {
    try {
      const response = await this.#rpc.cancelStream(
        { streamId },
        {
          signal: options.signal,
          timeoutMs: options.timeoutMs ?? this.#timeoutMs,
          headers: this.#headersFor(options.headers),
        },
      );
      return response.wasRunning;
    } catch (reason) {
      throw errorFrom(reason);
    }
  }

  #headersFor(extra: HeadersInit | undefined): Headers {
    const headers = new Headers(this.#headers);
    new Headers(extra).forEach((value, key) => headers.set(key, value));
    return headers;
  }

  #stream(
    request: InvokeRequest,
    options: CallOptions,
    streamId: string | undefined,
    nextSeq: number,
  ): ChunkStream {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    return new ChunkStream(
      (stream) => this.#chunks(stream, request, options, timeoutMs),
      streamId,
      nextSeq,
    );
  }

  /** The call, and every resume and retry of it, as one sequence of values. */
  async *#chunks(
    stream: ChunkStream,
    first: InvokeRequest,
    options: CallOptions,
    timeoutMs: number | undefined,
  ): AsyncGenerator<unknown> {
    // Our own controller, so that leaving the loop early (return()) ends the fetch too.
    const controller = new AbortController();
    const { signal } = options;
    const abort = (): void => controller.abort(signal?.reason);
    signal?.addEventListener("abort", abort);
    if (signal?.aborted === true) {
      abort();
    }
    const deadline = timeoutMs === undefined || timeoutMs <= 0 ? undefined : Date.now() + timeoutMs;
    const headers = this.#headersFor(options.headers);
    const announce = (received: Headers): void => {
      const id = received.get(STREAM_ID_HEADER);
      if (id !== null && stream.streamId === undefined) {
        stream.streamId = id;
        options.onStreamId?.(id);
      }
    };
    let request = first;
    let received = false; // a chunk arrived, on any attempt: the call is never made again
    let resumes = 0;
    let retries = 0;
    try {
      attempts: for (;;) {
        try {
          const left = deadline === undefined ? undefined : deadline - Date.now();
          if (left !== undefined && left <= 0) {
            throw new DeadlineExceeded("the call's deadline passed");
          }
          const messages = this.#rpc.invoke(request, {
            signal: controller.signal,
            timeoutMs: left,
            headers,
            onHeader: announce,
          });
          for await (const message of messages) {
            received = true;
            const values = decodeChunk(message);
            for (let i = 0; i < values.length; i++) {
              // Aborted while the loop had a batch's value: the rest of the batch is not given.
              controller.signal.throwIfAborted();
              const seq = message.seq + i;
              if (seq < stream.nextSeq) {
                continue; // given already, before a resume: the loop sees each chunk once
              }
              stream.nextSeq = seq + 1;
              yield values[i];
            }
          }
          return;
        } catch (reason) {
          if (controller.signal.aborted) {
            throw new Cancelled("the call was cancelled", { cause: reason });
          }
          if (reason instanceof ServerFnError) {
            throw reason;
          }
          const error = ConnectError.from(reason);
          const left = deadline === undefined ? Infinity : deadline - Date.now();
          // A resumable stream whose connection dropped: pick it up where the loop is.
          const resume = this.#resume;
          if (
            resume !== null &&
            stream.streamId !== undefined &&
            isConnectionFailure(error) &&
            resumes < resume.attempts
          ) {
            const delay = Math.min(resume.maxBackoffMs, resume.backoffMs * 2 ** resumes);
            resumes += 1;
            if (delay < left) {
              await sleep(delay, controller.signal);
              request = resumeRequest(
                first.function,
                first.maxBatch,
                stream.streamId,
                stream.nextSeq,
              );
              continue;
            }
          }
          const retry = this.#retry;
          if (retry !== null && !received) {
            while (retries < retry.attempts) {
              const why = retryable(error);
              if (why === undefined || (why.ifGet && first.function === "")) {
                break;
              }
              const longest = Math.min(retry.maxBackoffMs, retry.backoffMs * 2 ** retries);
              const delay = Math.max(why.atLeastMs, longest * (0.5 + Math.random() / 2));
              retries += 1;
              if (delay >= left) {
                break;
              }
              await sleep(delay, controller.signal);
              if (why.ifGet) {
                const method = await this.#methodOf(first.function, controller.signal);
                if (method === undefined) {
                  continue; // not told yet: the next attempt asks again
                }
                if (method !== "GET") {
                  break;
                }
              }
              request = first;
              continue attempts;
            }
          }
          throw errorFrom(error);
        }
      }
    } finally {
      signal?.removeEventListener("abort", abort);
      controller.abort(); // no effect once the call has ended; ends it when left early
    }
  }

  /** The method of `name`, asking the server once when it is not known yet. */
  async #methodOf(name: string, signal: AbortSignal): Promise<"GET" | "POST" | undefined> {
    if (!this.#methods.has(name)) {
      this.#lookup ??= this.functions({ signal, timeoutMs: METHOD_LOOKUP_TIMEOUT_MS }).then(
        () => undefined,
        () => undefined, // not told: the call's own error stands
      );
      await this.#lookup;
      this.#lookup = undefined;
    }
    return this.#methods.get(name);
  }
}

/**
 * Why a call that failed before its first chunk may be made again, or undefined: the server
 * refused it before running it (wait at least its RetryInfo's delay), or its connection
 * failed (`ifGet`: only when its function is a GET one).
 */
function retryable(error: ConnectError): { atLeastMs: number; ifGet: boolean } | undefined {
  const failure = errorFrom(error);
  if (failure.code === Code.ResourceExhausted || failure.code === Code.Unavailable) {
    const refused = failure.details.some(
      (detail) =>
        detail.$typeName === "google.rpc.ErrorInfo" &&
        (detail as ErrorInfo).domain === ERROR_DOMAIN &&
        NOT_STARTED_REASONS.has((detail as ErrorInfo).reason),
    );
    if (refused) {
      const retryInfo = failure.details.find(
        (detail): detail is RetryInfo => detail.$typeName === "google.rpc.RetryInfo",
      );
      const delay = retryInfo?.retryDelay;
      const atLeastMs = delay === undefined ? 0 : Number(delay.seconds) * 1000 + delay.nanos / 1e6;
      return { atLeastMs, ifGet: false };
    }
  }
  if (isConnectionFailure(error)) {
    return { atLeastMs: 0, ifGet: true };
  }
  return undefined;
}

/** A client for the server function at `baseUrl` (see ClientOptions). */
export function createClient(options: ClientOptions): ServerFnClient {
  return new ServerFnClient(options);
}

function transportFor(options: ClientOptions): Transport {
  const { transport = "connect", baseUrl } = options;
  if (typeof transport !== "string") {
    return transport;
  }
  const common = options.fetch === undefined ? { baseUrl } : { baseUrl, fetch: options.fetch };
  switch (transport) {
    case "connect":
      return createConnectTransport(common);
    case "connect-binary":
      return createConnectTransport({ ...common, useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport(common);
    default:
      throw new TypeError(
        `transport must be "connect", "connect-binary" or "grpc-web", not ${String(transport)}`,
      );
  }
}

function resumeRequest(
  name: string,
  maxBatch: number,
  streamId: string,
  nextSeq: number,
): InvokeRequest {
  return create(InvokeRequestSchema, {
    function: name,
    accept: Encoding.JSON,
    maxBatch,
    resume: { streamId, nextSeq },
  });
}

/** The values one message carries: one, or a coalesced batch's. */
function decodeChunk(chunk: Chunk): unknown[] {
  const { payload } = chunk;
  switch (payload.case) {
    case "json":
      return [JSON.parse(payload.value)];
    case "value":
      return [toJson(ValueSchema, payload.value)];
    case "batch":
      return payload.value.json.length > 0
        ? payload.value.json.map((text) => JSON.parse(text) as unknown)
        : payload.value.values.map((value) => toJson(ValueSchema, value));
    default:
      return [null];
  }
}

/** Wait `ms`; a Cancelled error if `signal` aborts meanwhile. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      if (signal.aborted) {
        reject(new Cancelled("the call was cancelled", { cause: signal.reason }));
      } else {
        resolve();
      }
    };
    const timer = setTimeout(done, signal.aborted ? 0 : ms);
    signal.addEventListener("abort", done);
  });
}
