/**
 * @grpc-serverfn/client: call grpc-serverfn server functions from browsers and Node, over a
 * server's web port (`grpc-serverfn serve APP --web-port PORT`).
 */

export {
  COALESCE_MAX_BATCH,
  ChunkStream,
  DEFAULT_RESUME,
  DEFAULT_RETRY,
  STREAM_ID_HEADER,
  ServerFnClient,
  createClient,
} from "./client.js";
export type {
  CallOptions,
  ClientOptions,
  FunctionInfo,
  Protocol,
  ResumeOptions,
  ResumePolicy,
  RetryPolicy,
} from "./client.js";
export {
  Aborted,
  AlreadyExists,
  Cancelled,
  DataLoss,
  DeadlineExceeded,
  FailedPrecondition,
  Internal,
  InvalidArgument,
  NotFound,
  OutOfRange,
  PermissionDenied,
  ResourceExhausted,
  ServerFnError,
  Unauthenticated,
  Unavailable,
  Unimplemented,
  errorClassFor,
} from "./errors.js";
export type { FieldViolation } from "./errors.js";
