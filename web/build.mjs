// Bundles the browser entry points into site/assets/ (ES modules, one file each).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const release = process.argv.includes("--release");

await build({
  entryPoints: {
    "kernel-check": path.join(here, "src/kernel_check.ts"),
    chat: path.join(here, "src/chat_page.ts"),
    "test-entry": path.join(here, "src/test_entry.ts"), // test-only: site/test.html
  },
  outdir: path.join(here, "../site/assets"),
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  minify: release,
  // tvmjs has Node-only branches (fs, perf_hooks) that never run in a browser;
  // so does @mlc-ai/web-tokenizers' Emscripten loader (url, module).
  external: ["fs", "path", "perf_hooks", "ws", "url", "module"],
  logLevel: "info",
});
