// Bundles the page into dist/ (served by `grpc-serverfn serve ... --web-root examples/web/dist`).
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "dist");
await mkdir(outdir, { recursive: true });
await build({
  entryPoints: [join(here, "src", "main.tsx")],
  outfile: join(outdir, "app.js"),
  bundle: true,
  format: "esm",
  target: "es2022",
  jsx: "automatic",
  minify: true,
  sourcemap: true,
  define: { "process.env.NODE_ENV": '"production"' },
  logLevel: "warning",
});
await copyFile(join(here, "index.html"), join(outdir, "index.html"));
