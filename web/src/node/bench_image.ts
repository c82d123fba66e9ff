// `webkiln bench-image --node-dawn`: the same engine and the same .wasm as the browser, run in
// Node on Dawn (npm `webgpu`) instead of Chromium, so a machine with a GPU but no browser
// can time images.generate on real hardware. Reads a JSON request on stdin, prints progress
// on stderr and one JSON result on stdout:
//   in:  {baseUrl, model (a manifest URL), prompts, seeds, options (more images.generate fields),
//         adapters: [{dawn: ["backend=vulkan"], featureLevel: "core"}, ...] (the first that gives one),
//         backend (loadModel's; default "webgpu": Dawn is what this runner is for)}
//   out: {adapter, dawn, loaded, loadMillis, runs: [{wallMillis, extra, png}]}
import { create, globals } from "webgpu";
import { LocalEngine } from "../engine/local_engine";

interface AdapterChoice {
  /** Dawn toggles for create(), e.g. ["backend=vulkan"]. */
  dawn: string[];
  /** Dawn's OpenGL ES backend has only compatibility-mode adapters. */
  featureLevel: "core" | "compatibility";
}

interface Request {
  baseUrl: string;
  model: string;
  prompts: string[];
  seeds: number[];
  options?: Record<string, unknown>;
  adapters: AdapterChoice[];
  backend?: string;
}

async function firstAdapter(choices: AdapterChoice[]) {
  for (const choice of choices) {
    const dawn = create(choice.dawn);
    const requestAdapter = (options: GPURequestAdapterOptions = {}) =>
      dawn.requestAdapter({ ...options, featureLevel: choice.featureLevel } as GPURequestAdapterOptions);
    const adapter = await requestAdapter();
    if (adapter) return { choice, adapter, gpu: { requestAdapter, getPreferredCanvasFormat: () => "rgba8unorm" } };
    console.error(`[node-dawn] no adapter for ${JSON.stringify(choice)}`);
  }
  throw new Error(`Dawn gave no adapter for any of ${JSON.stringify(choices)}`);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

async function main(): Promise<void> {
  const request = JSON.parse(await readStdin()) as Request;
  Object.assign(globalThis, globals); // GPUBufferUsage, GPUMapMode, ... as a page has them
  // The engine asks navigator.gpu for its adapter, as in a page.
  const { choice, adapter, gpu } = await firstAdapter(request.adapters);
  Object.defineProperty(globalThis, "navigator", { value: { gpu }, configurable: true, writable: true });
  const info = adapter.info;
  const out: Record<string, unknown> = {
    dawn: choice,
    adapter: {
      vendor: info.vendor,
      architecture: info.architecture,
      device: info.device,
      description: info.description,
      features: [...adapter.features].sort(),
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    },
  };
  const engine = new LocalEngine(request.baseUrl);
  const t0 = performance.now();
  // WebGPU unless asked otherwise: "auto" would take the CPU library on a fallback adapter.
  const loaded = await engine.loadModel(request.model, { backend: request.backend ?? "webgpu" });
  out.loadMillis = performance.now() - t0;
  out.loaded = { id: loaded.id, backend: loaded.backend };
  console.error(`[node-dawn] loaded ${loaded.id} (${loaded.backend}) in ${((out.loadMillis as number) / 1000).toFixed(2)} s`);
  const runs = [];
  for (const [i, prompt] of request.prompts.entries()) {
    const started = performance.now();
    const r = await engine.images.generate({ ...request.options, prompt, seed: request.seeds[i] });
    const wallMillis = performance.now() - started;
    console.error(`[node-dawn] image ${i + 1}/${request.prompts.length}: ${(wallMillis / 1000).toFixed(2)} s`);
    runs.push({ wallMillis, extra: r.usage?.extra, png: r.data[0]?.b64_json });
  }
  out.runs = runs;
  await engine.unloadModel();
  process.stdout.write(JSON.stringify(out));
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`[node-dawn] error: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
    process.exit(1);
  },
);
