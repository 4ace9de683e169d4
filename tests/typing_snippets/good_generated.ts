// Correct calls through a module generated from tests/typed_app.py: tsc --strict finds no error.
import { createClient } from "@grpc-serverfn/client";

import {
  type Address,
  type AreasChunk,
  type Colour,
  type GreetChunk,
  type GreetInput,
  countdown,
  createServerFns,
  getOrder,
  greet,
  maybeTotal,
  progress,
  setClient,
} from "./serverfns.gen.js";

export async function calls(): Promise<void> {
  setClient(createClient({ baseUrl: "http://localhost:8080" }));
  // The document's loop, unchanged.
  let shown = 0;
  for await (const update of progress()) {
    shown = update.progress;
    if (update.done) break;
  }
  const home: Address = { street: "1 rue" }; // city and postCode have defaults
  const person: GreetInput = { name: "Ada", home, tags: ["!"], favourite: "red" };
  const stream = greet({ data: person }, { timeoutMs: 5000 });
  for await (const greeting of stream) {
    const text: string = greeting.text;
    const colour: Colour = greeting.colour;
    const city: string | undefined = greeting.home.city;
    console.log(text, colour, city, stream.streamId, stream.nextSeq, shown);
  }
  for await (const n of countdown({ data: 3 })) console.log(n.toFixed(0));
  const order = await getOrder({ data: "A1" });
  const sameOrder: typeof order = await getOrder("A1"); // the input itself, not { data }
  console.log(order.id, order.total.toFixed(2), order.lines.join());
  const total: number | null = await maybeTotal();
  console.log(total, await maybeTotal({ data: [1, 2] }), await maybeTotal({ data: null }));
  const fns = createServerFns(createClient({ baseUrl: "http://localhost:8081" }));
  for await (const area of fns.areas({ data: { shapes: [{ radius: 1 }, { kind: "square", side: 2 }] } })) {
    const chunk: AreasChunk = area;
    console.log(chunk.area, "radius" in chunk.shape ? chunk.shape.radius : chunk.shape.side);
  }
  const anything: unknown = await fns.anything({ data: { any: ["json"] } });
  console.log(anything);
  const greeting: GreetChunk | undefined = undefined;
  console.log(greeting);
}
