import { ServerFnError } from "@grpc-serverfn/client";

/** What a failed call says: the server's message and, for bad input, each field's problem. */
export function ErrorMessage({ error }: { error: unknown }) {
  if (error === undefined) return null;
  if (error instanceof ServerFnError) {
    return (
      <div role="alert" data-code={error.code}>
        <p>{error.message}</p>
        <ul>
          {error.fieldViolations.map((violation) => (
            <li key={violation.field + violation.description}>
              <code>{violation.field}</code>: {violation.description}
            </li>
          ))}
        </ul>
      </div>
    );
  }
  return <div role="alert">{String(error)}</div>;
}
