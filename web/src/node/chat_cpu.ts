// A chat model's wasm-cpu library run in Node (V8, the engine Chromium uses), without a
// browser: greedy tokens and prefill/decode timings for kernel tests and CPU benchmarks
// (scripts/bench_cpu.py bundles and runs it). Same tvmjs runtime, same weight upload and
// the same VM entry points as the browser engine (llm/chat_model.ts), so what it times is
// what a page runs on one thread.
//
// Reads one JSON request on stdin, prints progress on stderr and one JSON result on stdout:
//   in:  {model: folder holding manifest.json and the shards, wasm: the library (a path),
//         runs: [{prompt: token ids, decode: tokens to generate}], repeats?: 1,
//         profile?: false (time each function the VM calls, through its instrument hook)}
//   out: {loadMillis, runs: [{tokens, prefillMillis: [..per repeat], decodeMillis: [..]}],
//         profile?: {prefill|decode: {function name: [calls, milliseconds]}} (all repeats)}
// Decoding is greedy and never stops early, so every repeat generates `decode` tokens.
import fs from "node:fs";
import path from "node:path";
import type * as tvmjs from "@mlc-ai/web-runtime";
import type { ChatManifest } from "../base/manifest";
import { loadModule } from "../base/tvm";
import { uploadWeights } from "../compiled/weights";

interface Run {
  prompt: number[];
  decode: number;
}

interface Request {
  model: string;
  wasm: string;
  runs: Run[];
  repeats?: number;
  profile?: boolean;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}

async function main(): Promise<void> {
  const request = JSON.parse(await readStdin()) as Request;
  const manifest = JSON.parse(fs.readFileSync(path.join(request.model, "manifest.json"), "utf8")) as ChatManifest;
  const t0 = performance.now();
  const wasm = fs.readFileSync(request.wasm);
  const mod = await loadModule(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength), "wasm-cpu");
  const shards = manifest.tensors.shards.map((s) => new Uint8Array(fs.readFileSync(path.join(request.model, s))));
  const params = uploadWeights(mod, manifest.tensors.records, shards);
  const { tvm, vm, device } = mod;
  const keep = <T extends tvmjs.TVMObject | tvmjs.PackedFunc>(get: () => T): T =>
    tvm.withNewScope(() => tvm.detachFromCurrentScope(get()));
  const fEmbed = keep(() => vm.getFunction("embed"));
  const fPrefill = keep(() => vm.getFunction("prefill"));
  const fDecode = keep(() => vm.getFunction("decode"));
  const fBegin = keep(() => tvm.getGlobalFunc("vm.builtin.kv_state_begin_forward"));
  const fEnd = keep(() => tvm.getGlobalFunc("vm.builtin.kv_state_end_forward"));
  const fAdd = keep(() => tvm.getGlobalFunc("vm.builtin.kv_state_add_sequence"));
  const fRemove = keep(() => tvm.getGlobalFunc("vm.builtin.kv_state_remove_sequence"));
  const kv = keep(
    () =>
      vm.getFunction("create_paged_kv_cache")(
        tvm.makeShapeTuple([1]),
        tvm.makeShapeTuple([manifest.context_window]),
        tvm.makeShapeTuple([manifest.prefill_chunk_size]),
        tvm.makeShapeTuple([manifest.kv_cache.page_size]),
        tvm.makeShapeTuple([0]),
      ) as tvmjs.TVMObject,
  );
  const loadMillis = performance.now() - t0;

  // Per-function timings: the VM calls the instrument before and after each function it runs.
  const profile: Record<string, Record<string, [number, number]>> = { prefill: {}, decode: {} };
  let phase: Record<string, [number, number]> = profile.prefill!;
  if (request.profile) {
    const started = new Map<string, number>();
    const instrument = keep(() =>
      tvm.toPackedFunc((_func: unknown, name: string, beforeRun: boolean) => {
        if (beforeRun) {
          started.set(name, performance.now());
        } else {
          const entry = (phase[name] ??= [0, 0]);
          entry[0] += 1;
          entry[1] += performance.now() - started.get(name)!;
        }
        return tvm.scalar(0, "int32"); // 0: go on
      }),
    );
    tvm.withNewScope(() => vm.getInternalModule().getFunction("set_instrument")(instrument));
  }
  const hidden = manifest.config.hidden_size;

  // One step of the model over `ids` (a prefill chunk, or one token to decode); the logits.
  const forward = (ids: number[], decode: boolean): Float32Array => {
    tvm.beginScope();
    try {
      const input = tvm.empty([ids.length], "int32", device).copyFrom(Int32Array.from(ids));
      const embed = (fEmbed(input, params) as tvmjs.Tensor).view([1, ids.length, hidden]);
      fBegin(kv, tvm.makeShapeTuple([0]), tvm.makeShapeTuple([ids.length]));
      phase = decode ? profile.decode! : profile.prefill!;
      const out = (decode ? fDecode : fPrefill)(embed, kv, params) as tvmjs.TVMArray;
      fEnd(kv);
      return Float32Array.from((out.get(0) as tvmjs.Tensor).toArray() as Float32Array);
    } finally {
      tvm.endScope();
    }
  };

  const results = [];
  for (const run of request.runs) {
    const prefillMillis: number[] = [];
    const decodeMillis: number[] = [];
    let tokens: number[] = [];
    for (let r = 0; r < (request.repeats ?? 1); r++) {
      fAdd(kv, tvm.scalar(0, "int64"));
      let started = performance.now();
      let logits: Float32Array | undefined;
      for (let at = 0; at < run.prompt.length; at += manifest.prefill_chunk_size) {
        logits = forward(run.prompt.slice(at, at + manifest.prefill_chunk_size), false);
      }
      if (!logits) throw new RangeError("a run needs at least one prompt token");
      prefillMillis.push(performance.now() - started);
      started = performance.now();
      tokens = [];
      for (let i = 0; i < run.decode; i++) {
        tokens.push(argmax(logits));
        if (i + 1 < run.decode) logits = forward([tokens[i]!], true);
      }
      decodeMillis.push(performance.now() - started);
      fRemove(kv, tvm.scalar(0, "int64"));
      console.error(
        `[chat-cpu] prompt ${run.prompt.length}: prefill ${prefillMillis.at(-1)!.toFixed(0)} ms, ` +
          `${run.decode} tokens ${decodeMillis.at(-1)!.toFixed(0)} ms`,
      );
    }
    results.push({ tokens, prefillMillis, decodeMillis });
  }
  process.stdout.write(JSON.stringify({ loadMillis, runs: results, ...(request.profile ? { profile } : {}) }));
  mod.dispose();
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
