// Bundles the browser entry points into site/assets/ (ES modules, one file each).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const release = process.argv.includes("--release");

await build({
  entryPoints: { "kernel-check": path.join(here, "src/kernel_check.ts") },
  outdir: path.join(here, "../site/assets"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  minify: release,
  // tvmjs has Node-only branches (fs, perf_hooks) that never run in a browser.
  external: ["fs", "path", "perf_hooks", "ws"],
  logLevel: "info",
});
