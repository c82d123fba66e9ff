"""wasm-cpu chat speed side by side in one run: the default model compiled for WebAssembly SIMD
with TVM's default CPU pipeline (no kernels: the baseline) and with webkiln's hand-written
kernels (python/webkiln/compile/cpu_kernels/), both run in Node (V8) on one thread by
web/src/node/chat_cpu.ts, rounds alternating between the libraries so machine load hits
them alike. Both read the same weights; their greedy tokens must agree, and with --check
also transformers' (tests/reference_lm.py).

Prefill tok/s = prompt tokens / prefill time; decode tok/s = decode steps / their time (the
first generated token comes from the prefill's logits, so N tokens take N - 1 decode steps).
Each round is a fresh Node process that generates twice: "cold" is the first generation (V8
still compiling the hot functions with its optimizing tier), "warm" the second. Median of
--rounds. Hold the bench lock so nothing else measures at the same time:

    flock /tmp/webkiln-bench.lock .venv/bin/python scripts/bench_cpu.py --prompt-tokens 128 --decode 128
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

# tvmjs's and the tokenizer's Node branches use require() and __filename, which an ES module
# defines itself (as web/build.mjs does for the other Node bundle).
_NODE_BANNER = ('import { createRequire } from "node:module"; import { fileURLToPath as __toPath } from "node:url"; '
                "const require = createRequire(import.meta.url); const __filename = __toPath(import.meta.url); "
                'const __dirname = __filename.replace(/[\\/][^\\/]*$/, "");')


def bundle_runner(out: Path) -> Path:
    """web/src/node/chat_cpu.ts bundled for Node by esbuild (web/node_modules)."""
    bundle = out / "chat_cpu.mjs"
    subprocess.run([str(REPO / "web/node_modules/.bin/esbuild"), str(REPO / "web/src/node/chat_cpu.ts"), "--bundle",
                    "--platform=node", "--target=node20", "--format=esm", "--external:ws", f"--outfile={bundle}",
                    f"--banner:js={_NODE_BANNER}", "--log-level=warning"], check=True)
    return bundle


def write_model(folder: Path, source, plan, params, context: int, chunk: int) -> None:
    """The weights as chat_cpu.ts reads them (a manifest's config, KV cache and tensors)."""
    import numpy as np

    from webkiln.quant.convert import convert_params

    records, offset = [], 0
    with open(folder / "weights.bin", "wb") as f:
        for name, array in convert_params(source, plan, "float32", params):
            data = np.ascontiguousarray(array).tobytes()
            records.append({"name": name, "shape": list(array.shape), "dtype": str(array.dtype), "nbytes": len(data),
                            "pieces": [{"shard": 0, "offset": offset, "nbytes": len(data)}]})
            f.write(data)
            offset += len(data)
    manifest = {"config": {"hidden_size": source.config.hidden_size}, "context_window": context,
                "prefill_chunk_size": chunk, "kv_cache": {"page_size": 16},
                "tensors": {"shards": ["weights.bin"], "records": records}}
    (folder / "manifest.json").write_text(json.dumps(manifest))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="a chat model source, as build_web --model (default: default)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode", type=int, default=128, help="tokens to generate")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-decode", type=int, help="tokens the slow baseline generates (default --decode)")
    parser.add_argument("--no-baseline", action="store_true", help="time only the kernels")
    parser.add_argument("--profile", action="store_true", help="also print per-function times of the kernels' run")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from tokenizers import Tokenizer

    from webkiln.compile.build import build_module
    from webkiln.compile.targets import get_target
    from webkiln.models import llm
    from webkiln.quant.convert import plan_weights
    from webkiln.quant.schemes import get_scheme
    from webkiln.sources import load_source
    from webkiln.sources.default_model import resolve_alias

    source = load_source(resolve_alias(args.model))
    plan = plan_weights(source, get_scheme("q4f32"), notice=lambda _: None)
    chunk, context = 512, 2048
    text = (REPO / "README.md").read_text()
    ids = Tokenizer.from_str(source.tokenizer_json).encode(text).ids[: args.prompt_tokens]
    target = get_target("wasm-cpu")
    variants = {"kernels": True} if args.no_baseline else {"default-pipeline": False, "kernels": True}
    with tempfile.TemporaryDirectory(prefix="bench-cpu-") as tmp:
        tmp_path = Path(tmp)
        runner = bundle_runner(tmp_path)
        libs, params = {}, None
        for name, kernels in variants.items():
            print(f"[bench-cpu] compiling {name}", file=sys.stderr, flush=True)
            mod, params = llm.export(source.config, plan, "float32", target.tvm_target(), chunk, cpu_kernels=kernels)
            libs[name] = build_module(mod, target.name, tmp_path / f"{name}.wasm")
        write_model(tmp_path, source, plan, params, context, chunk)
        results: dict[str, dict] = {n: {f"{p}_{w}": [] for w in ("cold", "warm") for p in ("prefill", "decode")}
                                    for n in variants}
        tokens: dict[str, list[int]] = {}
        for round_ in range(args.rounds):
            for name in variants:
                decode = args.decode if name == "kernels" else (args.baseline_decode or args.decode)
                request = {"model": str(tmp_path), "wasm": str(libs[name]), "runs": [{"prompt": ids, "decode": decode}],
                           "repeats": 2, "profile": args.profile and name == "kernels" and round_ == 0}
                run = subprocess.run(["node", str(runner)], input=json.dumps(request), capture_output=True, text=True)
                if run.returncode != 0:
                    raise SystemExit(f"{name}: the Node runner failed:\n{run.stderr}")
                out = json.loads(run.stdout)
                r = out["runs"][0]
                if request["profile"]:
                    _print_profile(out["profile"])
                    continue  # the instrument slows every call: not a timing round
                for i, when in enumerate(("cold", "warm")):
                    results[name][f"prefill_{when}"].append(len(ids) / (r["prefillMillis"][i] / 1000))
                    results[name][f"decode_{when}"].append((decode - 1) / (r["decodeMillis"][i] / 1000))
                got = r["tokens"]
                common = min(len(got), *(len(t) for t in tokens.values())) if tokens else len(got)
                for other, theirs in tokens.items():
                    if got[:common] != theirs[:common]:
                        raise SystemExit(f"{name} generated other tokens than {other}: {got[:common]} vs {theirs[:common]}")
                tokens.setdefault(name, got)
                line = ", ".join(f"{k} {v[-1]:.1f}" for k, v in results[name].items())
                print(f"[bench-cpu] round {round_ + 1} {name} (tok/s): {line}", file=sys.stderr, flush=True)
    summary = {
        "conditions": {"model": args.model, "prompt_tokens": len(ids), "decode_tokens": args.decode,
                       "rounds": args.rounds, "threads": 1, "runtime": f"node {_node_version()}"},
        "results": {n: {k: statistics.median(v) for k, v in r.items() if v} for n, r in results.items()},
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 0


def _node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def _print_profile(profile: dict) -> None:
    for phase, table in profile.items():
        timed = {k: v for k, v in table.items() if v[1] is not None}
        total = sum(ms for _, ms in timed.values())
        print(f"[bench-cpu] profile {phase}: {total:.0f} ms in VM calls (instrumented)", file=sys.stderr)
        for name, (calls, ms) in sorted(timed.items(), key=lambda kv: -kv[1][1])[:15]:
            print(f"  {ms:9.1f} ms {100 * ms / total:5.1f}%  x{calls:<6d} {name}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
