// Test-only bundle (tests/site/test-image-pipeline.html, tests/test_image_browser.py): loads the
// three compiled diffusion components and their raw parameters from a JSON index the test
// writes, on WebGPU or on the CPU (libraries compiled for webgpu or wasm-cpu), builds an
// ImagePipeline, and exposes its calls on `window.webkilnImagePipelineTest` with plain-array
// results for Playwright's page.evaluate.
//
// Index (index.json next to the files):
//   { constants: ImageModelConstants, scheduler: scheduler_config.json object,
//     components: { text_encoder: C, unet: C & { batch }, vae: C } }
//   C = { wasm: "text_encoder.wasm", bin: "text_encoder.bin",
//         params: [{ name, shape, dtype, offset, nbytes }, ...] }   (entry point order)

import { createWebGPUDevice, fetchBytes, loadModule, type Backend } from "../../web/src/base/tvm";
import {
  type GenerateOptions,
  type ImageComponent,
  type ImageModelConstants,
  ImagePipeline,
  type UNetComponent,
} from "../../web/src/image/pipeline";
import type { SchedulerName } from "../../web/src/base/manifest_types";
import type { SchedulerConfig } from "../../web/src/image/schedulers";
import { uploadWeights } from "../../web/src/compiled/weights";

interface ComponentIndex {
  wasm: string;
  bin: string;
  /** Packed parameters in the entry point's order; offset: bytes into the .bin. */
  params: Array<{ name: string; shape: number[]; dtype: string; offset: number; nbytes: number }>;
  batch?: number;
}

interface PipelineIndex {
  constants: ImageModelConstants;
  scheduler: SchedulerConfig;
  components: { text_encoder: ComponentIndex; unet: ComponentIndex | ComponentIndex[]; vae: ComponentIndex };
}

let pipeline: ImagePipeline | null = null;

function current(): ImagePipeline {
  if (!pipeline) throw new Error("call load() first");
  return pipeline;
}

/** `backend`: where the index's libraries run ("webgpu" or "wasm-cpu": what they were compiled for). */
async function load(indexUrl: string, backend: Backend = "webgpu"): Promise<{ loadMs: number; adapter: string }> {
  const t0 = performance.now();
  pipeline?.dispose();
  pipeline = null;
  const base = new URL(indexUrl, location.href);
  const index = (await (await fetch(base)).json()) as PipelineIndex;
  const gpu = backend === "webgpu" ? await createWebGPUDevice() : undefined;
  const component = async (c: ComponentIndex): Promise<ImageComponent> => {
    const [wasm, bin] = await Promise.all([
      fetchBytes(new URL(c.wasm, base).href),
      fetchBytes(new URL(c.bin, base).href),
    ]);
    const mod = await loadModule(wasm, backend, gpu);
    // Each parameter is one piece of the component's one .bin (the loader's record shape).
    const records = c.params.map((p) => ({ ...p, pieces: [{ shard: 0, offset: p.offset, nbytes: p.nbytes }] }));
    const params = uploadWeights(mod, records, [new Uint8Array(bin)]);
    await mod.device.sync();
    return { mod, params };
  };
  const unets = Array.isArray(index.components.unet) ? index.components.unet : [index.components.unet];
  pipeline = new ImagePipeline({
    textEncoder: await component(index.components.text_encoder),
    unet: await Promise.all(
      unets.map(async (u): Promise<UNetComponent> => ({ ...(await component(u)), batch: u.batch ?? 2 })),
    ),
    vae: await component(index.components.vae),
    constants: index.constants,
    schedulerConfig: index.scheduler,
  });
  const adapter = gpu ? `${gpu.adapterInfo.vendor} ${gpu.adapterInfo.architecture}` : "CPU (WebAssembly SIMD)";
  return { loadMs: performance.now() - t0, adapter };
}

async function timed<T>(run: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await run();
  return { ms: performance.now() - t0, value };
}

async function encodeText(ids: number[]) {
  const { ms, value } = await timed(() => current().encodeText(ids));
  return { ms, values: Array.from(value) };
}

async function predictNoise(latents: number[], t: number | number[], embeds: number[]) {
  const { ms, value } = await timed(() =>
    current().predictNoise(Float32Array.from(latents), t, Float32Array.from(embeds)),
  );
  return { ms, values: Array.from(value) };
}

async function decodeRaw(z: number[]) {
  const { ms, value } = await timed(() => current().decodeRaw(Float32Array.from(z)));
  return { ms, width: value.width, height: value.height, values: Array.from(value.chw) };
}

interface GenerateArgs {
  promptIds: number[];
  negativeIds?: number[];
  steps: number;
  guidanceScale: number;
  seed: string; // decimal (BigInt on this side)
  scheduler?: SchedulerName;
  abortAfterStep?: number; // abort from onStep after this (1-based) step
  previewDecode?: boolean; // decode the latents in onStep (a preview image)
}

async function generate(args: GenerateArgs) {
  const controller = new AbortController();
  const seen: { step: number; total: number; first: number; previewWidth?: number }[] = [];
  const options: GenerateOptions = {
    promptIds: args.promptIds,
    negativeIds: args.negativeIds,
    steps: args.steps,
    guidanceScale: args.guidanceScale,
    seed: BigInt(args.seed),
    scheduler: args.scheduler,
    signal: controller.signal,
    onStep: async (step, total, preview) => {
      const entry: (typeof seen)[number] = { step, total, first: preview[0] as number };
      seen.push(entry);
      if (args.previewDecode) entry.previewWidth = (await current().decode(preview)).width;
      if (args.abortAfterStep !== undefined && step >= args.abortAfterStep) controller.abort();
    },
  };
  try {
    const result = await current().generate(options);
    return {
      latents: Array.from(result.latents),
      image: result.imageFloat ? Array.from(result.imageFloat.rgb) : null,
      width: result.image?.width ?? 0,
      height: result.image?.height ?? 0,
      rgba: result.image ? Array.from(result.image.rgba) : null,
      timesteps: result.timesteps,
      timings: result.timings,
      seen,
      error: null,
    };
  } catch (e) {
    const err = e as Error;
    return { seen, error: { name: err.name, message: err.message } };
  }
}

const api = { load, encodeText, predictNoise, decodeRaw, generate };

declare global {
  interface Window {
    webkilnImagePipelineTest: typeof api;
  }
}

window.webkilnImagePipelineTest = api;
