"""Model families beyond Llama and Qwen2, each checked against transformers on the same weights:
Qwen3 (an RMSNorm over each head of q and k, no biases, head_dim apart from hidden / heads),
Llama 3.x rope scaling (`rope_type: llama3`) and Gemma 3 (GeGLU, norms around attention and
the MLP scaling by 1 + weight, scaled embeddings, its own softmax scale, logit soft-capping,
sliding and global layers with their own rope bases) and Phi-3 (fused q/k/v and gate/up,
LongRoPE, Phi-4-mini's partial rotary). Tiny random models in the real layout
(transformers' own config classes, save_pretrained), natively (logits within 1e-4, 16 greedy
tokens), from a GGUF written the way llama.cpp writes the architecture, and in Chromium; and the
real Gemma 3 270M Q4_K_M GGUF in Chromium against transformers on the same file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest_models import gemma3_270m_gguf, qwen25_coder_05b_gguf  # noqa: F401  (session fixtures)
from conftest_tiny import (  # noqa: F401  (session fixtures)
    GEMMA3_LAYERS,
    GEMMA3_WINDOW,
    GREEDY_TOKENS,
    PHI3_ORIGINAL_CONTEXT,
    PHI3_SHORT_FACTOR,
    LLAMA3_ROPE,
    MIN_TOP2_GAP,
    PROMPT,
    compile_native,
    dequantized_state,
    hf_greedy,
    hf_logits,
    tiny_gemma3,
    tiny_llama3,
    tiny_phi3,
    tiny_qwen3,
    with_weights,
)
from webkiln.quant.convert import plan_weights
from webkiln.quant.schemes import get_scheme
from webkiln.sources import SourceError, load_source

LOGITS_TOLERANCE = 1e-4
FAMILIES = ("qwen3", "llama3", "gemma3", "phi3")


def _tiny(request, family: str):
    return request.getfixturevalue(f"tiny_{family}")


def test_configs_carry_the_family_differences(tiny_qwen3, tiny_llama3, tiny_gemma3, tiny_phi3):
    qwen3 = load_source(tiny_qwen3.folder).config
    assert (qwen3.architecture, qwen3.qk_norm, qwen3.attention_bias, qwen3.head_dim) == ("qwen3", True, False, 32)
    assert qwen3.tie_word_embeddings and qwen3.rope_scaling is None
    llama3 = load_source(tiny_llama3.folder).config
    assert llama3.architecture == "llama" and not llama3.qk_norm
    assert llama3.rope_scaling == {k: (v if k == "rope_type" else float(v)) for k, v in LLAMA3_ROPE.items()}
    gemma3 = load_source(tiny_gemma3.folder).config
    assert (gemma3.architecture, gemma3.qk_norm, gemma3.sandwich_norms, gemma3.norm_weight_offset) == (
        "gemma3", True, True, 1.0)
    assert (gemma3.hidden_act, gemma3.embedding_multiplier, gemma3.attention_scale) == (
        "gelu_pytorch_tanh", 8.0, 24**-0.5)
    assert (gemma3.layer_types, gemma3.sliding_window, gemma3.final_logit_softcapping) == (
        GEMMA3_LAYERS, GEMMA3_WINDOW, 8.0)
    assert (gemma3.rope_theta, gemma3.rope_local_theta, gemma3.tie_word_embeddings) == (1e6, 1e4, True)
    phi3 = load_source(tiny_phi3.folder)
    assert (phi3.config.architecture, phi3.config.rotary_dim) == ("phi3", 12)
    assert phi3.config.rope_scaling == {
        "rope_type": "longrope", "short_factor": PHI3_SHORT_FACTOR, "long_factor": [4 * f for f in PHI3_SHORT_FACTOR],
        "original_max_position_embeddings": PHI3_ORIGINAL_CONTEXT, "attention_factor": 2**0.5}
    # The fused matrices are read as Llama's q/k/v and gate/up, row blocks of the stored ones.
    state = tiny_phi3.model.state_dict()
    qkv, gate_up = state["model.layers.1.self_attn.qkv_proj.weight"], state["model.layers.1.mlp.gate_up_proj.weight"]
    np.testing.assert_array_equal(phi3.tensors["model.layers.1.self_attn.k_proj.weight"].dequantize(),
                                  qkv[64:96].numpy())
    np.testing.assert_array_equal(phi3.tensors["model.layers.1.mlp.up_proj.weight"].dequantize(),
                                  gate_up[128:].numpy())
    from webkiln.package.chat_build import context_window_for

    assert context_window_for(phi3.config, 2048, lambda _: None) == PHI3_ORIGINAL_CONTEXT


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("scheme_name", ["q0f32", "q4f32"])
def test_native_logits_and_greedy_equal_transformers(request, tmp_path, family, scheme_name):
    tiny = _tiny(request, family)
    source = load_source(tiny.folder)
    plan = plan_weights(source, get_scheme(scheme_name))
    native = compile_native(source, plan, tmp_path / f"{family}-{scheme_name}.so")
    if scheme_name == "q0f32":
        reference, expected = tiny.model, tiny.greedy
    else:
        reference = with_weights(tiny.model, dequantized_state(source, plan, native.params))
        expected, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
        assert gap > MIN_TOP2_GAP, f"reference top-2 margin {gap:.3g}: too close to call"
    np.testing.assert_allclose(native.lm.prefill(PROMPT), hf_logits(reference, PROMPT), rtol=0,
                               atol=LOGITS_TOLERANCE)
    assert native.lm.greedy(PROMPT, GREEDY_TOKENS) == expected


def test_the_family_difference_is_visible(tiny_qwen3, tiny_llama3, tiny_gemma3, tiny_phi3):
    """The checks above can fail: without the q/k norms or the rope scaling transformers' own
    logits move far beyond the tolerance."""
    import copy

    import torch

    plain = copy.deepcopy(tiny_qwen3.model)
    with torch.no_grad():
        for layer in plain.model.layers:
            layer.self_attn.q_norm.weight.fill_(1.0)
    assert np.abs(hf_logits(plain, PROMPT) - hf_logits(tiny_qwen3.model, PROMPT)).max() > 100 * LOGITS_TOLERANCE

    import transformers

    config = copy.deepcopy(tiny_llama3.model.config)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
    unscaled = transformers.LlamaForCausalLM(config).eval()
    unscaled.load_state_dict(tiny_llama3.model.state_dict())
    long_prompt = PROMPT * 2  # past the 16-position wavelengths the scaling leaves alone
    diff = np.abs(hf_logits(unscaled, long_prompt) - hf_logits(tiny_llama3.model, long_prompt)).max()
    assert diff > 100 * LOGITS_TOLERANCE

    # Gemma 3: the sliding layers' own rope base and the norms' 1 + weight.
    config = copy.deepcopy(tiny_gemma3.model.config)
    config.rope_parameters = {"sliding_attention": {"rope_type": "default", "rope_theta": 1e6},
                              "full_attention": {"rope_type": "default", "rope_theta": 1e6}}
    one_base = transformers.Gemma3ForCausalLM(config).eval()
    one_base.load_state_dict(tiny_gemma3.model.state_dict())
    assert np.abs(hf_logits(one_base, PROMPT) - hf_logits(tiny_gemma3.model, PROMPT)).max() > 100 * LOGITS_TOLERANCE
    plain = copy.deepcopy(tiny_gemma3.model)
    with torch.no_grad():
        plain.model.norm.weight.add_(1.0)  # what a norm scaling by its weight alone would see
    assert np.abs(hf_logits(plain, PROMPT) - hf_logits(tiny_gemma3.model, PROMPT)).max() > 100 * LOGITS_TOLERANCE

    # Phi-3: LongRoPE's divisors and scale, and rope on 12 of 16 dims.
    config = copy.deepcopy(tiny_phi3.model.config)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.75}
    unscaled = transformers.Phi3ForCausalLM(config).eval()
    unscaled.load_state_dict(tiny_phi3.model.state_dict())
    assert np.abs(hf_logits(unscaled, PROMPT) - hf_logits(tiny_phi3.model, PROMPT)).max() > 100 * LOGITS_TOLERANCE


def test_the_reference_forward_slides_its_window_as_transformers_does(tiny_gemma3):
    """The NumPy forward pass that measures quantization quality (models/reference.py) masks a
    sliding layer's keys as transformers does, on a sequence three times the window."""
    import copy

    import transformers

    from webkiln.models import reference

    source = load_source(tiny_gemma3.folder)
    config = copy.deepcopy(tiny_gemma3.model.config)
    config.sliding_window = 8
    model = transformers.Gemma3ForCausalLM(config).eval()
    model.load_state_dict(tiny_gemma3.model.state_dict())
    cfg = dataclasses.replace(source.config, sliding_window=8)
    ours = reference.forward(cfg, lambda n: source.tensors[n].dequantize(), PROMPT + PROMPT[:4])[-1]
    np.testing.assert_allclose(ours, hf_logits(model, PROMPT + PROMPT[:4]), rtol=0, atol=LOGITS_TOLERANCE)
    assert np.abs(ours - hf_logits(tiny_gemma3.model, PROMPT + PROMPT[:4])).max() > 100 * LOGITS_TOLERANCE


# --- from GGUF, written as llama.cpp writes Qwen3 ---------------------------------------------


def write_gguf(folder: Path, path: Path, arch: str = "qwen3") -> None:
    """The tiny Qwen3 or Gemma 3 folder as llama.cpp's convert_hf_to_gguf.py lays it out: arch
    `qwen3`/`gemma3`, `attention.key_length` for head_dim, `attn_q_norm`/`attn_k_norm`, no Q/K
    permutation, no output tensor when tied; Gemma's norms stored plus one, its window in
    `attention.sliding_window` and its norms around attention and the MLP named
    `post_attention_norm`, `ffn_norm` (before the MLP) and `post_ffw_norm`; Phi-3's fused
    `attn_qkv` and `ffn_up` (gate and up), its rotary size in `rope.dimension_count` and LongRoPE's
    divisors as the tensors `rope_factors_short`/`_long`. F32 norms, F16 matrices (its default
    `--outtype f16` for these)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    writer = gguf.GGUFWriter(path, arch)
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    for key, value in [("context_length", config["max_position_embeddings"]),
                       ("embedding_length", config["hidden_size"]), ("block_count", config["num_hidden_layers"]),
                       ("feed_forward_length", config["intermediate_size"]),
                       ("attention.head_count", config["num_attention_heads"]),
                       ("attention.head_count_kv", config["num_key_value_heads"]),
                       ("attention.key_length", head_dim), ("attention.value_length", head_dim)]:
        writer.add_uint32(f"{arch}.{key}", value)
    rope = config["rope_parameters"]
    writer.add_float32(f"{arch}.rope.freq_base", float(rope.get("full_attention", rope)["rope_theta"]))
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", config["rms_norm_eps"])
    if arch == "gemma3":
        writer.add_uint32("gemma3.attention.sliding_window", config["sliding_window"])
    if arch == "phi3":
        writer.add_uint32("phi3.rope.dimension_count", int(head_dim * rope["partial_rotary_factor"]))
        original = rope["original_max_position_embeddings"]
        writer.add_uint32("phi3.rope.scaling.original_context_length", original)
        factor = config["max_position_embeddings"] / original
        writer.add_float32("phi3.rope.scaling.attn_factor", (1 + np.log(factor) / np.log(original)) ** 0.5)
        writer.add_tensor("rope_factors_long.weight", np.asarray(rope["long_factor"], dtype=np.float32))
        writer.add_tensor("rope_factors_short.weight", np.asarray(rope["short_factor"], dtype=np.float32))
    # The folder's own byte-level BPE (tokenizer.json), padded to the embedding's rows.
    bpe = json.loads((folder / "tokenizer.json").read_text())
    vocab = {**bpe["model"]["vocab"], **{t["content"]: t["id"] for t in bpe["added_tokens"]}}
    tokens = [f"[PAD{i}]" for i in range(config["vocab_size"])]
    for token, i in vocab.items():
        tokens[i] = token
    special = {t["id"] for t in bpe["added_tokens"]}
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if i in special else 1 for i in range(len(tokens))])
    writer.add_token_merges(merges)
    writer.add_eos_token_id(0)
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    if arch == "gemma3":
        names.update({"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                      "post_feedforward_layernorm": "post_ffw_norm"})
    names.update({"self_attn.qkv_proj": "attn_qkv", "mlp.gate_up_proj": "ffn_up"})  # Phi-3's fused ones
    for name, value in state.items():
        base = name.rsplit(".", 1)[0]
        if base.startswith("model.layers."):
            _, _, layer, rest = base.split(".", 3)
            gguf_name = f"blk.{layer}.{names[rest]}.weight"
        else:
            gguf_name = f"{names[base]}.weight"
        if arch == "gemma3" and name.endswith("norm.weight"):
            value = value + np.float32(1)
        writer.add_tensor(gguf_name, value.astype(np.float16 if value.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_qwen3_gguf_loads_as_the_folder_and_matches_transformers(tmp_path, tiny_qwen3):
    path = tmp_path / "tiny-qwen3.F16.gguf"
    write_gguf(tiny_qwen3.folder, path)
    source = load_source(path)
    folder = load_source(tiny_qwen3.folder)
    # GGUF stores eps as float32.
    assert source.config == dataclasses.replace(folder.config, rms_norm_eps=float(np.float32(1e-6)))
    for name, tensor in folder.tensors.items():
        expected = tensor.dequantize()
        if expected.ndim == 2:
            expected = expected.astype(np.float16).astype(np.float32)
        np.testing.assert_array_equal(source.tensors[name].dequantize(), expected, err_msg=name)
    # The GGUF's F16 matrices, in the q0f32 library, against transformers on the same f16-rounded weights.
    plan = plan_weights(source, get_scheme("q0f32"))
    native = compile_native(source, plan, tmp_path / "qwen3-gguf.so")
    reference = with_weights(tiny_qwen3.model, {n: t.dequantize() for n, t in source.tensors.items()})
    expected, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
    assert gap > MIN_TOP2_GAP
    np.testing.assert_allclose(native.lm.prefill(PROMPT), hf_logits(reference, PROMPT), rtol=0,
                               atol=LOGITS_TOLERANCE)
    assert native.lm.greedy(PROMPT, GREEDY_TOKENS) == expected


def test_gemma3_gguf_loads_as_llama_cpp_reads_it_and_matches_transformers(tmp_path, tiny_gemma3):
    """A Gemma 3 GGUF carries no layer pattern, softmax scale or soft-capping: it is read with
    llama.cpp's own settings (every 6th layer global, 1/sqrt(head_dim)), and matches transformers
    configured the same way, on the GGUF's weights (norms stored plus one and read back)."""
    import copy

    import transformers

    path = tmp_path / "tiny-gemma3.F16.gguf"
    write_gguf(tiny_gemma3.folder, path, "gemma3")
    source = load_source(path)
    folder = load_source(tiny_gemma3.folder)
    assert source.config == dataclasses.replace(
        folder.config, rms_norm_eps=float(np.float32(1e-6)), attention_scale=16**-0.5, final_logit_softcapping=None,
        layer_types=("sliding_attention",) * 4)
    for name, tensor in folder.tensors.items():
        expected = tensor.dequantize()
        if expected.ndim == 2:
            np.testing.assert_array_equal(source.tensors[name].dequantize(), expected.astype(np.float16), err_msg=name)
        else:  # (w + 1) - 1 in float32
            np.testing.assert_allclose(source.tensors[name].dequantize(), expected, rtol=0, atol=1e-6, err_msg=name)
    config = copy.deepcopy(tiny_gemma3.model.config)
    config.layer_types, config.query_pre_attn_scalar, config.final_logit_softcapping = ["sliding_attention"] * 4, 16, None
    reference = transformers.Gemma3ForCausalLM(config).eval()
    reference = with_weights(reference, {n: t.dequantize() for n, t in source.tensors.items()})
    expected, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
    assert gap > MIN_TOP2_GAP
    native = compile_native(source, plan_weights(source, get_scheme("q0f32")), tmp_path / "gemma3-gguf.so")
    np.testing.assert_allclose(native.lm.prefill(PROMPT), hf_logits(reference, PROMPT), rtol=0,
                               atol=LOGITS_TOLERANCE)
    assert native.lm.greedy(PROMPT, GREEDY_TOKENS) == expected


def test_phi3_gguf_loads_as_the_folder_and_matches_transformers(tmp_path, tiny_phi3):
    """Phi-3 written as llama.cpp writes it (fused attn_qkv and ffn_up, LongRoPE's divisors as
    tensors, its attention factor as float32 metadata): the same config and tensors as the folder,
    and native logits equal transformers' on the GGUF's f16-rounded weights."""
    path = tmp_path / "tiny-phi3.F16.gguf"
    write_gguf(tiny_phi3.folder, path, "phi3")
    source = load_source(path)
    folder = load_source(tiny_phi3.folder)
    expected_scaling = {**folder.config.rope_scaling,
                        "attention_factor": float(np.float32(folder.config.rope_scaling["attention_factor"])),
                        "short_factor": [float(np.float32(f)) for f in PHI3_SHORT_FACTOR],
                        "long_factor": [float(np.float32(4 * f)) for f in PHI3_SHORT_FACTOR]}
    assert source.config == dataclasses.replace(folder.config, rms_norm_eps=float(np.float32(1e-6)),
                                                rope_scaling=expected_scaling)
    for name, tensor in folder.tensors.items():
        expected = tensor.dequantize()
        expected = expected.astype(np.float16).astype(np.float32) if expected.ndim == 2 else expected
        np.testing.assert_array_equal(source.tensors[name].dequantize(), expected, err_msg=name)
    reference = with_weights(tiny_phi3.model, {n: t.dequantize() for n, t in source.tensors.items()})
    expected, gap = hf_greedy(reference, PROMPT, GREEDY_TOKENS)
    assert gap > MIN_TOP2_GAP
    native = compile_native(source, plan_weights(source, get_scheme("q0f32")), tmp_path / "phi3-gguf.so")
    np.testing.assert_allclose(native.lm.prefill(PROMPT), hf_logits(reference, PROMPT), rtol=0,
                               atol=LOGITS_TOLERANCE)
    assert native.lm.greedy(PROMPT, GREEDY_TOKENS) == expected


def test_unsupported_architecture_and_rope_scaling_name_the_supported_ones(tmp_path, tiny_llama3):
    folder = tmp_path / "phi"
    shutil.copytree(tiny_llama3.folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "falcon"}))
    with pytest.raises(SourceError) as error:
        load_source(folder)
    assert "'falcon' is not supported" in str(error.value) and "gemma3" in str(error.value)
    rope = {**config["rope_parameters"], "rope_type": "yarn"}
    (folder / "config.json").write_text(json.dumps({**config, "rope_parameters": rope}))
    with pytest.raises(SourceError) as error:
        load_source(folder)
    assert "rope scaling 'yarn'" in str(error.value) and "llama3" in str(error.value)


# --- in Chromium ------------------------------------------------------------------------------


def test_families_in_the_browser_write_transformers_tokens(browser, test_site, tiny_qwen3, tiny_llama3, tiny_gemma3,
                                                          tiny_phi3, tmp_path):
    """build_web (q0f32, the WebGPU library) of each family; 16 greedy tokens on WebGPU equal
    transformers'."""
    from conftest import LiveServer
    from webkiln.package.chat_build import build_chat_model
    from webkiln.toolchain.link import LinkMode

    root = tmp_path / "site"
    shutil.copytree(test_site, root)
    built = {}
    for family, tiny in (("qwen3", tiny_qwen3), ("llama3", tiny_llama3), ("gemma3", tiny_gemma3), ("phi3", tiny_phi3)):
        built[family] = build_chat_model(load_source(tiny.folder), root / "models", "q0f32", model_id=f"tiny-{family}",
                                         link_mode=LinkMode.FAST, log=lambda _: None, cpu=False)
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        got = {}
        for family, model_dir in built.items():
            page.evaluate("([u, b]) => window.webkilnChat.load(u, b)",
                          [f"models/{model_dir.name}/manifest.json", "webgpu-f32"])
            got[family] = page.evaluate(
                "(ids) => window.webkilnChat.generate(ids, {maxTokens: %d, temperature: 0, stopTokenIds: []})"
                % GREEDY_TOKENS, PROMPT)["tokens"]
        context.close()
    assert got == {"qwen3": tiny_qwen3.greedy, "llama3": tiny_llama3.greedy, "gemma3": tiny_gemma3.greedy,
                   "phi3": tiny_phi3.greedy}


GEMMA3_TEXT = "The capital of France is"


def _real_model_in_the_browser(browser, test_site, tmp_path, gguf_path, model_id, reference, plain_text: bool):
    """build_web (q4f32: GGUF block types kept) of a real GGUF, then greedy tokens in Chromium on
    the CPU backend (the fast one here) from the reference's prompt ids; -> (manifest, build log,
    tokens). `plain_text`: the prompt is text with the tokenizer's own BOS, not a chat template's."""
    from tokenizers import Tokenizer

    from conftest import LiveServer
    from webkiln.package.chat_build import build_chat_model
    from webkiln.toolchain.link import LinkMode

    gaps = [float(np.diff(np.sort(step)[-2:])[0]) for step in reference.logits]
    assert min(gaps) > 1e-3, f"reference top-2 margins {gaps}: too close to call"
    source = load_source(gguf_path)
    # The prompt's tokens too: the tokenizer rebuilt from the GGUF against transformers'.
    assert Tokenizer.from_str(source.tokenizer_json).encode(reference.prompt_text,
                                                            add_special_tokens=plain_text).ids == reference.prompt_ids
    root = tmp_path / "site"
    shutil.copytree(test_site, root)
    logs: list[str] = []
    model_dir = build_chat_model(source, root / "models", "q4f32", model_id=model_id, link_mode=LinkMode.FAST,
                                 log=logs.append)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    with LiveServer(root) as server:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/chat.html")
        page.wait_for_function("window.webkilnChat !== undefined")
        page.evaluate("([u, b]) => window.webkilnChat.load(u, b)", [f"models/{model_id}/manifest.json", "wasm-cpu"])
        got = page.evaluate(
            "(ids) => window.webkilnChat.generate(ids, {maxTokens: %d, temperature: 0, stopTokenIds: []})"
            % len(reference.tokens), reference.prompt_ids)
        context.close()
    return manifest, logs, got["tokens"]


def _kept_formats(manifest) -> set[str]:
    return {f for v in manifest["weight_formats"].values() for f in v.split("+")}


def test_gemma3_270m_in_the_browser_writes_transformers_tokens(browser, test_site, gemma3_270m_gguf, tmp_path):
    """The real Gemma 3 270M base, Q4_K_M (Q4_K, Q5_0, Q6_K and Q8_0 blocks kept as they are):
    16 greedy tokens in Chromium equal transformers' on the same GGUF (dequantized), and so do the
    prompt's tokens (SentencePiece recovered from the GGUF)."""
    import reference_lm

    reference = reference_lm.greedy_text(gemma3_270m_gguf, GEMMA3_TEXT, GREEDY_TOKENS)
    manifest, logs, tokens = _real_model_in_the_browser(browser, test_site, tmp_path, gemma3_270m_gguf,
                                                        "gemma3-270m", reference, plain_text=True)
    assert manifest["context_window"] == 512  # the sliding window (see chat_build)
    assert any("the context window is 512 tokens" in line for line in logs)
    assert {"q4_k", "q5_sym", "q6_k", "q8_sym"} <= _kept_formats(manifest)
    assert tokens == reference.tokens


def test_qwen25_coder_05b_in_the_browser_writes_transformers_tokens(browser, test_site, qwen25_coder_05b_gguf,
                                                                    tmp_path):
    """The real Qwen2.5-Coder-0.5B-Instruct GGUF (Q5_0, Q6_K, Q4_K and Q8_0 kept as they are),
    prompted through its chat template: 16 greedy tokens in Chromium equal transformers'."""
    import reference_lm

    reference = reference_lm.greedy(qwen25_coder_05b_gguf, "Write a Python function that adds two numbers.",
                                    GREEDY_TOKENS)
    manifest, _, tokens = _real_model_in_the_browser(browser, test_site, tmp_path, qwen25_coder_05b_gguf,
                                                     "qwen25-coder-05b", reference, plain_text=False)
    assert {"q4_k", "q5_sym", "q6_k", "q8_sym"} <= _kept_formats(manifest)
    assert tokens == reference.tokens
