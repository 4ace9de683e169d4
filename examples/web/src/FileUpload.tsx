import { useEffect, useRef, useState } from "react";

import { ErrorMessage } from "./ErrorMessage";
import { type FileProgress, processLargeFile } from "./serverfns";

// The document's long-running task: a CSV processed on the server, its progress shown as it
// goes. Cancel, or closing the panel (unmounting), aborts the call: the server closes the
// function's generator, and its `finally` runs.
export function FileUpload() {
  const [progress, setProgress] = useState<FileProgress | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const running = useRef<AbortController | undefined>(undefined);

  useEffect(() => () => running.current?.abort(), []);

  const handleFile = async (file: File) => {
    running.current?.abort();
    const controller = new AbortController();
    running.current = controller;
    setError(undefined);
    setProgress(undefined);
    try {
      const text = await file.text();
      for await (const update of processLargeFile({ data: { file: text } }, { signal: controller.signal })) {
        setProgress(update);
      }
    } catch (reason) {
      if (!controller.signal.aborted) setError(reason);
    }
  };

  return (
    <div>
      <input
        type="file"
        accept=".csv,text/csv"
        aria-label="CSV file"
        onChange={(event) => {
          const file = event.target.files?.[0];
          if (file !== undefined) void handleFile(file);
        }}
      />
      <button type="button" onClick={() => running.current?.abort()}>
        Cancel
      </button>
      <progress value={progress?.percent ?? 0} max={100} />
      <output data-testid="file-progress" data-complete={progress?.complete === true}>
        {progress === undefined ? "" : `${progress.processed} of ${progress.total} records`}
      </output>
      <ErrorMessage error={error} />
    </div>
  );
}
