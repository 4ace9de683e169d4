import { useState } from "react";

import { ErrorMessage } from "./ErrorMessage";
import { streamData } from "./serverfns";

// The document's ProgressComponent, as it writes it (plus an error line).
export function ProgressComponent() {
  const [progress, setProgress] = useState(0);
  const [error, setError] = useState<unknown>(undefined);

  const handleStart = async () => {
    setError(undefined);
    try {
      for await (const update of streamData()) {
        setProgress(update.progress);
        if (update.done) break;
      }
    } catch (reason) {
      setError(reason);
    }
  };

  return (
    <div>
      <progress value={progress} max={100} />
      <button onClick={handleStart}>Start</button>
      <output data-testid="progress">{progress}</output>
      <ErrorMessage error={error} />
    </div>
  );
}
