// Bundles the browser entry points into site/assets/ (ES modules, one file each), and
// the service worker into site/sw.js (a worker's scope is its own folder and below).
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const release = process.argv.includes("--release");

const common = {
  bundle: true,
  platform: "browser",
  target: "es2022",
  sourcemap: true,
  minify: release,
  // tvmjs has Node-only branches (fs, perf_hooks) that never run in a browser;
  // so does @mlc-ai/web-tokenizers' Emscripten loader (url, module).
  external: ["fs", "path", "perf_hooks", "ws", "url", "module"],
  logLevel: "info",
};

await build({
  ...common,
  entryPoints: {
    app: path.join(here, "src/app/main.ts"), // site/index.html: the chat app
    "engine-worker": path.join(here, "src/engine/worker_entry.ts"), // the engine in a Web Worker
    "kernel-check": path.join(here, "src/kernel_check.ts"),
    chat: path.join(here, "src/chat_page.ts"), // site/chat.html: direct model handle for tests
    "test-entry": path.join(here, "src/test_entry.ts"), // test-only: site/test.html
    "test-storage": path.join(here, "src/test_storage_entry.ts"), // test-only: site/test-storage.html
    "test-image": path.join(here, "src/test_image_entry.ts"), // test-only: site/test-image.html
    "test-image-pipeline": path.join(here, "src/test_image_pipeline_entry.ts"), // test-only: site/test-image-pipeline.html
  },
  outdir: path.join(here, "../site/assets"),
  format: "esm",
});

await build({
  ...common,
  entryPoints: [path.join(here, "src/sw.ts")],
  outfile: path.join(here, "../site/sw.js"),
  format: "iife",
});

// Node on Dawn (npm `webgpu`, a native addon kept external): the image benchmark's runner for
// machines with a GPU but no browser (webkiln bench-image --node-dawn). tvmjs's and the
// tokenizer's Node branches use require() and __filename, which an ES module defines itself.
await build({
  ...common,
  platform: "node",
  target: "node20",
  external: ["webgpu", "ws"], // ws: tvmjs RPC only
  entryPoints: { "bench-image-node": path.join(here, "src/node/bench_image.ts") },
  outdir: path.join(here, "dist"),
  outExtension: { ".js": ".mjs" },
  format: "esm",
  banner: {
    js:
      'import { createRequire } from "node:module"; import { fileURLToPath as __toPath } from "node:url"; ' +
      "const require = createRequire(import.meta.url); const __filename = __toPath(import.meta.url); " +
      'const __dirname = __filename.replace(/[\\/][^\\/]*$/, "");',
  },
});
