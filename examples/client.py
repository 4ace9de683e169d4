"""Call the demo app with the blocking Client: progress, a chat reply, a CSV job.

scripts/serve &                     # the demo on localhost:50051
.venv/bin/python examples/client.py [TARGET]
"""

from __future__ import annotations

import sys

from grpc_serverfn import Client, InvalidArgument


def main(target: str = "localhost:50051") -> None:
    with Client(target) as client:
        for update in client.invoke("stream_data"):
            print(update["progress"])
            if update.get("done"):
                break

        for chunk in client.invoke("stream_chat", {"message": "hi"}):
            print(chunk["text"], end="", flush=True)
        print()

        csv_text = "id,name\n" + "".join(f"{i},item-{i}\n" for i in range(250))
        for progress in client.invoke("process_large_file", {"file": csv_text}):
            print(f"{progress['processed']}/{progress['total']} ({progress['percent']}%)")

        try:
            list(client.invoke("stream_chat", {"message": ""}))
        except InvalidArgument as error:
            print("rejected:", error.message)
            for field, problem in error.field_violations:
                print(f"  {field}: {problem}")


if __name__ == "__main__":
    main(*sys.argv[1:])
