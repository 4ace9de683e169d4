import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";

import { Chat } from "./Chat";
import { FileUpload } from "./FileUpload";
import { ProgressComponent } from "./ProgressComponent";
import { protocol } from "./serverfns";

function App() {
  const [showUpload, setShowUpload] = useState(true);
  return (
    <main>
      <h1>Streaming server functions</h1>
      <p>
        Over <code data-testid="protocol">{protocol}</code> (try <a href="?protocol=connect">Connect JSON</a>,{" "}
        <a href="?protocol=connect-binary">Connect binary</a>, <a href="?protocol=grpc-web">gRPC-Web</a>).
      </p>
      <section aria-label="Progress">
        <h2>Progress: stream_data</h2>
        <ProgressComponent />
      </section>
      <section aria-label="Chat">
        <h2>Chat: stream_chat</h2>
        <Chat />
      </section>
      <section aria-label="CSV">
        <h2>
          CSV job: process_large_file{" "}
          <button type="button" onClick={() => setShowUpload((shown) => !shown)}>
            {showUpload ? "Close" : "Open"}
          </button>
        </h2>
        {showUpload && <FileUpload />}
      </section>
    </main>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
