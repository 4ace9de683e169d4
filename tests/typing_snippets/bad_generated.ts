// Each mistake marked "// error" must be a tsc --strict error, and no other line may be one.
import { countdown, createServerFns, getOrder, greet, progress } from "./serverfns.gen.js";
import { gret } from "./serverfns.gen.js"; // error: no such function

export async function mistakes(): Promise<void> {
  const fns = createServerFns(() => {
    throw new Error("never called");
  });
  fns.gret({ data: { name: "Ada", home: { street: "1 rue" } } }); // error: no such function
  greet({ data: { home: { street: "1 rue" } } }); // error: no name
  greet({ data: { name: 42, home: { street: "1 rue" } } }); // error: name is a string
  greet({ data: { name: "Ada", home: { street: "1 rue" }, favourite: "blue" } }); // error: enum
  greet({ data: { name: "Ada", home: { street: "1 rue" }, nickname: "A" } }); // error: no such field
  greet(); // error: no input
  countdown({ data: "3" }); // error: a number
  countdown("3"); // error: a number, given as itself
  progress({ data: 1 }); // error: it takes none
  for await (const greeting of greet({ data: { name: "Ada", home: { street: "1 rue" } } })) {
    console.log(greeting.txt); // error: no such chunk field
    console.log(greeting.home.town); // error: nor in a nested model
  }
  for await (const area of fns.areas({ data: { shapes: [] } })) {
    console.log(area.size); // error
  }
  console.log((await getOrder({ data: "A1" })).price); // error
  console.log(gret);
}
