"""`build_web --model`: tiny Llama/Qwen2 models compiled natively against transformers,
the default model (SmolLM2) through its GGUF and through a Hugging Face folder, the
site/models/<id>/ output format, the compile cache, and failures that must leave
nothing behind.

Numerics run the compiled module natively (`native-cpu`, NativeLM: the same entry
points as the browser); the browser side is tested in test_chat_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import (  # noqa: F401  (tiny_llama, tiny_qwen2: session fixtures)
    CHAT_TEMPLATE,
    GREEDY_TOKENS,
    MIN_TOP2_GAP,
    PROMPT,
    compile_native,
    dequantized_state,
    hf_greedy,
    hf_logits,
    random_model,
    tiny_llama,
    tiny_qwen2,
    with_weights,
    write_tokenizer,
)
from test_sources import (  # noqa: F401  (session fixtures)
    gguf_source,
    reference_reader,
    transformers_reference,
    transformers_tokenizer,
)
from webkiln.cli import build_web_main
from webkiln.package.chat_build import CPU_HEAP_OVERHEAD
from webkiln.package.shards import MAX_SHARD_BYTES, write_shards
from webkiln.quant.convert import convert_params, plan_weights
from webkiln.quant.formats import FORMATS
from webkiln.quant.schemes import get_scheme
from webkiln.sources import load_source
from webkiln.toolchain.link import LinkMode

# Native f32 against transformers' f32 on the same weights: only summation order
# differs (observed ~2e-6 on logits of magnitude ~2).
LOGITS_TOLERANCE = 1e-4
REUSED = "reused from the compile cache"


# --- tiny models natively against transformers --------------------------------------


@pytest.mark.parametrize("arch,scheme_name", [("llama", "q0f32"), ("llama", "q4f32"), ("qwen2", "q0f32"),
                                              ("llama", "q0f16")])
def test_tiny_model_matches_transformers(request, tmp_path, arch, scheme_name):
    """Prefill logits (the prompt spans two prefill chunks) and 16 greedy tokens equal
    transformers' on the same weights: the source's for q0f32, the dequantized 4-bit or
    f16-rounded weights (loaded back into the torch model) for q4f32 and q0f16 (whose
    f32 library decodes its packed halves to f32)."""
    import tvm

    tiny = request.getfixturevalue(f"tiny_{arch}")
    source = load_source(tiny.folder)
    config = source.config
    assert config.architecture == arch and not config.tie_word_embeddings
    assert config.attention_bias == (arch == "qwen2")
    assert config.rope_theta == (1e6 if arch == "qwen2" else 1e4)
    scheme = get_scheme(scheme_name)
    plan = plan_weights(source, scheme)
    assert {fmt for _, fmt in plan.formats} == {scheme.weight_format}
    native = compile_native(source, plan, tmp_path / f"{arch}-{scheme_name}.so")

    if scheme_name == "q0f32":
        reference, expected_greedy = tiny.model, tiny.greedy
    else:
        reference = with_weights(tiny.model, dequantized_state(source, plan, native.params))
        expected_greedy, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
        assert gap > MIN_TOP2_GAP  # no near-tie an allowed logits difference could flip
        # The stored weights really are different from the float ones.
        changed = np.abs(hf_logits(reference, PROMPT) - hf_logits(tiny.model, PROMPT)).max()
        assert changed > (100 * LOGITS_TOLERANCE if FORMATS[scheme.weight_format].quantized else 0)

    # The embedding lookup returns the (dequantized) matrix rows exactly.
    lm = native.lm
    fmt = plan.format_of("model.embed_tokens")
    table = dequantized_state(source, plan, native.params)["model.embed_tokens.weight"]
    rows = lm.vm["embed"](tvm.runtime.tensor(np.array(PROMPT, dtype=np.int32), lm.dev), lm.params).numpy()
    assert fmt.name == scheme.weight_format and np.array_equal(rows, table[PROMPT])

    logits = lm.prefill(PROMPT)
    np.testing.assert_allclose(logits, hf_logits(reference, PROMPT), rtol=0, atol=LOGITS_TOLERANCE)
    assert native.lm.greedy(PROMPT, GREEDY_TOKENS) == expected_greedy


# --- the default model: GGUF and Hugging Face folder --------------------------------


@pytest.fixture(scope="module")
def smollm2_f32_folder(tmp_path_factory, transformers_reference, transformers_tokenizer):
    """The SmolLM2 GGUF as transformers loads it, saved by save_pretrained in float32.
    (test_sources' `hf_folder` saves bfloat16, which cannot hold the Q4_1 values exactly.)"""
    import torch

    model, _ = transformers_reference
    assert next(model.parameters()).dtype == torch.float32
    folder = tmp_path_factory.mktemp("smollm2-hf-f32")
    # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer; the
    # weights are already dequantized, so forget it (as test_sources' hf_folder does).
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.save_pretrained(folder)
    transformers_tokenizer.save_pretrained(folder)
    return folder


def _chat_prompt(source, transformers_tokenizer) -> list[int]:
    """The source's own chat template and tokenizer, checked against transformers'."""
    import jinja2
    from tokenizers import Tokenizer

    # A short prompt (21 tokens; NativeLM is slow on the 30-layer model) whose answer,
    # "The capital of France is Paris.<|im_end|>", ends with the stop token at token 8.
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
    text = jinja2.Environment().from_string(source.chat_template).render(messages=messages,
                                                                          add_generation_prompt=True)
    assert text == transformers_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = Tokenizer.from_str(source.tokenizer_json).encode(text, add_special_tokens=False).ids
    assert ids == transformers_tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids


def test_default_model_hf_folder_equals_gguf(tmp_path, gguf_source, smollm2_f32_folder, transformers_tokenizer,
                                             transformers_reference):
    """SmolLM2 through transformers' save_pretrained folder and straight from the GGUF,
    both q0f32: the same config, every converted parameter equal, and the same greedy
    answer from one native compile, equal to transformers' own."""
    import tvm

    folder_source = load_source(smollm2_f32_folder)
    assert folder_source.kind == "hf-folder" and folder_source.config == gguf_source.config
    scheme = get_scheme("q0f32")
    plan = plan_weights(gguf_source, scheme, notice=lambda _: None)
    assert plan_weights(folder_source, scheme) == plan

    native = compile_native(gguf_source, plan, tmp_path / "smollm2.so", prefill_chunk=64, context=256)
    spec = [(name, array.shape, str(array.dtype)) for name, array in native.params.items()]
    folder_params = dict(convert_params(folder_source, plan, "float32", spec))
    assert list(folder_params) == list(native.params)
    for name, array in native.params.items():
        assert array.dtype == np.float32 and np.array_equal(folder_params[name], array), name

    stops = gguf_source.eos_token_ids
    assert folder_source.eos_token_ids[0] == stops[0]
    prompt = _chat_prompt(gguf_source, transformers_tokenizer)
    assert _chat_prompt(folder_source, transformers_tokenizer) == prompt
    from_gguf = native.lm.greedy(prompt, 8, stop=stops)
    native.lm.params = [tvm.runtime.tensor(a, native.lm.dev) for a in folder_params.values()]
    from_folder = native.lm.greedy(prompt, 8, stop=folder_source.eos_token_ids)
    assert from_folder == from_gguf
    # ... and both are transformers' greedy answer on the GGUF's weights.
    model, _ = transformers_reference
    expected, gap = hf_greedy(model, prompt, 8, stop=stops)
    assert gap > MIN_TOP2_GAP and from_gguf == expected


# --- build_chat_model output ---------------------------------------------------------


@pytest.fixture(scope="module")
def private_cache(tmp_path_factory):
    """WEBKILN_CACHE_DIR in a temporary folder, holding a copy of this machine's built
    web runtime (so the ~80 s runtime build is not repeated) and no compiled libraries."""
    from webkiln.toolchain import runtime

    real = runtime.ensure_runtime()
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WEBKILN_CACHE_DIR", str(cache))
        entry = runtime.runtime_dir()
        entry.parent.mkdir(parents=True)
        shutil.copytree(real.directory, entry)
        assert runtime.ensure_runtime(log=lambda _: None).built is False
        yield cache


class Build:
    def __init__(self, out_root: Path, path: Path, log: list[str]) -> None:
        self.out_root, self.path, self.log = out_root, path, log
        self.manifest = json.loads((path / "manifest.json").read_text())


def _build(source, out_root: Path, quantization: str, **kwargs) -> Build:
    from webkiln.package.chat_build import build_chat_model

    log: list[str] = []
    path = build_chat_model(source, out_root, quantization, link_mode=LinkMode.FAST, log=log.append, **kwargs)
    return Build(out_root, path, log)


def _stage_lines(log: list[str]) -> list[str]:
    """The 'done' line of each library's compile stage, in build order (webgpu-f32, webgpu-f16, wasm-cpu)."""
    return [log[i + 1] for i, line in enumerate(log) if "compiling " in line and line.rstrip().endswith(" library")]


@pytest.fixture(scope="module")
def q4f32_build(private_cache, tmp_path_factory, tiny_llama) -> Build:
    return _build(load_source(tiny_llama.folder), tmp_path_factory.mktemp("site") / "models", "q4f32")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def _check_files_and_shards(build: Build) -> None:
    m, path = build.manifest, build.path
    on_disk = sorted(p.name for p in path.iterdir())
    assert sorted([f["path"] for f in m["files"]] + ["manifest.json"]) == on_disk
    for entry in m["files"]:
        file = path / entry["path"]
        assert file.stat().st_size == entry["size"] and _sha256(file) == entry["sha256"], entry["path"]
    shards = m["tensors"]["shards"]
    sizes = {f["path"]: f["size"] for f in m["files"]}
    assert shards and set(shards) <= set(sizes)
    for shard in shards:
        assert shard == f"{_sha256(path / shard)}.bin" and sizes[shard] <= MAX_SHARD_BYTES
    assert m["memory"]["weights_bytes"] == sum(sizes[s] for s in shards)


def _reassemble(build: Build) -> dict[str, np.ndarray]:
    """Every tensor read back from its pieces; the pieces must tile the shards exactly."""
    m, path = build.manifest, build.path
    shards = [(path / s).read_bytes() for s in m["tensors"]["shards"]]
    covered = [0] * len(shards)
    tensors = {}
    for record in m["tensors"]["records"]:
        data = b""
        for piece in record["pieces"]:
            shard = shards[piece["shard"]]
            assert piece["offset"] == covered[piece["shard"]]  # consecutive, no gaps or overlaps
            assert piece["offset"] + piece["nbytes"] <= len(shard)
            data += shard[piece["offset"]: piece["offset"] + piece["nbytes"]]
            covered[piece["shard"]] += piece["nbytes"]
        assert len(data) == record["nbytes"] == np.dtype(record["dtype"]).itemsize * int(np.prod(record["shape"]))
        tensors[record["name"]] = np.frombuffer(data, dtype=record["dtype"]).reshape(record["shape"])
    assert covered == [len(s) for s in shards]
    return tensors


def test_manifest_and_files(q4f32_build, tiny_llama):
    build, m = q4f32_build, q4f32_build.manifest
    source = load_source(tiny_llama.folder)
    cfg = source.config
    assert build.path == build.out_root / "tiny-llama-q4f32"
    assert (m["format"], m["id"], m["task"], m["architecture"], m["quantization"]) == (
        2, "tiny-llama-q4f32", "chat", "llama", "q4f32")
    assert m["activation_dtype"] == "float32" and m["config"]["hidden_size"] == 64
    assert m["context_window"] == 512  # the default 2048, capped at the model's trained length
    assert m["chat_template"] == CHAT_TEMPLATE and m["bos_token_id"] == 1
    # tokenizer_config's <|im_end|> (templates' eos_token) first, then config.json's </s>
    assert m["stop_token_ids"] == [4, 2]
    assert {"temperature", "top_p", "max_tokens"} <= set(m["generation"])

    # WebGPU (f32 WGSL) and the CPU (WebAssembly SIMD), both reading the same shards.
    assert set(m["backends"]) == {"webgpu-f32", "wasm-cpu"}
    backend = m["backends"]["webgpu-f32"]
    assert backend["wasm"] == "webgpu-f32.wasm" and backend["device"] == "webgpu" and backend["required_features"] == []
    cpu = m["backends"]["wasm-cpu"]
    assert (cpu["wasm"], cpu["device"], cpu["required_features"], cpu["required_limits"]) == ("wasm-cpu.wasm", "cpu", [], {})
    assert (build.path / "wasm-cpu.wasm").read_bytes()[:4] == b"\0asm"
    assert (build.path / "webgpu-f32.wasm").read_bytes()[:4] == b"\0asm"
    records = m["tensors"]["records"]
    largest = max(r["nbytes"] for r in records)
    kv_layer = 2 * cfg.num_key_value_heads * cfg.head_dim * m["context_window"] * 4
    assert backend["required_limits"]["maxStorageBufferBindingSize"] >= max(largest, kv_layer)
    assert backend["required_limits"]["maxBufferSize"] >= largest

    memory = m["memory"]
    assert memory["kv_cache_bytes"] == cfg.num_hidden_layers * kv_layer
    assert memory["activations_bytes"] > 0
    assert memory["total_bytes"] == memory["weights_bytes"] + memory["kv_cache_bytes"] + memory["activations_bytes"]
    # Each backend's own need: the f32 GPU library's is the estimate above; the CPU's adds the
    # library and the runtime's allowance, all inside one wasm32 memory.
    assert backend["memory_bytes"] == memory["total_bytes"]
    assert cpu["memory_bytes"] == memory["total_bytes"] + (build.path / "wasm-cpu.wasm").stat().st_size + CPU_HEAP_OVERHEAD

    _check_files_and_shards(build)
    assert (build.path / "tokenizer.json").read_text() == (tiny_llama.folder / "tokenizer.json").read_text()
    # The records are the model's parameters, in order, with the converted values.
    plan = plan_weights(source, get_scheme("q4f32"))
    spec = [(r["name"], tuple(r["shape"]), r["dtype"]) for r in records]
    expected = dict(convert_params(source, plan, "float32", spec))
    stored = _reassemble(build)
    assert list(stored) == list(expected) and "lm_head.qweight" in stored
    for name, array in expected.items():
        assert np.array_equal(stored[name], array), name

    index = json.loads((build.out_root / "index.json").read_text())
    (entry,) = [e for e in index["models"] if e["id"] == "tiny-llama-q4f32"]
    assert entry["manifest"] == "tiny-llama-q4f32/manifest.json" and entry["task"] == "chat"
    assert entry["download_bytes"] == sum(f["size"] for f in m["files"])
    assert entry["memory_bytes"] == memory["total_bytes"]
    assert entry["backends"] == {"webgpu-f32": {"device": "webgpu", "required_features": []},
                                 "wasm-cpu": {"device": "cpu", "required_features": []}}
    assert not [p for p in build.out_root.iterdir() if p.name.startswith(".")]  # no temporary folders
    assert any("cached as" in line for line in _stage_lines(build.log))
    assert not any(REUSED in line for line in build.log)


def test_q4f16_build_has_both_backends(q4f32_build, tiny_llama):
    build = _build(load_source(tiny_llama.folder), q4f32_build.out_root, "q4f16")
    m = build.manifest
    assert m["id"] == "tiny-llama-q4f16" and m["activation_dtype"] == "float16"
    assert m["kv_cache"]["dtype"] == "float16"
    assert {k: (v["device"], v["required_features"]) for k, v in m["backends"].items()} == {
        "webgpu-f32": ("webgpu", []), "webgpu-f16": ("webgpu", ["shader-f16"]), "wasm-cpu": ("cpu", [])}
    largest = max(r["nbytes"] for r in m["tensors"]["records"])
    for name in ("webgpu-f32", "webgpu-f16"):
        assert m["backends"][name]["required_limits"]["maxStorageBufferBindingSize"] >= largest
    f16, f32 = (build.path / "webgpu-f16.wasm").read_bytes(), (build.path / "webgpu-f32.wasm").read_bytes()
    assert f16 != f32
    # The f32 libraries (WebGPU and CPU: WebAssembly SIMD has no f16 arithmetic) are the q4f32
    # build's (same config and weight formats): reused.
    assert f32 == (q4f32_build.path / "webgpu-f32.wasm").read_bytes()
    assert (build.path / "wasm-cpu.wasm").read_bytes() == (q4f32_build.path / "wasm-cpu.wasm").read_bytes()
    done = _stage_lines(build.log)
    assert len(done) == 3 and REUSED in done[0] and REUSED not in done[1] and REUSED in done[2]
    cfg = load_source(tiny_llama.folder).config
    assert m["memory"]["kv_cache_bytes"] == 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * 512 * 2
    # Weights are stored the same way whatever the activation dtype: the same shard files.
    assert m["tensors"]["shards"] == q4f32_build.manifest["tensors"]["shards"]
    _check_files_and_shards(build)
    index = json.loads((build.out_root / "index.json").read_text())
    assert {"tiny-llama-q4f32", "tiny-llama-q4f16"} <= {e["id"] for e in index["models"]}


def test_rebuild_and_fine_tune_reuse_the_compiled_library(q4f32_build, tiny_llama, tmp_path, monkeypatch):
    import webkiln.models.llm

    def no_export(*_args, **_kwargs):
        raise AssertionError("a compile cache hit must not export the model again")

    # The parameter list comes from the cache entry (exporting SmolLM2 takes ~6 s).
    monkeypatch.setattr(webkiln.models.llm, "export", no_export)
    before = _tree(q4f32_build.path)
    again = _build(load_source(tiny_llama.folder), q4f32_build.out_root, "q4f32")
    assert again.path == q4f32_build.path
    assert all(REUSED in line for line in _stage_lines(again.log))
    assert _tree(again.path) == before  # identical inputs, identical output
    assert not [p for p in again.out_root.iterdir() if p.name.startswith(".")]

    # A fine-tune: same architecture and config, different weights.
    folder = tmp_path / "tiny-llama-tuned"
    random_model("llama", tiny_llama.seed + 100).save_pretrained(folder)
    write_tokenizer(folder)
    tuned_source = load_source(folder)
    assert tuned_source.config == load_source(tiny_llama.folder).config
    tuned = _build(tuned_source, q4f32_build.out_root, "q4f32")
    assert tuned.path.name == "tiny-llama-tuned-q4f32"
    assert all(REUSED in line for line in _stage_lines(tuned.log))
    for library in ("webgpu-f32.wasm", "wasm-cpu.wasm"):
        assert (tuned.path / library).read_bytes() == (q4f32_build.path / library).read_bytes()
    old_shards = set(q4f32_build.manifest["tensors"]["shards"])
    new_shards = set(tuned.manifest["tensors"]["shards"])
    assert new_shards and not new_shards & old_shards
    _check_files_and_shards(tuned)


def test_no_cpu_builds_the_webgpu_library_only(q4f32_build, tiny_llama):
    """build_web --no-cpu (cpu=False): no wasm-cpu library, and the manifest and index say so."""
    build = _build(load_source(tiny_llama.folder), q4f32_build.out_root, "q4f32", model_id="tiny-no-cpu", cpu=False)
    assert set(build.manifest["backends"]) == {"webgpu-f32"} and not (build.path / "wasm-cpu.wasm").exists()
    assert len(_stage_lines(build.log)) == 1
    index = json.loads((build.out_root / "index.json").read_text())
    (entry,) = [e for e in index["models"] if e["id"] == "tiny-no-cpu"]
    assert entry["backends"] == {"webgpu-f32": {"device": "webgpu", "required_features": []}}
    _check_files_and_shards(build)


def test_write_shards_splits_and_covers(tmp_path):
    rng = np.random.default_rng(0)
    arrays = [("a", rng.standard_normal((10, 30)).astype(np.float32)),  # 1200 bytes: spans shards
              ("b", np.arange(7, dtype=np.uint32)),
              ("c", rng.standard_normal(300).astype(np.float16)),
              ("d", np.zeros((0, 4), dtype=np.float32))]
    records, shards = write_shards(iter(arrays), tmp_path, max_bytes=512)
    assert [s["size"] for s in shards][:-1] == [512] * (len(shards) - 1) and 0 < shards[-1]["size"] <= 512
    assert sum(s["size"] for s in shards) == sum(a.nbytes for _, a in arrays)
    for s in shards:
        data = (tmp_path / s["path"]).read_bytes()
        assert s["path"] == f"{s['sha256']}.bin" and hashlib.sha256(data).hexdigest() == s["sha256"]
    blobs = [(tmp_path / s["path"]).read_bytes() for s in shards]
    for record, (name, array) in zip(records, arrays, strict=True):
        assert (record["name"], record["shape"], record["dtype"]) == (name, list(array.shape), str(array.dtype))
        data = b"".join(blobs[p["shard"]][p["offset"]: p["offset"] + p["nbytes"]] for p in record["pieces"])
        assert record["nbytes"] == sum(p["nbytes"] for p in record["pieces"]) == array.nbytes
        assert data == array.tobytes()
    assert len(records[0]["pieces"]) == 3  # 1200 bytes over 512-byte shards


# --- failures through the CLI --------------------------------------------------------


def _assert_nothing_built(out: Path) -> None:
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"the failed build left {left} in {out}"


def _run_cli(capsys, out: Path, *args: str) -> tuple[int, str]:
    code = build_web_main([*args, "--out", str(out), "--fast-link"])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_one_paragraph(err: str) -> None:
    assert err.startswith("error: ") and "Traceback" not in err
    assert "\n\n" not in err and len(err.splitlines()) <= 2, err


def _truncated_gguf(tmp_path, smollm2_gguf):  # noqa: F811
    path = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    with open(smollm2_gguf, "rb") as handle:
        path.write_bytes(handle.read(1 << 20))
    return path, [path.name, "truncated"]


def _tiny_copy(tmp_path, tiny) -> Path:
    folder = tmp_path / "tiny"
    shutil.copytree(tiny.folder, folder)
    return folder


def _corrupt_safetensors(tmp_path, tiny):
    folder = _tiny_copy(tmp_path, tiny)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\x00garbage"  # inside the JSON header
    weights.write_bytes(bytes(data))
    return folder, ["model.safetensors", "corrupt"]


def _gpt2_config(tmp_path, tiny):
    folder = _tiny_copy(tmp_path, tiny)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(config))
    return folder, ["config.json", "model_type", "'gpt2'", "llama, qwen2"]


def _no_tokenizer(tmp_path, tiny):
    folder = _tiny_copy(tmp_path, tiny)
    (folder / "tokenizer.json").unlink()
    return folder, ["tokenizer.json", "missing"]


BAD_INPUTS = {
    "missing-file": lambda tmp_path, tiny, gguf_path: (tmp_path / "no-such-model.gguf",
                                                       ["no-such-model.gguf", "does not exist"]),
    "truncated-gguf": lambda tmp_path, tiny, gguf_path: _truncated_gguf(tmp_path, gguf_path),
    "corrupt-safetensors": lambda tmp_path, tiny, gguf_path: _corrupt_safetensors(tmp_path, tiny),
    "unsupported-architecture": lambda tmp_path, tiny, gguf_path: _gpt2_config(tmp_path, tiny),
    "missing-tokenizer": lambda tmp_path, tiny, gguf_path: _no_tokenizer(tmp_path, tiny),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly(case, tmp_path, capsys, tiny_llama, smollm2_gguf):  # noqa: F811
    model, words = BAD_INPUTS[case](tmp_path, tiny_llama, smollm2_gguf)
    out = tmp_path / "models"
    code, err = _run_cli(capsys, out, "--model", str(model), "--quantization", "q4f32")
    assert code != 0
    _assert_one_paragraph(err)
    for word in words:
        assert word in err, (word, err)
    _assert_nothing_built(out)


def test_unknown_quantization_is_a_usage_error(tmp_path, capsys, tiny_llama):
    out = tmp_path / "models"
    with pytest.raises(SystemExit) as exit_info:
        build_web_main(["--model", str(tiny_llama.folder), "--quantization", "q3f32", "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--quantization" in err and "invalid choice: 'q3f32'" in err
    for name in ("q4f32", "q4f16", "q0f32", "q0f16"):
        assert name in err
    _assert_nothing_built(out)


def test_failure_mid_build_leaves_nothing_and_keeps_the_earlier_build(
        private_cache, tmp_path, capsys, tiny_llama, monkeypatch):
    import webkiln.package.chat_build as model_module

    out = tmp_path / "models"
    code, err = _run_cli(capsys, out, "--model", str(tiny_llama.folder), "--quantization", "q4f32", "--id", "tiny")
    assert code == 0, err
    before = _tree(out)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "tiny"]

    staged: list[Path] = []

    def crash(arrays, staging: Path, *args, **kwargs):
        staged.append(staging)
        assert (staging / "webgpu-f32.wasm").is_file()  # mid-way: compiled, nothing renamed yet
        raise RuntimeError("simulated crash while writing shards")

    monkeypatch.setattr(model_module, "write_shards", crash)
    # A fine-tune (different weights) built under the same id, crashing mid-way.
    folder = tmp_path / "tuned"
    random_model("llama", tiny_llama.seed + 200).save_pretrained(folder)
    write_tokenizer(folder)
    with pytest.raises(RuntimeError, match="simulated crash"):
        build_web_main(["--model", str(folder), "--quantization", "q4f32", "--id", "tiny",
                        "--out", str(out), "--fast-link"])
    assert staged and staged[0].parent == out and not staged[0].exists()
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "tiny"]  # no temporary folder left
    assert _tree(out) == before  # the earlier build and the index untouched
