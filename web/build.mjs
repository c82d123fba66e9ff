// Bundles the browser entry points into site/assets/ (ES modules, one file each), the
// embeddable widget into site/widget.js, and the service worker into site/sw.js (a
// worker's scope is its own folder and below).
//
// Test code never goes into site/ (it is what a user deploys). Two options build it elsewhere:
//   node build.mjs --test-site <dir>   a test site root at <dir>: a copy of the built site/
//                                      (without models/ and kernel-check/), the test pages of
//                                      tests/site/ and the test bundles of tests/web/ in assets/
//   node build.mjs --unit-tests        the TypeScript unit tests (tests/web/unit/*.test.ts),
//                                      bundled for Node into dist/unit-tests/, then run with
//                                      Node's test runner (`npm test`)
// Both skip the product build: they use site/ as the last `node build.mjs` left it.
//   node build.mjs --lib               the npm package's bundles, into lib/ (see buildLibrary)
import { build } from "esbuild";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..");
const release = process.argv.includes("--release");
const testSiteAt = process.argv.indexOf("--test-site");
const unitTests = process.argv.includes("--unit-tests");
const library = process.argv.includes("--lib");

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

async function buildProduct() {
  const assets = path.join(here, "../site/assets");
  const { metafile } = await build({
    ...common,
    metafile: true,
    entryPoints: {
      app: path.join(here, "src/app/main.ts"), // site/index.html: the chat app
      "engine-worker": path.join(here, "src/engine/worker_entry.ts"), // the engine in a Web Worker
      "kernel-check": path.join(here, "src/kernel_check.ts"), // site/kernel-check.html: a user-facing diagnostic
    },
    outdir: assets,
    format: "esm",
  });
  // site/assets/ holds exactly this build's bundles: a file an older build left there (say a
  // test bundle from before test code moved to tests/web/) would otherwise be deployed.
  const built = new Set(Object.keys(metafile.outputs).map((output) => path.resolve(output)));
  for (const name of fs.readdirSync(assets)) {
    if (!built.has(path.join(assets, name))) {
      fs.rmSync(path.join(assets, name), { recursive: true, force: true });
    }
  }

  // The embeddable widget (site/widget.js): one ES module at the site's top level, so
  // <script type="module" src="https://cdn.example/webkiln/widget.js"> works; it finds the
  // engine's Worker (assets/engine-worker.js) and models/ relative to its own URL.
  await build({
    ...common,
    entryPoints: { widget: path.join(here, "src/widget/entry.ts") },
    outdir: path.join(here, "../site"),
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
}

/** The test bundles (tests/web/), one per test page of tests/site/, into `outdir`. */
async function buildTestBundles(outdir) {
  const tests = path.join(repo, "tests/web");
  await build({
    ...common,
    entryPoints: {
      chat: path.join(tests, "chat_page.ts"), // chat.html: direct model handle for tests and benchmarks
      "test-entry": path.join(tests, "test_entry.ts"), // test.html
      "test-storage": path.join(tests, "test_storage_entry.ts"), // test-storage.html
      "test-image": path.join(tests, "test_image_entry.ts"), // test-image.html
      "test-image-pipeline": path.join(tests, "test_image_pipeline_entry.ts"), // test-image-pipeline.html
      // `webkiln bench`: wllama beside webkiln on chat.html (added there by the benchmark)
      "bench-wllama": path.join(tests, "bench_wllama_page.ts"),
    },
    // tests/ has no node_modules of its own: packages resolve from web/'s.
    nodePaths: [path.join(here, "node_modules")],
    outdir,
    format: "esm",
  });
}

/** site/ as built, plus the test pages and bundles, at `root` (replaced if it exists). */
async function assembleTestSite(root) {
  const site = path.join(repo, "site");
  if (!fs.existsSync(path.join(site, "assets", "app.js"))) {
    throw new Error(`${site}/assets/app.js is missing: run \`node build.mjs\` first`);
  }
  fs.rmSync(root, { recursive: true, force: true });
  // Built models and kernel-check modules are large and per test: each test adds its own.
  const skipped = new Set(["models", "kernel-check"].map((name) => path.join(site, name)));
  fs.cpSync(site, root, { recursive: true, filter: (source) => !skipped.has(source) });
  const pages = path.join(repo, "tests/site");
  for (const page of fs.readdirSync(pages)) {
    fs.copyFileSync(path.join(pages, page), path.join(root, page));
  }
  await buildTestBundles(path.join(root, "assets"));
}

/** Bundles each tests/web/unit/*.test.ts for Node and runs them all with `node --test`. */
async function runUnitTests() {
  const unit = path.join(repo, "tests/web/unit");
  const outdir = path.join(here, "dist/unit-tests");
  fs.rmSync(outdir, { recursive: true, force: true });
  const entryPoints = fs
    .readdirSync(unit)
    .filter((name) => name.endsWith(".test.ts"))
    .map((name) => path.join(unit, name));
  if (entryPoints.length === 0) {
    throw new Error(`no unit tests (*.test.ts) in ${unit}`);
  }
  await build({
    ...common,
    logLevel: "warning",
    platform: "node",
    target: "node20",
    entryPoints,
    nodePaths: [path.join(here, "node_modules")],
    outdir,
    outExtension: { ".js": ".mjs" },
    format: "esm",
  });
  // Explicit files: Node 20 reads a directory argument, later versions read globs instead.
  const files = entryPoints.map((entry) => path.join(outdir, path.basename(entry, ".ts") + ".mjs"));
  const run = spawnSync(process.execPath, ["--enable-source-maps", "--test", "--test-reporter=spec", ...files], {
    stdio: "inherit",
  });
  process.exitCode = run.status ?? 1;
}

/**
 * The npm package (`npm pack` runs this first, as `prepack`): ES modules in lib/, laid out
 * like site/ so the defaults that find the Worker relative to a bundle hold in both:
 *   lib/widget.js                 `@webkiln/web/widget`: define() and the element classes
 *   lib/assets/engine.js          `@webkiln/web`: createEngine() and the engine's types/errors
 *   lib/assets/engine-worker.js   the engine's Worker, self-contained (one file to copy)
 *   lib/assets/chunk-*.js         code the two entries share (one copy of each module: one
 *                                 set of error classes, one registry of shared engines)
 *   lib/types/                    the declarations of both entries (tsc, tsconfig.lib.json)
 * Every dependency is bundled in, so the package has none and installs without a registry.
 * A consumer that re-bundles the entries must still ship engine-worker.js itself (esbuild
 * does not follow `new URL("./x.js", import.meta.url)`): docs/WIDGET.md, "Hosting".
 */
async function buildLibrary() {
  const lib = path.join(here, "lib");
  fs.rmSync(lib, { recursive: true, force: true });
  const libCommon = { ...common, sourcemap: false, format: "esm", outdir: lib, logLevel: "warning" };
  await build({
    ...libCommon,
    entryPoints: {
      widget: path.join(here, "src/widget/index.ts"),
      "assets/engine": path.join(here, "src/engine/index.ts"),
    },
    splitting: true,
    // Chunks sit next to engine-worker.js: code that finds the Worker from its own module's
    // URL (createEngine's default) finds it wherever esbuild put that code.
    chunkNames: "assets/chunk-[hash]",
  });
  await build({
    ...libCommon,
    minify: true, // used as shipped: a consumer's bundler never sees it
    entryPoints: { "assets/engine-worker": path.join(here, "src/engine/worker_entry.ts") },
  });
  const tsc = spawnSync(process.execPath, [path.join(here, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.lib.json"], {
    cwd: here,
    stdio: "inherit",
  });
  if (tsc.status !== 0) {
    throw new Error("tsc -p tsconfig.lib.json failed: the package's declarations were not written");
  }
}

if (library) {
  await buildLibrary();
} else if (testSiteAt >= 0) {
  const root = process.argv[testSiteAt + 1];
  if (!root) {
    throw new Error("--test-site needs a folder: node build.mjs --test-site <dir>");
  }
  await assembleTestSite(path.resolve(root));
} else if (unitTests) {
  await runUnitTests();
} else {
  await buildProduct();
}
