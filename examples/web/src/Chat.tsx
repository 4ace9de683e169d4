import { useEffect, useRef, useState } from "react";

import { ErrorMessage } from "./ErrorMessage";
import { type Chunks, type ChatToken, resumeChat, streamChat } from "./serverfns";

// Where an unfinished reply is kept across a reload: its stream id, the number of the next
// chunk and the text so far. stream_chat is resumable, so the reply goes on from there.
const SAVED_REPLY = "serverfn-demo:chat-reply";

interface SavedReply {
  streamId: string;
  nextSeq: number;
  text: string;
}

// A page being left (reloaded, closed) aborts its calls; what is saved must outlive that.
let leavingPage = false;
window.addEventListener("pagehide", () => {
  leavingPage = true;
});

function savedReply(): SavedReply | undefined {
  const saved = sessionStorage.getItem(SAVED_REPLY);
  return saved === null ? undefined : (JSON.parse(saved) as SavedReply);
}

// The document's Chat: `setResponse((prev) => prev + chunk.text)` for each chunk.
export function Chat() {
  const [message, setMessage] = useState("");
  const [response, setResponse] = useState(() => savedReply()?.text ?? "");
  const [status, setStatus] = useState("idle");
  const [error, setError] = useState<unknown>(undefined);
  const resumed = useRef(false);

  const readReply = async (chunks: Chunks<ChatToken>, textSoFar: string) => {
    setStatus("streaming");
    setError(undefined);
    let text = textSoFar;
    try {
      for await (const chunk of chunks) {
        text += chunk.text;
        setResponse((prev) => prev + chunk.text);
        if (chunks.streamId !== undefined) {
          const saved: SavedReply = { streamId: chunks.streamId, nextSeq: chunks.nextSeq, text };
          sessionStorage.setItem(SAVED_REPLY, JSON.stringify(saved));
        }
      }
      setStatus("done");
    } catch (reason) {
      if (leavingPage) return;
      setError(reason);
      setStatus("failed");
    }
    sessionStorage.removeItem(SAVED_REPLY);
  };

  const handleSend = async (message: string) => {
    setResponse("");
    await readReply(streamChat({ data: { message } }), "");
  };

  // After a reload in the middle of a reply: pick it up where it was.
  useEffect(() => {
    const saved = savedReply();
    if (saved === undefined || resumed.current) return;
    resumed.current = true;
    void readReply(resumeChat(saved.streamId, saved.nextSeq), saved.text);
  }, []);

  return (
    <form
      onSubmit={(event) => {
        event.preventDefault();
        void handleSend(message);
      }}
    >
      <input
        aria-label="Message"
        value={message}
        onChange={(event) => setMessage(event.target.value)}
        placeholder="Say something"
      />
      <button type="submit">Send</button>
      <p className="reply" data-testid="reply" data-status={status}>
        {response}
      </p>
      <ErrorMessage error={error} />
    </form>
  );
}
