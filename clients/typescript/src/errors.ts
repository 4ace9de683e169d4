/**
 * Errors a call ends with: the same classes, by the same names, as grpc_serverfn/errors.py.
 *
 *     ServerFnError                 code UNKNOWN unless given; base of everything below
 *     ├── Cancelled                 CANCELLED (an AbortSignal aborted the call)
 *     ├── InvalidArgument           INVALID_ARGUMENT (validation errors carry a BadRequest)
 *     ├── DeadlineExceeded          DEADLINE_EXCEEDED (timeoutMs passed)
 *     ├── NotFound                  NOT_FOUND
 *     ├── AlreadyExists             ALREADY_EXISTS
 *     ├── PermissionDenied          PERMISSION_DENIED
 *     ├── ResourceExhausted         RESOURCE_EXHAUSTED
 *     ├── FailedPrecondition        FAILED_PRECONDITION
 *     ├── Aborted                   ABORTED
 *     ├── OutOfRange                OUT_OF_RANGE
 *     ├── Unimplemented             UNIMPLEMENTED
 *     ├── Internal                  INTERNAL (what unexpected exceptions become)
 *     ├── Unavailable               UNAVAILABLE (also: the connection failed or dropped)
 *     ├── DataLoss                  DATA_LOSS
 *     └── Unauthenticated           UNAUTHENTICATED
 *
 * The server sends details as a google.rpc.Status (Connect puts them in its error JSON,
 * gRPC-Web in the grpc-status-details-bin trailer; connect-es reads either). The ones
 * google/rpc/error_details.proto defines are decoded into `details`.
 */

import { createRegistry, type Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";

import {
  type BadRequest,
  file_google_rpc_error_details,
} from "./gen/google/rpc/error_details_pb.js";

/** A field the server found invalid: a dotted path (`""` for the input itself) and why. */
export interface FieldViolation {
  readonly field: string;
  readonly description: string;
}

// Every google.rpc detail message, so that any of them the server sends is decoded.
const DETAILS = createRegistry(file_google_rpc_error_details);

/** A call ended with a non-OK status; `code` is the gRPC code's number (connect-es' `Code`). */
export class ServerFnError extends Error {
  /** The class's code (the base class: UNKNOWN). */
  static readonly code: Code = Code.Unknown;

  readonly code: Code;
  /** The server's own message, without the code prefix Connect's errors add. */
  override readonly message: string;
  /** The google.rpc detail messages (ErrorInfo, BadRequest, RetryInfo, ...), decoded. */
  readonly details: readonly Message[];
  /** The response headers and trailers that came with the error. */
  readonly metadata: Headers;

  constructor(
    message: string,
    options: {
      code?: Code;
      details?: readonly Message[];
      metadata?: Headers;
      cause?: unknown;
    } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.message = message;
    this.code = options.code ?? (new.target as typeof ServerFnError).code;
    this.details = options.details ?? [];
    this.metadata = options.metadata ?? new Headers();
    this.name = new.target.name;
  }

  /** The gRPC name of the code, e.g. `INVALID_ARGUMENT`. */
  get codeName(): string {
    return CODE_NAMES[this.code] ?? "UNKNOWN";
  }

  /** Every field named by a google.rpc.BadRequest detail. */
  get fieldViolations(): FieldViolation[] {
    return this.details
      .filter((detail): detail is BadRequest => detail.$typeName === "google.rpc.BadRequest")
      .flatMap((detail) =>
        detail.fieldViolations.map(({ field, description }) => ({ field, description })),
      );
  }

  override toString(): string {
    return `${this.name}: ${this.codeName}: ${this.message}`;
  }
}

export class Cancelled extends ServerFnError {
  static override readonly code = Code.Canceled;
}
export class InvalidArgument extends ServerFnError {
  static override readonly code = Code.InvalidArgument;
}
export class DeadlineExceeded extends ServerFnError {
  static override readonly code = Code.DeadlineExceeded;
}
export class NotFound extends ServerFnError {
  static override readonly code = Code.NotFound;
}
export class AlreadyExists extends ServerFnError {
  static override readonly code = Code.AlreadyExists;
}
export class PermissionDenied extends ServerFnError {
  static override readonly code = Code.PermissionDenied;
}
export class ResourceExhausted extends ServerFnError {
  static override readonly code = Code.ResourceExhausted;
}
export class FailedPrecondition extends ServerFnError {
  static override readonly code = Code.FailedPrecondition;
}
export class Aborted extends ServerFnError {
  static override readonly code = Code.Aborted;
}
export class OutOfRange extends ServerFnError {
  static override readonly code = Code.OutOfRange;
}
export class Unimplemented extends ServerFnError {
  static override readonly code = Code.Unimplemented;
}
export class Internal extends ServerFnError {
  static override readonly code = Code.Internal;
}
export class Unavailable extends ServerFnError {
  static override readonly code = Code.Unavailable;
}
export class DataLoss extends ServerFnError {
  static override readonly code = Code.DataLoss;
}
export class Unauthenticated extends ServerFnError {
  static override readonly code = Code.Unauthenticated;
}

const CLASSES: ReadonlyMap<Code, typeof ServerFnError> = new Map(
  [
    Cancelled,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
  ].map((cls) => [cls.code, cls]),
);

const CODE_NAMES: Readonly<Record<number, string>> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

/** The ServerFnError class for a code (the base class for UNKNOWN and codes without one). */
export function errorClassFor(code: Code): typeof ServerFnError {
  return CLASSES.get(code) ?? ServerFnError;
}

/**
 * Whether a failure is the connection's rather than the server's verdict: the fetch failed,
 * the body stopped mid-stream, or a proxy answered 502/503/504 (connect-es: UNAVAILABLE).
 * connect-es wraps what fetch throws in an UNKNOWN error with the original as `cause`; an
 * error the server sent has no cause.
 */
export function isConnectionFailure(error: ConnectError): boolean {
  if (error.code === Code.Unavailable) {
    return true;
  }
  return (
    error.code === Code.Unknown &&
    error.cause !== undefined &&
    !(error.cause instanceof ConnectError)
  );
}

/** The ServerFnError for whatever a call threw (a ConnectError, or anything else). */
export function errorFrom(reason: unknown): ServerFnError {
  if (reason instanceof ServerFnError) {
    return reason;
  }
  const error = ConnectError.from(reason);
  // A dropped connection is UNAVAILABLE, as the Python clients report it.
  const code = isConnectionFailure(error) ? Code.Unavailable : error.code;
  const cls = errorClassFor(code);
  return new cls(error.rawMessage, {
    code,
    details: error.findDetails(DETAILS),
    metadata: error.metadata,
    cause: error,
  });
}
