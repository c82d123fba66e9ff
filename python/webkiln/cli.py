"""Command-line entry points: `webkiln` (serve, toolchain, kernel-check) and `build_web`."""

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

    args = parser.parse_args(argv)
    from .toolchain.errors import ToolchainError

    try:
        return args.func(args)
    except ToolchainError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def build_web_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_web", description="package a model for the browser")
    parser.add_argument("--model", required=True, help="GGUF file, Hugging Face folder or hub id")
    args = parser.parse_args(argv)
    print(
        f"error: packaging models (--model {args.model}) is not available in this version of "
        "webkiln yet; `webkiln kernel-check` builds the operator check module.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
