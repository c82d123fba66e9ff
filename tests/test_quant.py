"""Weight formats and quantization schemes: round-trip error bounds, the documented
packing, GGUF Q4_0/Q4_1/Q8_0 blocks kept bit for bit, the scheme table, and the
compiled kernels' dequantization (natively) against the NumPy reference.

References are independent of webkiln's code where it matters: `gguf.quants` for GGML
blocks, a packing decoder written here from formats.py's documented layout, and
transformers running on the dequantized weights.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType

from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from conftest_tiny import PROMPT, VOCAB, compile_native, dequantized_state, hf_logits, tiny_llama, with_weights  # noqa: F401
from test_sources import gguf_source, reference_reader  # noqa: F401  (session fixtures)
from webkiln.quant.convert import convert_params, matrix_sources, plan_weights
from webkiln.quant.formats import FORMATS, GGML_KEPT, GROUP
from webkiln.quant.plan import WeightPlan
from webkiln.quant.schemes import SCHEMES, get_scheme
from webkiln.sources import load_source

QUANTIZED = ("q4_sym", "q4_affine", "q8_sym")
# Largest value magnitude each format's scale maps to (q4_sym uses -7..7 of -8..7).
LEVELS = {"q4_sym": 7, "q4_affine": 15, "q8_sym": 127}
LOGITS_TOLERANCE = 1e-4


def _weights(seed: int, rows: int = 64, cols: int = 256) -> np.ndarray:
    """Rows of very different magnitudes, an all-zero group, a constant group and an outlier."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w *= (10.0 ** rng.uniform(-3, 1, size=(rows, 1))).astype(np.float32)
    w[3, 32:64] = 0.0
    w[5, 64:96] = -0.75
    w[7, 10] = 40.0
    return w


def _decode_documented(fmt, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Dequantize from formats.py's documented layout (element k of a row: 4-bit in word
    k // 8 at bits 4 * (k % 8); 8-bit in byte k % 4 of word k // 4, little endian)."""
    packed = arrays["qweight"].astype("<u4")
    rows = packed.shape[0]
    if fmt.bits == 8:
        q = packed.view(np.uint8).view(np.int8).reshape(rows, -1).astype(np.float32)
    else:
        k = np.arange(packed.shape[1] * 8)
        q = ((packed[:, k // 8] >> (4 * (k % 8)).astype(np.uint32)) & 0xF).astype(np.float32)
    scale = np.repeat(arrays["scale"], GROUP, axis=1)
    if fmt.name == "q4_sym":
        return (q - np.float32(8)) * scale
    if fmt.name == "q4_affine":
        return q * scale + np.repeat(arrays["minimum"], GROUP, axis=1)
    return q * scale


# --- quantize / dequantize ---------------------------------------------------------


@pytest.mark.parametrize("name", QUANTIZED)
def test_round_trip_within_half_a_step(name):
    fmt = FORMATS[name]
    w = _weights(1)
    arrays = fmt.quantize(w, "float32")
    specs = fmt.param_specs(*w.shape, "float32")
    assert {k: (a.shape, str(a.dtype)) for k, a in arrays.items()} == {k: v for k, v in specs.items()}
    restored = fmt.dequantize(arrays)
    assert restored.dtype == np.float32 and restored.shape == w.shape

    groups = w.reshape(w.shape[0], -1, GROUP)
    scale = arrays["scale"]
    # The step is the tightest one for each group's values: a larger scale would make
    # the bound below easier to meet, so it is pinned to the data first.
    if fmt.has_min:
        expected_scale = (groups.max(-1) - groups.min(-1)) / LEVELS[name]
    else:
        expected_scale = np.abs(groups).max(-1) / LEVELS[name]
    np.testing.assert_allclose(scale, expected_scale, rtol=1e-6, atol=0)

    error = np.abs(restored - w).reshape(groups.shape).max(-1)
    half_step = 0.5 * scale
    # Rounding to the nearest level is off by at most half a step; 1e-4 of a step
    # covers float32 rounding of the products.
    assert np.all(error <= half_step * (1 + 1e-4)), np.max(error / np.where(scale > 0, half_step, 1))
    assert np.all(error[scale == 0] == 0)  # all-zero (and, for affine, constant) groups are exact
    # Not trivially loose: some group really is off by (almost) half a step, and the
    # typical error is about a quarter step, as for uniformly spread values.
    ratio = (np.abs(restored - w).reshape(groups.shape) / np.where(scale > 0, scale, np.inf)[..., None])
    assert ratio.max() > 0.49 and 0.2 < ratio[scale > 0].mean() < 0.3
    # Packing follows the documented layout.
    np.testing.assert_array_equal(restored, _decode_documented(fmt, arrays))


def test_affine_constant_group_is_exact():
    fmt = FORMATS["q4_affine"]
    w = _weights(2)
    restored = fmt.dequantize(fmt.quantize(w, "float32"))
    np.testing.assert_array_equal(restored[5, 64:96], w[5, 64:96])


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_float_format_is_exact(dtype):
    fmt = FORMATS["float"]
    w = _weights(3)
    arrays = fmt.quantize(w, dtype)
    assert list(arrays) == ["weight"] and arrays["weight"].dtype == np.dtype(dtype)
    np.testing.assert_array_equal(arrays["weight"], w.astype(dtype))
    np.testing.assert_array_equal(fmt.dequantize(arrays), w.astype(dtype).astype(np.float32))
    if dtype == "float32":
        assert fmt.dequantize(arrays).tobytes() == w.tobytes()


def test_f16_packed_stores_halves_two_to_a_word():
    fmt = FORMATS["f16_packed"]
    w = _weights(4)
    arrays = fmt.quantize(w, "float32")
    assert list(arrays) == ["weight"] and arrays["weight"].dtype == np.uint32
    assert arrays["weight"].shape == (w.shape[0], w.shape[1] // 2)
    halves = w.astype(np.float16).view(np.uint16).astype(np.uint32)
    # Documented layout: element 2i in the low half of word i, element 2i + 1 in the high half.
    np.testing.assert_array_equal(arrays["weight"], halves[:, 0::2] | (halves[:, 1::2] << 16))
    np.testing.assert_array_equal(fmt.dequantize(arrays), w.astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="even"):
        fmt.param_specs(8, 33, "float32")


def test_f16_decode_kernel_is_exact_for_every_half(tmp_path):
    """The TIR bit decoding f32 kernels use for f16_packed weights, compiled natively,
    against NumPy's float16 -> float32 for all 65,536 bit patterns (NaNs by class)."""
    import tvm
    from tvm import te

    fmt = FORMATS["f16_packed"]
    words = te.placeholder((1, 32768), "uint32", name="weight")
    out = te.compute((1, 65536), lambda r, c: fmt.value_te({"weight": words}, r, c, "float32"), name="decoded")
    lib = tvm.compile(te.create_prim_func([words, out]), target="llvm")
    halves = np.arange(65536, dtype=np.uint32)
    packed = (halves[0::2] | (halves[1::2] << 16)).reshape(1, -1)
    result = tvm.runtime.empty((1, 65536), "float32")
    lib(tvm.runtime.tensor(packed), result)
    got, want = result.numpy()[0], halves.astype(np.uint16).view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert got[~nan].view(np.uint32).tolist() == want[~nan].view(np.uint32).tolist()  # signed zeros too


def test_in_features_must_be_a_multiple_of_the_group():
    with pytest.raises(ValueError, match="divisible by 32"):
        FORMATS["q4_sym"].param_specs(8, 48, "float32")


# --- GGML blocks kept as they are --------------------------------------------------


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_ggml_blocks_kept_bit_for_bit(ggml_type):
    qtype = GGMLQuantizationType[ggml_type]
    w = _weights(4, rows=48, cols=320)
    blocks = gguf.quants.quantize(w, qtype)
    assert blocks.dtype == np.uint8 and blocks.shape == (48, 320 // 32 * gguf.GGML_QUANT_SIZES[qtype][1])
    fmt = FORMATS[GGML_KEPT[ggml_type]]
    arrays = fmt.from_ggml(blocks, ggml_type, "float32")
    assert {k: a.shape for k, a in arrays.items()} == {k: s for k, (s, _) in fmt.param_specs(48, 320, "float32").items()}
    expected = gguf.quants.dequantize(blocks, qtype)
    np.testing.assert_array_equal(_bits(fmt.dequantize(arrays)), _bits(expected))


# Tensors llama.cpp stores in file row order (Q and K are row-permuted; see test_sources).
_REAL_TENSORS = ["token_embd.weight"] + [f"blk.{i}.{part}.weight" for i in (0, 29)
                                         for part in ("attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")]


def test_real_gguf_blocks_kept_bit_for_bit(reference_reader):
    by_name = {t.name: t for t in reference_reader.tensors}
    seen = set()
    for name in _REAL_TENSORS:
        tensor = by_name[name]
        ggml_type = tensor.tensor_type.name
        seen.add(ggml_type)
        fmt = FORMATS[GGML_KEPT[ggml_type]]
        arrays = fmt.from_ggml(np.asarray(tensor.data), ggml_type, "float32")
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        assert np.array_equal(_bits(fmt.dequantize(arrays)), _bits(expected)), name
    assert seen == {"Q4_1", "Q8_0"}


# --- the scheme table --------------------------------------------------------------


def test_every_scheme_plans_exports_and_converts(tiny_llama, gguf_source):
    """Every scheme: a plan for a float (HF) and a GGUF source, and a model whose
    parameters convert_params fills with the right shapes and dtypes. (The parameters
    are the module's; that export packs them in this order is checked where models are
    compiled, in conftest_tiny.compile_native.)"""
    from webkiln.models.llm import build_model_class

    CausalLM = build_model_class()
    hf_source = load_source(tiny_llama.folder)
    for scheme in SCHEMES.values():
        assert scheme.weight_format in FORMATS and scheme.activation_dtype in ("float32", "float16")
        assert get_scheme(scheme.name) is scheme

        notices: list[str] = []
        plan = plan_weights(hf_source, scheme, notice=notices.append)
        assert notices == []  # float weights are never "requantized"
        assert {fmt for _, fmt in plan.formats} == {scheme.weight_format}
        assert [path for path, _ in plan.formats] == list(matrix_sources(hf_source))
        model = CausalLM(hf_source.config, plan, scheme.activation_dtype, None)
        params = [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in model.named_parameters()]
        assert any(name.endswith(".qweight") for name, _, _ in params) == FORMATS[scheme.weight_format].quantized
        # Every stored matrix is readable by the f32 library (no f16 buffers): q0f16 packs its halves.
        assert all(dtype in ("float32", "uint32") for _, _, dtype in params)
        converted = list(convert_params(hf_source, plan, scheme.activation_dtype, params))
        assert [(n, a.shape, str(a.dtype)) for n, a in converted] == params

        notices.clear()
        plan = plan_weights(gguf_source, scheme, notice=notices.append)
        formats = dict(plan.formats)
        if scheme.keep_ggml:  # SmolLM2 Q4_1 matrices and its Q8_0 embedding stay as they are
            assert formats.pop("model.embed_tokens") == "q8_sym"
            assert set(formats.values()) == {"q4_affine"} and notices == []
        else:
            assert set(formats.values()) == {scheme.weight_format}
            assert any("GGML Q4_1" in n for n in notices) and any("GGML Q8_0" in n for n in notices)


def test_a_ggml_type_not_kept_is_requantized_with_a_notice_naming_both(gguf_source):
    """A GGUF type webkiln does not keep (here Q2_K and IQ4_NL) is dequantized and stored in the
    scheme's format; the build says so, naming the type, the count and the format."""
    import dataclasses

    tensors = dict(gguf_source.tensors)
    for name, kind in (("model.layers.0.mlp.down_proj.weight", "Q2_K"), ("model.layers.1.mlp.down_proj.weight", "Q2_K"),
                       ("model.layers.2.self_attn.o_proj.weight", "IQ4_NL")):
        tensors[name] = dataclasses.replace(tensors[name], ggml_type=kind)
    source = dataclasses.replace(gguf_source, tensors=tensors)
    notices: list[str] = []
    plan = dict(plan_weights(source, get_scheme("q4f32"), notice=notices.append).formats)
    assert plan["model.layers.0.mlp.down_proj"] == plan["model.layers.2.self_attn.o_proj"] == "q4_sym"
    assert plan["model.layers.3.mlp.down_proj"] == "q4_affine"  # its Q4_1 kept
    assert len(notices) == 2
    assert "2 weight tensors stored as GGML Q2_K are dequantized and stored as q4_sym" in notices[1]
    assert "1 weight tensors stored as GGML IQ4_NL" in notices[0] and "q4_sym" in notices[0]


def test_unknown_quantization_lists_the_schemes():
    with pytest.raises(ValueError) as error:
        get_scheme("q3f32")
    message = str(error.value)
    assert "q3f32" in message
    for name in SCHEMES:
        assert name in message


# --- compiled kernels against the NumPy reference ----------------------------------


def _mixed_plan(source, embed: str, head: str) -> WeightPlan:
    """Every quantized format somewhere, plus plain floats."""
    layer_formats = [("q4_affine", "q4_sym", "q8_sym", "float"), ("q8_sym", "float", "q4_affine", "q4_sym")]
    formats = []
    for path in matrix_sources(source):
        if path == "model.embed_tokens":
            formats.append((path, embed))
        elif path == "lm_head":
            formats.append((path, head))
        else:
            layer = int(path.split(".")[2])
            which = ["self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj"].index(
                path.split(".", 3)[3])
            formats.append((path, layer_formats[layer][which]))
    return WeightPlan(tuple(formats))


@pytest.mark.parametrize("embed,head", [("q8_sym", "q4_affine"), ("q4_affine", "q8_sym")])
def test_native_kernels_dequantize_like_the_reference(tmp_path, tiny_llama, embed, head):
    """The `embed` entry point returns rows of fmt.dequantize exactly, and the fused
    dequantize-matmuls of every format give transformers' logits on the dequantized weights."""
    import tvm

    source = load_source(tiny_llama.folder)
    plan = _mixed_plan(source, embed, head)
    native = compile_native(source, plan, tmp_path / "mixed.so")
    fmt = FORMATS[embed]
    table = fmt.dequantize({part: native.params[f"model.embed_tokens.w.{part}"]
                            for part in fmt.param_specs(1, 32, "float32")})
    ids = np.array([0, 255, 7, 7, 128, 3, 254, 64], dtype=np.int32)
    lm = native.lm
    rows = lm.vm["embed"](tvm.runtime.tensor(ids, lm.dev), lm.params).numpy()
    np.testing.assert_array_equal(_bits(rows), _bits(table[ids]))
    every = lm.vm["embed"](tvm.runtime.tensor(np.arange(VOCAB, dtype=np.int32), lm.dev), lm.params).numpy()
    np.testing.assert_array_equal(_bits(every), _bits(table))

    reference = with_weights(tiny_llama.model, dequantized_state(source, plan, native.params))
    expected = hf_logits(reference, PROMPT)
    logits = lm.prefill(PROMPT)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=LOGITS_TOLERANCE)
    # The quantization is visible: the logits differ from the float model's.
    assert np.abs(expected - hf_logits(tiny_llama.model, PROMPT)).max() > 100 * LOGITS_TOLERANCE


@pytest.mark.parametrize("scheme,tiled", [("q4f32", True), ("q0f16", False)])
def test_prefill_matmuls_are_token_tiled_where_the_format_allows(tiny_llama, scheme, tiled):
    """The WebGPU prefill matmuls of 4/8-bit formats give each thread TOKEN_TILE tokens (one
    accumulator each: `array<f32, 4>` in the WGSL); f16_packed's are left one token per thread
    (its repeated decode made SwiftShader lose the device). Decode (one token) is never tiled."""
    import re

    import tvm
    from webkiln.compile.schedules import TOKEN_TILE, relax_pipeline
    from webkiln.compile.targets import get_target
    from webkiln.models.llm import export

    source = load_source(tiny_llama.folder)
    plan = plan_weights(source, get_scheme(scheme))
    target = get_target("webgpu").tvm_target()
    mod, _ = export(source.config, plan, "float32", target, 512)
    host = tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target)).mod.imports[0]  # llvm (wasm)
    wgsl = host.imports[0].inspect_source()  # its webgpu module
    # the WGSL has one "// Function: <name>" section per kernel (bindings, uniforms, body)
    kernels = {part.split(None, 1)[0]: part for part in wgsl.split("// Function: ")[1:]}
    linear = {name: body for name, body in kernels.items() if "linear" in name}
    prefill = {name for name, body in linear.items() if "seq_len" in body}
    tiled_kernels = {name for name, body in linear.items() if f"array<f32, {TOKEN_TILE}>" in body}
    assert len(prefill) == 4 and len(linear) > len(prefill), sorted(linear)  # qkv, o, gate_up, down
    assert tiled_kernels == (prefill if tiled else set()), (sorted(prefill), sorted(tiled_kernels))
