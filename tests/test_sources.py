"""Model sources: the real SmolLM2 GGUF, Hugging Face folders made from it by transformers,
small synthetic GGUFs and folders, and every malformed input the loaders must name.

References are independent of webkiln's code: the `gguf` package's dequantization,
transformers' GGUF loader (its own Q/K un-permutation) and tokenizer, and a NumPy block
decoder written here from the GGML block layouts.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest

from conftest_models import smollm2_gguf  # noqa: F401  (session fixture)
from webkiln.sources import SourceError, expected_shapes, load_source
from webkiln.sources.hub import ALLOW_PATTERNS, load_hub

# Strings whose ids must equal transformers' GGUF tokenizer and upstream's.
CORPUS = [
    "Hello, world!",
    "What is the capital of France?",
    "12345",
    "Numbers 12345 and 3.14159 and 1,000,000; ABC123def456",
    "def foo(x):\n    return x ** 2  # comment\n\tif a != b: pass",
    "Café naïve résumé façade Ångström",
    "你好，世界！这是一个测试。日本語のテキスト",
    "Россия и Українa, مرحبا بالعالم",
    "Emoji: 😀👍🏽🇺🇸 and ❤️",
    "  leading   and trailing runs   \t\ttabs\n\n\nnewlines \r\n",
    "I'm sure they'll say it's fine, don't you think? We've seen it.",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more<|endoftext|><repo_name>x",
    "   ",
    "",
]
# Non-ASCII numerals after a space: upstream SmolLM2 (tokenizer.json: Digits then
# ByteLevel) and llama.cpp ("smollm": \p{N} split first) cut the space off; transformers'
# GGUF converter has no digit split for "smollm" and merges "Ġ" with the numeral's first byte.
UPSTREAM_ONLY = {" ¼ cup": ["Ġ", "Â¼", "Ġcup"], "x² ①": ["x", "Â²", "Ġ", "â", "ĳ", "ł"]}


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def gguf_source(smollm2_gguf):  # noqa: F811
    return load_source(smollm2_gguf)


@pytest.fixture(scope="session")
def reference_reader(smollm2_gguf, gguf_source):  # noqa: F811
    """The file as `gguf.GGUFReader` parsed it. Reuses the loader's parse: a second one costs
    seconds and checks nothing more, since references come from the reader's raw tensor
    data through `gguf.quants.dequantize`, never through webkiln's code."""
    from webkiln.sources.gguf import _open_reader

    reader = _open_reader(smollm2_gguf)
    assert isinstance(reader, gguf.GGUFReader)
    return reader


@pytest.fixture(scope="session")
def gguf_values(gguf_source) -> dict[str, np.ndarray]:
    """Every tensor's dequantize(), computed once (the embedding alone is 28M values)."""
    return {name: tensor.dequantize() for name, tensor in gguf_source.tensors.items()}


@pytest.fixture(scope="session")
def transformers_reference(smollm2_gguf, reference_reader):  # noqa: F811
    """transformers' own GGUF load: the model and its float32 state dict as NumPy arrays."""
    import transformers
    from transformers import AutoModelForCausalLM

    transformers.logging.set_verbosity_error()
    # Speed only: transformers parses the file twice and rebuilds gguf's tensor-name
    # table once per module (~15 s here); hand it the parsed reader and a cached table.
    # Its name mapping, dequantization and Q/K un-permutation run unchanged.
    open_reader = gguf.GGUFReader
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "GGUFReader", lambda path, *args: (
            reference_reader if Path(path) == smollm2_gguf else open_reader(path, *args)))
        patch.setattr(gguf, "get_tensor_name_map", functools.lru_cache(maxsize=None)(gguf.get_tensor_name_map))
        model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    # Views of the float32 parameters; they outlive hf_folder's cast of the model to bf16.
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    return model, state


@pytest.fixture(scope="session")
def transformers_tokenizer(smollm2_gguf):  # noqa: F811
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def hf_folder(tmp_path_factory, transformers_reference, transformers_tokenizer) -> Path:
    """A Hugging Face folder as transformers writes it (bf16 weights, tokenizer files)."""
    import torch

    model, _ = transformers_reference
    folder = tmp_path_factory.mktemp("smollm2-hf")
    # A GGUF-loaded model refuses save_pretrained while it remembers its quantizer; the
    # weights are already dequantized, so forget it.
    model.hf_quantizer = None
    model.config.__dict__.pop("quantization_config", None)
    model.to(torch.bfloat16).save_pretrained(folder)
    transformers_tokenizer.save_pretrained(folder)
    return folder


def assert_equal(actual: np.ndarray, expected: np.ndarray, err_msg: str = "") -> None:
    """Bit-exact comparison; NumPy's detailed report only when it fails (it is slow on 28M values)."""
    if not (actual.shape == expected.shape and np.array_equal(actual, expected)):
        np.testing.assert_array_equal(actual, expected, err_msg=err_msg)


def _bf16(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 (round to nearest even, as torch does) -> float32."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(values)).bfloat16().float().numpy()


# --- GGUF: config, names, values ---------------------------------------------------


def test_gguf_config(gguf_source, smollm2_gguf):  # noqa: F811
    config = gguf_source.config
    assert (config.architecture, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert (config.intermediate_size, config.vocab_size, config.context_length) == (1536, 49152, 8192)
    assert config.rope_theta == 1e5 and config.tie_word_embeddings and not config.attention_bias
    assert config.rms_norm_eps == pytest.approx(1e-5)
    assert gguf_source.kind == "gguf" and gguf_source.name == "SmolLM2-135M-Instruct"
    assert gguf_source.files == [smollm2_gguf]
    assert gguf_source.bos_token_id == 1 and gguf_source.eos_token_ids == [2]  # eos is <|im_end|> itself
    assert gguf_source.chat_template.startswith("{% for message in messages %}")
    assert gguf_source.generation_defaults == {}


def test_gguf_tensor_names_types_and_shapes(gguf_source):
    tensors = gguf_source.tensors
    assert {n: t.shape for n, t in tensors.items()} == expected_shapes(gguf_source.config)
    types = [t.ggml_type for t in tensors.values()]
    assert types.count("Q4_1") == 210 and types.count("F32") == 61
    assert tensors["model.embed_tokens.weight"].ggml_type == "Q8_0"
    assert "lm_head.weight" not in tensors  # tied


def _gguf_row_of_hf_row(rows: int, head_dim: int) -> np.ndarray:
    """llama.cpp stores HF row j of a head (j < half) at 2j and row half + j at 2j + 1."""
    hf = np.arange(rows)
    head, within = hf // head_dim, hf % head_dim
    half = head_dim // 2
    return head * head_dim + np.where(within < half, 2 * within, 2 * (within - half) + 1)


def test_gguf_dequantize_equals_gguf_package(gguf_source, gguf_values, reference_reader):
    config = gguf_source.config
    by_gguf_name = {t.name: t for t in reference_reader.tensors}
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    parts = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    assert len(by_gguf_name) == len(gguf_source.tensors)
    for gguf_name, tensor in by_gguf_name.items():
        part = None
        if gguf_name.startswith("blk."):
            _, layer, part, _ = gguf_name.split(".")
            hf_name = f"model.layers.{layer}.{parts[part]}.weight"
        else:
            hf_name = names[gguf_name]
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type).reshape(gguf_source.tensors[hf_name].shape)
        if part in ("attn_q", "attn_k"):
            expected = expected[_gguf_row_of_hf_row(expected.shape[0], config.head_dim)]
        actual = gguf_values[hf_name]
        assert actual.dtype == np.float32
        assert_equal(actual, expected, err_msg=hf_name)


def test_gguf_values_equal_transformers_state_dict(gguf_values, transformers_reference):
    """transformers un-permutes Q/K its own way; every tensor must agree bit for bit."""
    _, state = transformers_reference
    for name, values in gguf_values.items():
        assert_equal(values, state[name], err_msg=name)
    # The tied head is the embedding.
    assert_equal(state["lm_head.weight"], state["model.embed_tokens.weight"])


# --- raw blocks, decoded here from the GGML layouts ---------------------------------


def _decode_blocks(raw: np.ndarray, ggml_type: str) -> np.ndarray:
    """Own decoder: Q8_0 = f16 d, 32 x int8; Q4_0 = f16 d, 16 bytes of nibbles (q - 8);
    Q4_1 = f16 d, f16 m, 16 bytes of nibbles. Low nibbles are elements 0-15, high 16-31."""
    block_bytes = {"Q8_0": 34, "Q4_0": 18, "Q4_1": 20}[ggml_type]
    rows = raw.shape[0]
    blocks = np.ascontiguousarray(raw).reshape(rows, -1, block_bytes)
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    if ggml_type == "Q8_0":
        return (d * blocks[..., 2:].copy().view(np.int8).astype(np.float32)).reshape(rows, -1)
    packed = blocks[..., 4:] if ggml_type == "Q4_1" else blocks[..., 2:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=-1).astype(np.float32)
    if ggml_type == "Q4_0":
        return (d * (q - 8)).reshape(rows, -1)
    m = blocks[..., 2:4].copy().view(np.float16).astype(np.float32)
    return (d * q + m).reshape(rows, -1)


@pytest.mark.parametrize("name", [
    "model.embed_tokens.weight",  # Q8_0
    "model.layers.0.self_attn.q_proj.weight",  # Q4_1, rows un-permuted
    "model.layers.7.self_attn.k_proj.weight",  # Q4_1, rows un-permuted (kv heads)
    "model.layers.29.mlp.down_proj.weight",  # Q4_1
])
def test_raw_blocks_decode_to_dequantized(gguf_source, gguf_values, name):
    tensor = gguf_source.tensors[name]
    raw = tensor.raw()
    assert raw.dtype == np.uint8 and raw.shape[0] == tensor.shape[0]
    assert_equal(_decode_blocks(raw, tensor.ggml_type), gguf_values[name])


def test_raw_float_tensor_is_stored_array(gguf_source):
    norm = gguf_source.tensors["model.layers.3.input_layernorm.weight"]
    assert norm.raw().dtype == np.float32 and norm.raw().shape == (576,)
    assert_equal(norm.raw(), norm.dequantize())


# --- tokenizer ---------------------------------------------------------------------


def test_gguf_tokenizer_matches_transformers(gguf_source, transformers_tokenizer):
    from tokenizers import Tokenizer

    ours = Tokenizer.from_str(gguf_source.tokenizer_json)
    for text in CORPUS:
        ids = ours.encode(text).ids
        assert ids == transformers_tokenizer(text)["input_ids"], text
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert ours.encode("<|im_start|>user").ids[0] == 1 and ours.encode("a<|im_end|>").ids[-1] == 2
    assert ours.get_vocab_size() == 49152


def test_gguf_tokenizer_follows_upstream_pre_tokenizer(gguf_source):
    """Upstream SmolLM2's tokenizer.json pre-tokenizer: Digits(individual) then ByteLevel."""
    from tokenizers import Tokenizer

    spec = json.loads(gguf_source.tokenizer_json)["pre_tokenizer"]
    assert [step["type"] for step in spec["pretokenizers"]] == ["Digits", "ByteLevel"]
    assert spec["pretokenizers"][0]["individual_digits"] is True
    ours = Tokenizer.from_str(gguf_source.tokenizer_json)
    for text, tokens in UPSTREAM_ONLY.items():
        assert ours.encode(text).tokens == tokens, text
    assert ours.encode("12345").tokens == list("12345")


# --- Hugging Face folders ----------------------------------------------------------


def test_hf_folder_from_transformers(hf_folder, gguf_source, transformers_reference, transformers_tokenizer):
    from tokenizers import Tokenizer

    source = load_source(hf_folder)
    assert source.kind == "hf-folder" and source.config == gguf_source.config
    _, state = transformers_reference
    assert set(source.tensors) == set(expected_shapes(source.config))
    for name, tensor in source.tensors.items():
        assert tensor.ggml_type is None and tensor.shape == gguf_source.tensors[name].shape
        assert_equal(tensor.dequantize(), _bf16(state[name]), err_msg=name)
    assert source.chat_template == gguf_source.chat_template
    assert source.bos_token_id == 1 and source.eos_token_ids[0] == 2
    tokenizer = Tokenizer.from_str(source.tokenizer_json)
    for text in CORPUS:
        assert tokenizer.encode(text).ids == transformers_tokenizer(text)["input_ids"], text
    assert hf_folder / "model.safetensors" in source.files


def _tiny_model(model_type: str, **overrides):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

    config_class = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[model_type]
    settings = dict(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    rms_norm_eps=1e-6, tie_word_embeddings=False)
    settings.update(overrides)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config_class(**settings))


def _tiny_folder(tmp_path: Path, gguf_source, model_type: str, max_shard_size: str | None = None,
                 **overrides) -> tuple[Path, dict[str, np.ndarray]]:
    model = _tiny_model(model_type, **overrides)
    folder = tmp_path / model_type
    model.save_pretrained(folder, **({"max_shard_size": max_shard_size} if max_shard_size else {}))
    (folder / "tokenizer.json").write_text(gguf_source.tokenizer_json, encoding="utf-8")
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    return folder, state


def test_sharded_folder(tmp_path, gguf_source):
    folder, state = _tiny_folder(tmp_path, gguf_source, "llama", max_shard_size="40KB", head_dim=32)
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    source = load_source(folder)
    assert source.config.head_dim == 32 and source.config.num_key_value_heads == 2
    assert set(source.tensors) == set(expected_shapes(source.config))
    for name, tensor in source.tensors.items():
        assert tensor.raw().dtype == np.float32
        assert_equal(tensor.dequantize(), state[name], err_msg=name)
    assert set(shards) <= set(source.files)


def test_qwen2_folder(tmp_path, gguf_source):
    folder, state = _tiny_folder(tmp_path, gguf_source, "qwen2", rope_theta=1e6)
    (folder / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [2, 0], "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{{ '<|im_start|>' }}x{{ '<|im_end|>' }}", "eos_token": "<|im_end|>"}))
    source = load_source(folder)
    config = source.config
    assert config.architecture == "qwen2" and config.attention_bias and not config.tie_word_embeddings
    assert config.rope_theta == 1e6 and "model.layers.1.self_attn.k_proj.bias" in source.tensors
    for name, tensor in source.tensors.items():
        assert_equal(tensor.dequantize(), state[name], err_msg=name)
    assert source.eos_token_ids == [2, 0]
    assert source.generation_defaults == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert source.chat_template.startswith("{{ '<|im_start|>' }}")


def test_float16_folder_raw_keeps_dtype(tmp_path, gguf_source):
    import torch

    model = _tiny_model("llama").to(torch.float16)
    model.save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").write_text(gguf_source.tokenizer_json, encoding="utf-8")
    tensor = load_source(tmp_path).tensors["model.layers.0.mlp.up_proj.weight"]
    assert tensor.raw().dtype == np.float16 and tensor.dequantize().dtype == np.float32
    assert_equal(tensor.dequantize(), model.state_dict()[tensor.name].float().numpy())


# --- synthetic GGUFs: Qwen2 (no permutation, biases), Q4_0, llama.cpp-permuted Q/K ----


def _byte_level_vocab() -> tuple[list[str], list[int], list[str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + list(bytes_to_unicode().values()) + ["Ġt", "he", "Ġthe"]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), 320)]
    types = [3] * len(specials) + [1] * (len(tokens) - len(specials))
    return tokens, types, ["Ġ t", "h e", "Ġt he"]


def _llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Llama Q/K rows (the inverse of the loader's job)."""
    rows = weights.shape[0]
    return weights.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2).reshape(weights.shape)


def write_tiny_gguf(path: Path, arch: str = "qwen2", qtype: str = "Q4_0", *, tokenizer_model: str = "gpt2",
                    pre: str = "qwen2", with_tokenizer: bool = True) -> dict[str, np.ndarray]:
    """A 2-layer model; returns the HF-layout float weights written (before quantization)."""
    rng = np.random.default_rng(0)
    hidden, heads, kv_heads, ffn, layers = 64, 4, 2, 96 + 32, 2
    head_dim = hidden // heads
    tokens, types, merges = _byte_level_vocab()
    hf: dict[str, np.ndarray] = {}
    writer = gguf.GGUFWriter(path, arch)
    for key, value in [("context_length", 512), ("embedding_length", hidden), ("block_count", layers),
                       ("feed_forward_length", ffn), ("attention.head_count", heads),
                       ("attention.head_count_kv", kv_heads)]:
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", 1e6)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    if with_tokenizer:
        writer.add_tokenizer_model(tokenizer_model)
        writer.add_tokenizer_pre(pre)
        writer.add_token_list(tokens)
        writer.add_token_types(types)
        writer.add_token_merges(merges)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(0)
        writer.add_chat_template("{{ '<|im_start|>' }}{{ '<|im_end|>' }}")

    def add(gguf_name: str, hf_name: str, shape: tuple[int, ...], kind: str, permute_heads: int = 0) -> None:
        values = hf[hf_name] = rng.standard_normal(shape).astype(np.float32)
        stored = _llama_cpp_permute(values, permute_heads) if permute_heads else values
        if kind == "F32":
            writer.add_tensor(gguf_name, stored)
        else:
            qt = gguf.GGMLQuantizationType[kind]
            writer.add_tensor(gguf_name, gguf.quants.quantize(stored, qt), raw_dtype=qt)

    add("token_embd.weight", "model.embed_tokens.weight", (len(tokens), hidden), "F32" if qtype == "F32" else "Q8_0")
    add("output_norm.weight", "model.norm.weight", (hidden,), "F32")
    add("output.weight", "lm_head.weight", (len(tokens), hidden), "F16" if qtype == "F32" else qtype)
    for i in range(layers):
        p = f"model.layers.{i}."
        permute = arch == "llama"
        add(f"blk.{i}.attn_q.weight", p + "self_attn.q_proj.weight", (hidden, hidden), qtype, heads * permute)
        add(f"blk.{i}.attn_k.weight", p + "self_attn.k_proj.weight", (kv_heads * head_dim, hidden), qtype,
            kv_heads * permute)
        add(f"blk.{i}.attn_v.weight", p + "self_attn.v_proj.weight", (kv_heads * head_dim, hidden), qtype)
        add(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", (hidden, hidden), qtype)
        add(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", (ffn, hidden), qtype)
        add(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", (ffn, hidden), qtype)
        add(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", (hidden, ffn), qtype)
        add(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", (hidden,), "F32")
        add(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", (hidden,), "F32")
        if arch == "qwen2":
            add(f"blk.{i}.attn_q.bias", p + "self_attn.q_proj.bias", (hidden,), "F32")
            add(f"blk.{i}.attn_k.bias", p + "self_attn.k_proj.bias", (kv_heads * head_dim,), "F32")
            add(f"blk.{i}.attn_v.bias", p + "self_attn.v_proj.bias", (kv_heads * head_dim,), "F32")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_synthetic_gguf_q4_0_matches_transformers(tmp_path, arch):
    import transformers
    from transformers import AutoModelForCausalLM

    path = tmp_path / f"tiny-{arch}.Q4_0.gguf"
    write_tiny_gguf(path, arch, "Q4_0")
    source = load_source(path)
    assert source.name == f"tiny-{arch}" and source.config.attention_bias == (arch == "qwen2")
    assert not source.config.tie_word_embeddings and source.eos_token_ids == [0, 2]
    transformers.logging.set_verbosity_error()
    state = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name).state_dict()
    for name, tensor in source.tensors.items():
        assert_equal(tensor.dequantize(), state[name].numpy(), err_msg=name)
        if tensor.ggml_type == "Q4_0":
            assert_equal(_decode_blocks(tensor.raw(), "Q4_0"), tensor.dequantize(), err_msg=name)
    # Qwen2's split: digits one by one, NFC, the special tokens whole.
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(source.tokenizer_json)
    assert tokenizer.encode("<|im_start|> the 42").tokens == ["<|im_start|>", "Ġthe", "Ġ", "4", "2"]
    assert tokenizer.encode("e\u0301").ids == tokenizer.encode("\u00e9").ids


def test_synthetic_llama_gguf_unpermutes_exactly(tmp_path):
    """F32 Q/K written permuted the llama.cpp way load back as the original HF rows."""
    path = tmp_path / "tiny.gguf"
    written = write_tiny_gguf(path, "llama", "F32")
    written["lm_head.weight"] = written["lm_head.weight"].astype(np.float16).astype(np.float32)  # stored F16
    source = load_source(path)
    for name, tensor in source.tensors.items():
        assert_equal(tensor.dequantize(), written[name], err_msg=name)
    assert source.tensors["lm_head.weight"].raw().dtype == np.float16  # F16 raw keeps its dtype


# --- errors ------------------------------------------------------------------------


def _error(spec) -> str:
    with pytest.raises(SourceError) as info:
        load_source(spec)
    return str(info.value)


def test_missing_path(tmp_path):
    message = _error(tmp_path / "nowhere.gguf")
    assert "nowhere.gguf" in message and "does not exist" in message


def test_gguf_bad_magic(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"GGML" + bytes(100))
    message = _error(path)
    assert "bad.gguf" in message and "not a GGUF file" in message


@pytest.mark.parametrize("keep", [1_000, 60_000])  # in the header, in the token list (tensor data: below)
def test_gguf_truncated(tmp_path, smollm2_gguf, keep):  # noqa: F811
    path = tmp_path / "cut.gguf"
    with open(smollm2_gguf, "rb") as source:
        path.write_bytes(source.read(keep))
    message = _error(path)
    assert "cut.gguf" in message and "truncated" in message


def test_gguf_truncated_in_last_tensor(tmp_path):
    path = tmp_path / "tiny.gguf"
    write_tiny_gguf(path, "qwen2", "Q8_0")
    data = path.read_bytes()
    path.write_bytes(data[:-100])  # the last tensor loses its end
    message = _error(path)
    assert "tiny.gguf" in message and "truncated" in message


def test_gguf_unsupported_architecture(tmp_path):
    path = tmp_path / "gemma2.gguf"
    writer = gguf.GGUFWriter(path, "gemma2")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = _error(path)
    assert "gemma2.gguf" in message and "'gemma2'" in message and "llama, qwen2, qwen3, gemma3, phi3" in message


def test_gguf_without_tokenizer(tmp_path):
    path = tmp_path / "notok.gguf"
    write_tiny_gguf(path, with_tokenizer=False)
    message = _error(path)
    assert "notok.gguf" in message and "tokenizer" in message


def test_gguf_unsupported_tokenizer_model(tmp_path):
    path = tmp_path / "wordpiece.gguf"
    write_tiny_gguf(path, tokenizer_model="bert")
    message = _error(path)
    assert "wordpiece.gguf" in message and "'bert'" in message and "tokenizer.ggml.model" in message
    assert "'gpt2'" in message and "'llama'" in message  # what is supported


@pytest.mark.parametrize("order", ["score", "position"])
def test_sentencepiece_merges_are_recovered_in_the_files_order(order):
    """A SentencePiece vocabulary (GGUF `llama`) lists no merges: every split of a token into two
    tokens is one, ranked by the token it makes (its score, or for Gemma its place in the list).
    Spaces become "▁" (and one is prefixed when the file says so), unknown bytes fall back to
    <0xNN> tokens, and a whitespace token stored with real spaces is found by its "▁" spelling."""
    from tokenizers import Tokenizer

    from webkiln.sources.tokenizer import GgufTokenizerSpec, tokenizer_json_from_gguf

    tokens = ["<unk>", "<s>", "</s>", "<0x0A>", "\u2581", "t", "h", "e", "th", "\u2581th", "\u2581the", "he", "  "]
    # The scores fall along the list, so both rankings agree: "th" first, "he" last.
    scores = [0, 0, 0, 0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
    spec = GgufTokenizerSpec(model="llama", pre="default", tokens=tokens, token_types=[2, 3, 3, 6] + [1] * 9,
                             merges=[], bos_token_id=1, eos_token_id=2, add_bos_token=True, add_eos_token=False,
                             scores=scores, unknown_token_id=0, add_space_prefix=True)
    tokenizer = Tokenizer.from_str(tokenizer_json_from_gguf(spec, "spec", order))
    ids = tokenizer.encode("the\n").ids
    assert ids == [1, tokens.index("\u2581the"), tokens.index("<0x0A>")]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the\n"
    assert tokenizer.encode("t  ", add_special_tokens=False).ids == [tokens.index("\u2581"), tokens.index("t"),
                                                                     tokens.index("  ")]
    # Ranked the other way round, "he" merges first and "▁the" is never made.
    reversed_scores = dict(spec.__dict__, scores=[-s for s in scores])
    other = Tokenizer.from_str(tokenizer_json_from_gguf(GgufTokenizerSpec(**reversed_scores), "spec", "score"))
    assert other.encode("the", add_special_tokens=False).ids != [tokens.index("\u2581the")]


def test_gguf_unknown_pre_tokenizer(tmp_path):
    path = tmp_path / "pre.gguf"
    write_tiny_gguf(path, pre="mystery-split")
    message = _error(path)
    assert "pre.gguf" in message and "'mystery-split'" in message and "tokenizer.ggml.pre" in message


def test_tokenizer_adds_bos_when_the_gguf_says_so():
    from tokenizers import Tokenizer

    from webkiln.sources.tokenizer import GgufTokenizerSpec, tokenizer_json_from_gguf

    tokens, types, merges = _byte_level_vocab()
    spec = GgufTokenizerSpec(model="gpt2", pre="llama-bpe", tokens=tokens, token_types=types, merges=merges,
                             bos_token_id=1, eos_token_id=2, add_bos_token=True, add_eos_token=False)
    tokenizer = Tokenizer.from_str(tokenizer_json_from_gguf(spec, "spec"))
    assert tokenizer.encode(" the").ids == [1, tokens.index("Ġthe")]
    assert tokenizer.encode(" the", add_special_tokens=False).ids == [tokens.index("Ġthe")]


@pytest.fixture
def tiny_folder(tmp_path, gguf_source) -> Path:
    return _tiny_folder(tmp_path, gguf_source, "llama")[0]


def test_safetensors_header_beyond_file(tiny_folder):
    weights = tiny_folder / "model.safetensors"
    weights.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    message = _error(tiny_folder)
    assert "model.safetensors" in message and "header" in message


def test_safetensors_tensor_past_end(tiny_folder):
    weights = tiny_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    message = _error(tiny_folder)
    assert "model.safetensors" in message and "truncated" in message


def test_missing_shard(tmp_path, gguf_source):
    folder, _ = _tiny_folder(tmp_path, gguf_source, "llama", max_shard_size="40KB")
    sorted(folder.glob("model-*.safetensors"))[-1].unlink()
    message = _error(folder)
    assert "model-" in message and "missing" in message


def test_missing_tokenizer_json(tiny_folder):
    (tiny_folder / "tokenizer.json").unlink()
    message = _error(tiny_folder)
    assert "tokenizer.json" in message


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))


def test_missing_config_field(tiny_folder):
    _edit_config(tiny_folder, hidden_size=None)
    message = _error(tiny_folder)
    assert "config.json" in message and "hidden_size" in message


def test_weights_not_matching_config(tiny_folder):
    _edit_config(tiny_folder, vocab_size=301)
    message = _error(tiny_folder)
    assert "model.embed_tokens.weight" in message and "[300, 64]" in message and "[301, 64]" in message


def test_unsupported_model_type(tiny_folder):
    _edit_config(tiny_folder, model_type="gpt2")
    message = _error(tiny_folder)
    assert "config.json" in message and "'gpt2'" in message and "llama, qwen2" in message


def test_sliding_window_mistral_slides_every_layer_and_caps_the_context(tmp_path, gguf_source):
    from webkiln.package.chat_build import context_window_for

    folder, _ = _tiny_folder(tmp_path, gguf_source, "mistral", sliding_window=128)
    config = load_source(folder).config
    assert (config.architecture, config.sliding_window, config.layer_types) == (
        "llama", 128, ("sliding_attention",) * 2)
    notes: list[str] = []
    assert context_window_for(config, 2048, notes.append) == 128
    assert "the context window is 128 tokens" in notes[0]
    assert context_window_for(config, 100, notes.append) == 100 and len(notes) == 1
    config_path = folder / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "sliding_window": -3}))
    message = _error(folder)
    assert "config.json" in message and "`sliding_window`" in message and "-3" in message


def test_mistral_without_window_loads_as_llama(tmp_path, gguf_source):
    folder, state = _tiny_folder(tmp_path, gguf_source, "mistral", sliding_window=None)
    source = load_source(folder)
    assert source.config.architecture == "llama"
    assert_equal(source.tensors["lm_head.weight"].dequantize(), state["lm_head.weight"])


def test_folder_without_config(tmp_path):
    message = _error(tmp_path)
    assert "config.json" in message


# --- hub ---------------------------------------------------------------------------


def test_hub_unreachable_names_the_fallback():
    with pytest.raises(SourceError) as info:
        load_hub("webkiln-test/no-such-model", endpoint="http://127.0.0.1:9")
    message = str(info.value)
    assert "webkiln-test/no-such-model" in message and "could not be reached" in message
    assert ".gguf" in message and "folder" in message


def test_hub_id_downloads_then_loads_folder(monkeypatch, tmp_path, tiny_folder):
    """A chat model from a Hub (a local one: the real client, a real HTTP server): the folder's
    files that ALLOW_PATTERNS names are fetched, others are not, and the model loads as the folder does."""
    import huggingface_hub.constants
    from local_hub import LocalHub

    repo = tmp_path / "repo"
    shutil.copytree(tiny_folder, repo)
    (repo / "pytorch_model.bin").write_bytes(b"not needed")
    (repo / "onnx").mkdir()
    (repo / "onnx" / "model.onnx").write_bytes(b"not needed")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with LocalHub({"some-org/tiny-llama": repo}) as hub:
        source = load_hub("some-org/tiny-llama", endpoint=hub.endpoint)
        fetched = sorted(name for _, name in hub.downloaded)
    assert source.kind == "hub" and source.origin == "some-org/tiny-llama" and source.name == "tiny-llama"
    assert fetched == sorted(p.name for p in tiny_folder.iterdir() if p.is_file()
                             and any(fnmatch.fnmatch(p.name, pattern) for pattern in ALLOW_PATTERNS))
    assert "pytorch_model.bin" not in fetched and "config.json" in fetched
    local = load_source(tiny_folder)
    assert source.config == local.config and sorted(source.tensors) == sorted(local.tensors)
    # the Hub gone (closed port): the snapshot in the local cache is used
    again = load_hub("some-org/tiny-llama", endpoint="http://127.0.0.1:9")
    assert again.config == local.config and sorted(again.tensors) == sorted(local.tensors)


def test_hub_unknown_repository_is_named():
    from local_hub import LocalHub

    with LocalHub({}) as hub, pytest.raises(SourceError) as info:
        load_hub("some-org/missing", endpoint=hub.endpoint)
    assert "some-org/missing" in str(info.value) and "no such Hugging Face Hub repository" in str(info.value)


def test_existing_folder_wins_over_hub_id(monkeypatch, tmp_path, tiny_folder):
    """`org/name` that exists locally is a folder, not a download."""
    workdir = tmp_path / "work"
    shutil.copytree(tiny_folder, workdir / "org" / "name")
    write_tiny_gguf(workdir / "org" / "model.gguf")
    monkeypatch.chdir(workdir)
    assert load_source("org/name").kind == "hf-folder"
    assert load_source("org/model.gguf").kind == "gguf"
