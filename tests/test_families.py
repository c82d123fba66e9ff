"""Model families beyond Llama and Qwen2, each checked against transformers on the same weights:
Qwen3 (an RMSNorm over each head of q and k, no biases, head_dim apart from hidden / heads)
and Llama 3.x rope scaling (`rope_type: llama3`). Tiny random models in the real layout
(transformers' own config classes, save_pretrained), natively (logits within 1e-4, 16 greedy
tokens), from a GGUF written the way llama.cpp writes the architecture, and in Chromium.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest_tiny import (  # noqa: F401  (session fixtures)
    GREEDY_TOKENS,
    LLAMA3_ROPE,
    MIN_TOP2_GAP,
    PROMPT,
    compile_native,
    dequantized_state,
    hf_greedy,
    hf_logits,
    tiny_llama3,
    tiny_qwen3,
    with_weights,
)
from webkiln.quant.convert import plan_weights
from webkiln.quant.schemes import get_scheme
from webkiln.sources import SourceError, load_source

LOGITS_TOLERANCE = 1e-4
FAMILIES = ("qwen3", "llama3")


def _tiny(request, family: str):
    return request.getfixturevalue(f"tiny_{family}")


def test_configs_carry_the_family_differences(tiny_qwen3, tiny_llama3):
    qwen3 = load_source(tiny_qwen3.folder).config
    assert (qwen3.architecture, qwen3.qk_norm, qwen3.attention_bias, qwen3.head_dim) == ("qwen3", True, False, 32)
    assert qwen3.tie_word_embeddings and qwen3.rope_scaling is None
    llama3 = load_source(tiny_llama3.folder).config
    assert llama3.architecture == "llama" and not llama3.qk_norm
    assert llama3.rope_scaling == {k: (v if k == "rope_type" else float(v)) for k, v in LLAMA3_ROPE.items()}


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


def test_the_family_difference_is_visible(tiny_qwen3, tiny_llama3):
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


# --- from GGUF, written as llama.cpp writes Qwen3 ---------------------------------------------


def write_qwen3_gguf(folder: Path, path: Path) -> None:
    """The tiny Qwen3 folder as llama.cpp's convert_hf_to_gguf.py lays Qwen3 out: arch `qwen3`,
    `attention.key_length` for head_dim, `attn_q_norm`/`attn_k_norm`, no Q/K permutation, no
    output tensor when tied. F32 norms, F16 matrices (its default `--outtype f16` for these)."""
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    state = load_file(folder / "model.safetensors")
    writer = gguf.GGUFWriter(path, "qwen3")
    for key, value in [("context_length", config["max_position_embeddings"]),
                       ("embedding_length", config["hidden_size"]), ("block_count", config["num_hidden_layers"]),
                       ("feed_forward_length", config["intermediate_size"]),
                       ("attention.head_count", config["num_attention_heads"]),
                       ("attention.head_count_kv", config["num_key_value_heads"]),
                       ("attention.key_length", config["head_dim"]), ("attention.value_length", config["head_dim"])]:
        writer.add_uint32(f"qwen3.{key}", value)
    writer.add_float32("qwen3.rope.freq_base", float(config["rope_parameters"]["rope_theta"]))
    writer.add_float32("qwen3.attention.layer_norm_rms_epsilon", config["rms_norm_eps"])
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
    names = {"model.embed_tokens": "token_embd", "model.norm": "output_norm",
             "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
             "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, value in state.items():
        base = name.rsplit(".", 1)[0]
        if base.startswith("model.layers."):
            _, _, layer, rest = base.split(".", 3)
            gguf_name = f"blk.{layer}.{names[rest]}.weight"
        else:
            gguf_name = f"{names[base]}.weight"
        writer.add_tensor(gguf_name, value.astype(np.float16 if value.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_qwen3_gguf_loads_as_the_folder_and_matches_transformers(tmp_path, tiny_qwen3):
    path = tmp_path / "tiny-qwen3.F16.gguf"
    write_qwen3_gguf(tiny_qwen3.folder, path)
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


def test_unsupported_architecture_and_rope_scaling_name_the_supported_ones(tmp_path, tiny_llama3):
    folder = tmp_path / "phi"
    shutil.copytree(tiny_llama3.folder, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "falcon"}))
    with pytest.raises(SourceError) as error:
        load_source(folder)
    assert "'falcon' is not supported" in str(error.value) and "qwen3" in str(error.value)
    rope = {**config["rope_parameters"], "rope_type": "yarn"}
    (folder / "config.json").write_text(json.dumps({**config, "rope_parameters": rope}))
    with pytest.raises(SourceError) as error:
        load_source(folder)
    assert "rope scaling 'yarn'" in str(error.value) and "llama3" in str(error.value)


# --- in Chromium ------------------------------------------------------------------------------


def test_families_in_the_browser_write_transformers_tokens(browser, test_site, tiny_qwen3, tiny_llama3, tmp_path):
    """build_web (q0f32, the WebGPU library) of each family; 16 greedy tokens on WebGPU equal
    transformers'."""
    from conftest import LiveServer
    from webkiln.package.chat_build import build_chat_model
    from webkiln.toolchain.link import LinkMode

    root = tmp_path / "site"
    shutil.copytree(test_site, root)
    built = {}
    for family, tiny in (("qwen3", tiny_qwen3), ("llama3", tiny_llama3)):
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
    assert got == {"qwen3": tiny_qwen3.greedy, "llama3": tiny_llama3.greedy}
