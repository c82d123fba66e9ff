"""Prefill timing of built chat models side by side in one headless Chromium, rounds alternating
between the models (so machine load hits them alike): the timing loop behind BENCHMARKS.md's
prefill schedule comparison. Each round loads a model in a fresh page, warms it with a short
prompt, then prefills the same --tokens-token prompt and takes one greedy token; the models must
agree on that token.

    .venv/bin/python scripts/bench_prefill.py site/models/a site/models/b --tokens 64 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

from webkiln.bench_common import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, assemble_site, serve  # noqa: E402

_RUN_JS = """async ([manifest, warm, prompt]) => {
  const chat = window.webkilnChat;
  await chat.load(manifest);
  await chat.generate(warm, {maxTokens: 1, temperature: 0, stopTokenIds: []});
  chat.reset();
  const run = await chat.generate(prompt, {maxTokens: 1, temperature: 0, stopTokenIds: []});
  return {prefillMillis: run.prefillMillis, prefilledTokens: run.prefilledTokens, tokens: run.tokens};
}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path, help="built model folders (with manifest.json)")
    parser.add_argument("--tokens", type=int, default=64, help="prompt tokens to prefill (default 64)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--chromium", default=CHROMIUM)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright
    from tokenizers import Tokenizer

    text = (REPO / "README.md").read_text()
    tokenizer = Tokenizer.from_file(str(args.models[0] / "tokenizer.json"))
    ids = tokenizer.encode(text).ids[: args.tokens]
    warm = ids[:4]
    results: dict[str, list[float]] = {m.name: [] for m in args.models}
    tokens: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        site = assemble_site(Path(tmp) / "site")
        for model in args.models:
            shutil.copytree(model, site / "models" / model.name)
        with serve(site) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
            for round_ in range(args.rounds):
                for model in args.models:
                    page = browser.new_page()
                    page.set_default_timeout(TIMEOUT_MS)
                    page.goto(f"{url}/chat.html")
                    page.wait_for_function("window.webkilnChat !== undefined")
                    run = page.evaluate(_RUN_JS, [f"models/{model.name}/manifest.json", warm, ids])
                    page.close()
                    assert run["prefilledTokens"] == len(ids), run
                    results[model.name].append(run["prefillMillis"] / 1000)
                    tokens.setdefault(model.name, run["tokens"])
                    print(f"round {round_ + 1} {model.name}: {len(ids)} tokens in {run['prefillMillis'] / 1000:.1f} s "
                          f"({len(ids) / (run['prefillMillis'] / 1000):.2f} tok/s), next token {run['tokens']}",
                          flush=True)
            browser.close()
    if len({json.dumps(t) for t in tokens.values()}) != 1:
        print(f"error: the models disagree on the next token: {tokens}", file=sys.stderr)
        return 1
    base = statistics.median(results[args.models[0].name])
    for name, seconds in results.items():
        median = statistics.median(seconds)
        print(f"{name}: median {median:.1f} s, {len(ids) / median:.2f} tok/s, {base / median:.2f}x the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
