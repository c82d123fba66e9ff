"""GGUF block types kept as they are: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the k-quants Q4_K,
Q5_K, Q6_K, each bit for bit against `gguf`'s NumPy dequantization (the independent
reference): the NumPy decode of the repacked arrays, the same decode compiled natively
(the TIR the fused matmuls inline), and a file that mixes types the way llama.cpp's
Q4_K_M does (q/k/v in different types, so one fused matrix is split), whose native
logits and greedy tokens equal transformers' on gguf's dequantized weights.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType

from conftest_tiny import PROMPT, hf_greedy, hf_logits
from test_sources import _byte_level_vocab
from webkiln.quant.convert import plan_weights
from webkiln.quant.formats import FORMATS, GGML_KEPT
from webkiln.quant.schemes import get_scheme
from webkiln.sources import load_source

NEW_TYPES = ("Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
ALL_TYPES = ("Q4_0", "Q4_1", "Q8_0", *NEW_TYPES)
# Byte offsets of each block's f16 scales (d, and dmin / m where the type has one).
_F16_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,),
               "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
# Typical |d| per type, so that random blocks decode to weights of about 0.05.
_D_SCALE = {"Q4_0": 0.01, "Q4_1": 0.005, "Q5_0": 0.005, "Q5_1": 0.003, "Q8_0": 5e-4,
            "Q4_K": 2e-4, "Q5_K": 1e-4, "Q6_K": 5e-5}
LOGITS_TOLERANCE = 1e-4


def random_blocks(ggml_type: str, rows: int, cols: int, seed: int) -> np.ndarray:
    """GGML blocks uint8 [rows, bytes_per_row] with every bit random except the f16 scales,
    which are finite (random bits would give NaN and infinity weights). Random bits reach
    every quant level, every 6-bit scale and min and both signs of Q6_K's scales; gguf cannot
    quantize k-quants from floats, and a decoder must decode any block anyway."""
    rng = np.random.default_rng(seed)
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    blocks = rng.integers(0, 256, size=(rows, cols // block_size, block_bytes), dtype=np.uint8)
    for offset in _F16_FIELDS[ggml_type]:
        d = (rng.standard_normal((rows, cols // block_size)) * _D_SCALE[ggml_type]).astype(np.float16)
        blocks[..., offset:offset + 2] = d[..., None].view(np.uint8)
    return blocks.reshape(rows, -1)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("ggml_type", ALL_TYPES)
def test_blocks_kept_bit_for_bit(ggml_type):
    blocks = random_blocks(ggml_type, 24, 512, seed=1)
    fmt = FORMATS[GGML_KEPT[ggml_type]]
    arrays = fmt.from_ggml(blocks, ggml_type, "float32")
    assert {k: (a.shape, str(a.dtype)) for k, a in arrays.items()} == dict(fmt.param_specs(24, 512, "float32"))
    expected = gguf.quants.dequantize(blocks, GGMLQuantizationType[ggml_type])
    np.testing.assert_array_equal(_bits(fmt.dequantize(arrays)), _bits(expected))
    # The repacked arrays are about the size of GGML's blocks (within 21%: Q4_1's f32 scale and min).
    assert sum(a.nbytes for a in arrays.values()) <= 1.21 * blocks.nbytes


def test_kquants_are_not_made_from_floats():
    with pytest.raises(ValueError, match="only keeps GGUF Q4_K"):
        FORMATS["q4_k"].quantize(np.zeros((4, 256), np.float32), "float32")
    with pytest.raises(ValueError, match="divisible by 256"):
        FORMATS["q6_k"].param_specs(4, 320, "float32")


def _native_decode(fmt, arrays: dict[str, np.ndarray], rows: int, cols: int, dtype: str) -> np.ndarray:
    """The whole matrix through fmt.value_te, compiled for the host CPU."""
    import tvm
    from tvm import te

    specs = fmt.param_specs(rows, cols, "float32")
    placeholders = {name: te.placeholder(shape, pdtype, name=name) for name, (shape, pdtype) in specs.items()}
    out = te.compute((rows, cols), lambda r, c: fmt.value_te(placeholders, r, c, dtype), name="decoded")
    lib = tvm.compile(te.create_prim_func([*placeholders.values(), out]), target="llvm")
    result = tvm.runtime.empty((rows, cols), dtype)
    lib(*(tvm.runtime.tensor(arrays[name]) for name in specs), result)
    return result.numpy()


@pytest.mark.parametrize("ggml_type", NEW_TYPES)
def test_native_decode_is_gguf_bit_for_bit(ggml_type):
    """The TIR every kernel inlines, compiled natively, over whole tensors: f32 bit for bit,
    and the f16 library's value is gguf's rounded once to f16."""
    rows, cols = 40, 1024
    blocks = random_blocks(ggml_type, rows, cols, seed=2)
    fmt = FORMATS[GGML_KEPT[ggml_type]]
    arrays = fmt.from_ggml(blocks, ggml_type, "float32")
    expected = gguf.quants.dequantize(blocks, GGMLQuantizationType[ggml_type]).astype(np.float32)
    np.testing.assert_array_equal(_bits(_native_decode(fmt, arrays, rows, cols, "float32")), _bits(expected))
    half = _native_decode(fmt, arrays, rows, cols, "float16")
    np.testing.assert_array_equal(half.view(np.uint16), expected.astype(np.float16).view(np.uint16))


# --- a file that mixes types like llama.cpp's Q4_K_M ----------------------------------------

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 256, 4, 2, 512, 2
HEAD_DIM = HIDDEN // HEADS
# Per layer, the type of each tensor: q/k/v differ, so qkv_proj is split in both layers;
# gate/up differ in layer 1 only.
MIXED_TYPES = [
    {"attn_q": "Q5_0", "attn_k": "Q5_0", "attn_v": "Q8_0", "attn_output": "Q4_K",
     "ffn_gate": "Q5_1", "ffn_up": "Q5_1", "ffn_down": "Q6_K"},
    {"attn_q": "Q4_K", "attn_k": "Q5_K", "attn_v": "Q6_K", "attn_output": "Q5_0",
     "ffn_gate": "Q4_K", "ffn_up": "Q5_K", "ffn_down": "Q4_1"},
]
EMBED_TYPE, OUTPUT_TYPE = "Q5_0", "Q6_K"


# The first seed whose reference continuation of PROMPT is varied (8 distinct tokens in 16),
# with a top-2 margin of 0.026 (seeds 0-4 repeat one or two tokens).
MIXED_SEED = 5


def write_mixed_gguf(path: Path, seed: int = MIXED_SEED) -> None:
    """A 2-layer Qwen2 GGUF whose matrices are random blocks of MIXED_TYPES."""
    rng = np.random.default_rng(seed)
    tokens, types, merges = _byte_level_vocab()
    writer = gguf.GGUFWriter(path, "qwen2")
    for key, value in [("context_length", 512), ("embedding_length", HIDDEN), ("block_count", LAYERS),
                       ("feed_forward_length", FFN), ("attention.head_count", HEADS),
                       ("attention.head_count_kv", KV_HEADS)]:
        writer.add_uint32(f"qwen2.{key}", value)
    writer.add_float32("qwen2.rope.freq_base", 1e6)
    writer.add_float32("qwen2.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_chat_template("{{ '<|im_start|>' }}{{ '<|im_end|>' }}")

    def matrix(name: str, rows: int, cols: int, ggml_type: str) -> None:
        qtype = GGMLQuantizationType[ggml_type]
        blocks = random_blocks(ggml_type, rows, cols, seed=int(rng.integers(1 << 30)))
        writer.add_tensor(name, blocks, raw_shape=(rows, blocks.shape[1]), raw_dtype=qtype)

    def vector(name: str, n: int, centre: float) -> None:
        writer.add_tensor(name, (centre + 0.2 * rng.standard_normal(n)).astype(np.float32))

    matrix("token_embd.weight", len(tokens), HIDDEN, EMBED_TYPE)
    matrix("output.weight", len(tokens), HIDDEN, OUTPUT_TYPE)
    vector("output_norm.weight", HIDDEN, 1.0)
    kv = KV_HEADS * HEAD_DIM
    for i, layer in enumerate(MIXED_TYPES):
        shapes = {"attn_q": (HIDDEN, HIDDEN), "attn_k": (kv, HIDDEN), "attn_v": (kv, HIDDEN),
                  "attn_output": (HIDDEN, HIDDEN), "ffn_gate": (FFN, HIDDEN), "ffn_up": (FFN, HIDDEN),
                  "ffn_down": (HIDDEN, FFN)}
        for part, (rows, cols) in shapes.items():
            matrix(f"blk.{i}.{part}.weight", rows, cols, layer[part])
        vector(f"blk.{i}.attn_norm.weight", HIDDEN, 1.0)
        vector(f"blk.{i}.ffn_norm.weight", HIDDEN, 1.0)
        for part, n in (("attn_q", HIDDEN), ("attn_k", kv), ("attn_v", kv)):
            vector(f"blk.{i}.{part}.bias", n, 0.0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def reference_model(path: Path):
    """transformers' Qwen2 on gguf's own dequantization of every tensor of the file."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    reader = gguf.GGUFReader(path)
    config = transformers.Qwen2Config(
        vocab_size=len(_byte_level_vocab()[0]), hidden_size=HIDDEN, intermediate_size=FFN,
        num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=KV_HEADS,
        max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=1e6, tie_word_embeddings=False)
    model = transformers.Qwen2ForCausalLM(config).eval()
    names = {"token_embd": "model.embed_tokens", "output": "lm_head", "output_norm": "model.norm",
             "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    state = {}
    for tensor in reader.tensors:
        parts = tensor.name.split(".")
        if parts[0] == "blk":
            hf = f"model.layers.{parts[1]}.{names[parts[2]]}.{parts[3]}"
        else:
            hf = f"{names[parts[0]]}.{parts[1]}"
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        state[hf] = torch.from_numpy(np.array(values.reshape(tuple(reversed(tensor.shape.tolist()))), copy=True))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"} - set(state)
    return model


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mixed") / "tiny-mixed.Q4_K_M.gguf"
    write_mixed_gguf(path)
    return path


def test_mixed_file_keeps_every_tensor_in_its_type(mixed_gguf):
    source = load_source(mixed_gguf)
    notices: list[str] = []
    formats = dict(plan_weights(source, get_scheme("q4f32"), notice=notices.append).formats)
    assert notices == []
    assert formats["model.embed_tokens"] == "q5_sym" and formats["lm_head"] == "q6_k"
    assert formats["model.layers.0.self_attn.qkv_proj"] == "q5_sym+q5_sym+q8_sym"
    assert formats["model.layers.1.self_attn.qkv_proj"] == "q4_k+q5_k+q6_k"
    assert formats["model.layers.0.mlp.gate_up_proj"] == "q5_affine"  # same type: one fused matrix
    assert formats["model.layers.1.mlp.gate_up_proj"] == "q4_k+q5_k"
    assert formats["model.layers.0.mlp.down_proj"] == "q6_k"
    # The q0 schemes dequantize everything, and say so per type.
    notices.clear()
    formats = dict(plan_weights(source, get_scheme("q0f32"), notice=notices.append).formats)
    assert set(formats.values()) == {"float"}
    in_file = {EMBED_TYPE, OUTPUT_TYPE} | {t for layer in MIXED_TYPES for t in layer.values()}
    assert sorted(n.split("GGML ")[1].split()[0] for n in notices) == sorted(in_file)


def test_mixed_file_native_logits_and_greedy_equal_transformers(tmp_path, mixed_gguf):
    from conftest_tiny import compile_native

    source = load_source(mixed_gguf)
    plan = plan_weights(source, get_scheme("q4f32"))
    native = compile_native(source, plan, tmp_path / "mixed.so")
    reference = reference_model(mixed_gguf)
    expected = hf_logits(reference, PROMPT)
    np.testing.assert_allclose(native.lm.prefill(PROMPT), expected, rtol=0, atol=LOGITS_TOLERANCE)
    greedy, gap = hf_greedy(reference, PROMPT, 16)
    assert gap > 10 * LOGITS_TOLERANCE, f"the reference's top-2 margin {gap:.3g} is too close to call"
    assert native.lm.greedy(PROMPT, 16) == greedy
    assert len(set(greedy)) >= 5  # a varied continuation, not one token repeated


# --- in the browser: the kernels' decode on WebGPU and wasm-cpu, and the mixed model ---------

DECODE_OUT, DECODE_IN, DECODE_TOKENS = 48, 512, 3
BROWSER_BACKENDS = ("webgpu", "wasm-cpu")


def _decode_module():
    """One VM function per new format: (x [1, n, in], the stored arrays) -> (the whole matrix
    decoded through value_te, x W^T through the fused matmul the models use)."""
    from tvm import te
    from tvm.relax.frontend import nn

    from webkiln.models.llm import _matmul_te

    def entry(fmt):
        names = list(fmt.param_specs(DECODE_OUT, DECODE_IN, "float32"))

        def decoded(*ps):
            p = dict(zip(names, ps))
            return te.compute((DECODE_OUT, DECODE_IN), lambda r, c: fmt.value_te(p, r, c, "float32"), name="decoded")

        def matmul(xx, *ps):
            return _matmul_te(xx, fmt, dict(zip(names, ps)), DECODE_OUT, DECODE_IN, "float32", "linear")

        def method(self, x, *stored):
            return (nn.tensor_expr_op(decoded, "decoded", stored),
                    nn.tensor_expr_op(matmul, "linear", [x, *stored]))

        # export_tvm reads the method's parameters from its signature, then passes them in order
        method.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in ("self", "x", *names)])
        return method

    formats = [FORMATS[GGML_KEPT[t]] for t in NEW_TYPES]
    Decode = type("Decode", (nn.Module,), {fmt.name: entry(fmt) for fmt in formats})
    spec = {fmt.name: {"x": nn.spec.Tensor([1, "n", DECODE_IN], "float32"),
                       **{name: nn.spec.Tensor(list(shape), dtype)
                          for name, (shape, dtype) in fmt.param_specs(DECODE_OUT, DECODE_IN, "float32").items()}}
            for fmt in formats}
    mod, _ = Decode().export_tvm(spec=spec)
    return mod


@pytest.fixture(scope="module")
def decode_modules(site_root) -> dict[str, str]:
    """The decode module built for both browser backends, served from the test site."""
    from webkiln.compile.build import build_module

    mod = _decode_module()
    urls = {}
    for backend in BROWSER_BACKENDS:
        name = f"ggml-decode-{backend}.wasm"
        build_module(mod, backend, site_root / "ggml-decode" / name)
        urls[backend] = f"ggml-decode/{name}"
    return urls


def _tensor(a: np.ndarray) -> dict:
    return {"dtype": str(a.dtype), "shape": list(a.shape), "data": a.ravel().tolist()}


@pytest.mark.parametrize("backend", BROWSER_BACKENDS)
def test_browser_kernels_decode_gguf_bit_for_bit(page, live_server, decode_modules, backend):
    page.goto(f"{live_server.url}/kernel-check.html")
    page.wait_for_function("window.webkiln !== undefined")
    x = np.random.default_rng(9).standard_normal((1, DECODE_TOKENS, DECODE_IN)).astype(np.float32)
    for i, ggml_type in enumerate(NEW_TYPES):
        fmt = FORMATS[GGML_KEPT[ggml_type]]
        blocks = random_blocks(ggml_type, DECODE_OUT, DECODE_IN, seed=20 + i)
        arrays = fmt.from_ggml(blocks, ggml_type, "float32")
        spec = {"entry": fmt.name, "inputs": {"x": _tensor(x), **{k: _tensor(a) for k, a in arrays.items()}},
                "params": list(arrays), "outputs": ["decoded", "y"]}
        result = page.evaluate("([url, backend, spec]) => window.webkiln.runKernelCheck(url, backend, spec)",
                               [decode_modules[backend], backend, spec])
        expected = gguf.quants.dequantize(blocks, GGMLQuantizationType[ggml_type]).astype(np.float32)
        got = np.asarray(result["outputs"]["decoded"], dtype=np.float32).reshape(expected.shape)
        np.testing.assert_array_equal(_bits(got), _bits(expected), err_msg=f"{backend} {ggml_type}")
        y = np.asarray(result["outputs"]["y"], dtype=np.float64).reshape(1, DECODE_TOKENS, DECODE_OUT)
        want = x.astype(np.float64) @ expected.T.astype(np.float64)
        assert np.abs(y - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), f"{backend} {ggml_type}"
    assert not page.errors


def test_mixed_file_in_the_browser_writes_transformers_tokens(browser, test_site, mixed_gguf, tmp_path):
    """build_web on the mixed file; on webgpu-f32 and wasm-cpu, 16 greedy tokens equal
    transformers' on gguf's dequantized weights, and the manifest lists each matrix's format."""
    import json
    import shutil

    from conftest import LiveServer
    from webkiln.package.chat_build import build_chat_model
    from webkiln.toolchain.link import LinkMode

    root = tmp_path / "site"
    shutil.copytree(test_site, root)
    model_dir = build_chat_model(load_source(mixed_gguf), root / "models", "q4f32", link_mode=LinkMode.FAST,
                                 log=lambda _: None)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["weight_formats"]["model.layers.1.self_attn.qkv_proj"] == "q4_k+q5_k+q6_k"
    assert manifest["weight_formats"]["lm_head"] == "q6_k"
    # Every tensor kept bit for bit: the build reports no loss against gguf's own values.
    assert manifest["quality"] == {"text_tokens": 64, "reference": "gguf-dequantized", "top1_agreement": 1.0,
                                   "mean_kl": 0.0}
    expected, _ = hf_greedy(reference_model(mixed_gguf), PROMPT, 16)
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        got = {}
        for backend in ("webgpu-f32", "wasm-cpu"):
            info = page.evaluate("([u, b]) => window.webkilnChat.load(u, b)",
                                 [f"models/{model_dir.name}/manifest.json", backend])
            assert info["backend"] == backend
            got[backend] = page.evaluate(
                "(ids) => window.webkilnChat.generate(ids, {maxTokens: 16, temperature: 0, stopTokenIds: []})",
                PROMPT)["tokens"]
        context.close()
    assert got == {"webgpu-f32": expected, "wasm-cpu": expected}
