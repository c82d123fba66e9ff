"""`webkiln bench` works end to end, timing nothing against a threshold: a tiny run (8-token
prompt, 4 greedy tokens, one run, 1 and 2 threads) of webkiln wasm-cpu, wllama (the real npm
package, llama.cpp's wasm build) on the same GGUF in the same headless Chromium, and native TVM,
checked for the rows, the thread modes that really ran and the tokens each engine generated.
Also: wllama is a pinned dev dependency that no product code imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO
from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)

WLLAMA_VERSION = "3.8.1"  # the version the wllama numbers were measured with


def test_wllama_is_an_exactly_pinned_dev_dependency_only():
    package = json.loads((REPO / "web" / "package.json").read_text())
    assert package["devDependencies"]["@wllama/wllama"] == WLLAMA_VERSION
    assert "@wllama/wllama" not in package.get("dependencies", {})
    lock = json.loads((REPO / "web" / "package-lock.json").read_text())
    entry = lock["packages"]["node_modules/@wllama/wllama"]
    assert entry["version"] == WLLAMA_VERSION and entry["dev"] is True
    # The product (site/, the npm package's lib/) is bundled from web/src: none of it names wllama.
    naming = [p.relative_to(REPO).as_posix() for p in (REPO / "web" / "src").rglob("*.ts") if "wllama" in p.read_text()]
    assert naming == []


@pytest.mark.parametrize("args, message", [
    (["--threads", "1,x"], "--threads takes thread counts"),
    (["--threads", "1,1"], "--threads needs distinct counts"),
    (["--backends", "wasm-cpu,llama"], "--backends: unknown llama; choose from wasm-cpu, webgpu, wllama, native"),
    (["--decode-tokens", "1"], "--decode-tokens >= 2"),
    (["--runs", "0"], "--runs must be >= 1"),
])
def test_bad_options_are_one_error_line(args, message):
    run = subprocess.run([sys.executable, "-m", "webkiln", "bench", "--out", "/dev/null", *args],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert run.stderr.startswith("error: ") and message in run.stderr and "Traceback" not in run.stderr


def test_tiny_side_by_side_run(tmp_path, web_bundle, smollm2_gguf):  # noqa: F811
    # web_bundle: the benchmark's site starts from site/ as built.
    from webkiln.bench import BenchSettings, run_bench, table

    out = tmp_path / "bench.json"
    settings = BenchSettings(prompt_tokens=8, decode_tokens=4, ttft_tokens=4, runs=1, threads=(1, 2),
                             backends=("wasm-cpu", "wllama", "native"), build=False)
    results = run_bench(out, settings)
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))  # what was returned was written

    rows = {(r["backend"], r["threads_requested"]): r for r in results["rows"]}
    assert sorted(rows) == [("native", 1), ("native", 2), ("wasm-cpu", 1), ("wasm-cpu", 2), ("wllama", 1), ("wllama", 2)]
    for key, row in rows.items():
        [run] = row["runs"]
        assert run["decode_forwards"] == 3, key
        for field in ("prefill_seconds", "decode_seconds", "prefill_tok_s", "decode_tok_s"):
            assert run[field] > 0 and row["median"][field] == run[field], (key, field)
        if row["engine"] != "native":
            assert 0 < run["load_warm_seconds"] < run["first_token_warm_seconds"], key
            assert row["load_cold_seconds"] > 0, key
            # Two threads need a cross-origin isolated page; one thread runs on a plain one.
            assert run["cross_origin_isolated_page"] == (row["threads_requested"] == 2), key

    # The thread modes that really ran, not the ones asked for.
    assert [rows["wllama", t]["runs"][0]["multithread"] for t in (1, 2)] == [False, True]
    assert [rows["wllama", t]["threads"] for t in (1, 2)] == ["1", "2"]
    assert [rows["native", t]["threads"] for t in (1, 2)] == ["1", "2"]
    assert rows["wasm-cpu", 1]["threads"] == "1"
    assert rows["wasm-cpu", 2]["threads"] == "2"
    assert "1 thread, as asked" in rows["wasm-cpu", 1]["backend_reason"]
    assert "2 threads (cross-origin isolated)" in rows["wasm-cpu", 2]["backend_reason"]

    # Greedy tokens: webkiln's wasm library and TVM native are the same model compiled twice and
    # agree exactly; wllama (llama.cpp, its own kernels) continues the same prompt the same way
    # for these few tokens. Its text encodes back to the tokens webkiln generated.
    tokens = rows["wasm-cpu", 1]["tokens"]
    assert len(tokens) == 4
    assert all(rows[k]["tokens"] == tokens for k in rows if k[0] != "wllama")
    agreement = results["agreement"]
    assert agreement["reference"] == "wasm-cpu@1"
    assert agreement["all_same"], agreement
    assert agreement["rows"]["wllama@2"]["ids_from"] == "text re-encoded"
    assert rows["wllama", 1]["text"] == rows["wllama", 2]["text"] == rows["wasm-cpu", 1]["text"]

    assert [(q["threads"], q["decode"] > 0, q["prefill"] > 0) for q in results["ratios"]] == [(1, True, True),
                                                                                            (2, True, True)]
    assert results["wllama"]["package"] == f"@wllama/wllama@{WLLAMA_VERSION}"
    assert results["machine"]["chromium"].startswith("Chromium")
    assert "HeadlessChrome" in results["machine"]["browser"]["user_agent"]
    text = table(results)
    assert "| webkiln wasm-cpu / wllama |" in text and "| wllama 3.x (wasm) | 2 |" in text
