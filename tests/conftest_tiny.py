"""Tiny random Llama / Qwen2 models for build and numerics tests: Hugging Face folders
written by transformers (config.json, model.safetensors, tokenizer.json made with the
`tokenizers` library, tokenizer_config.json with a chat template), and helpers that
compile a model for `native-cpu` and run it with NativeLM.

Import what a test module needs, e.g. `from conftest_tiny import tiny_llama  # noqa: F401`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

VOCAB = 256
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
# A prompt longer than PREFILL_CHUNK, so native prefill runs in two chunks.
PROMPT = [1, 3, 17, 42, 99, 7, 201, 64, 5, 230, 11, 150, 4, 88, 19, 2, 77, 123, 250, 60]
PREFILL_CHUNK = 16
CONTEXT = 128
GREEDY_TOKENS = 16
# Seeds are tried in order until the model's greedy continuation of PROMPT is varied
# (at least MIN_DISTINCT_TOKENS distinct tokens, its second half not one token repeated)
# and every step's top-2 logit gap exceeds MIN_TOP2_GAP, so a difference within the
# logits tolerance (1e-4) cannot flip an argmax.
MIN_TOP2_GAP = 1e-3
MIN_DISTINCT_TOKENS = 5


def write_tokenizer(folder: Path) -> None:
    """A small BPE tokenizer (well under VOCAB entries) and a ChatML tokenizer_config.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "hello world, how are you today?",
              "What is the capital of France? Paris is.", "user assistant system"] * 10
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 16, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=[])
    tokenizer.train_from_iterator(corpus, trainer)
    assert tokenizer.get_vocab_size() <= VOCAB
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": CHAT_TEMPLATE, "bos_token": "<s>", "eos_token": "<|im_end|>",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }))


def random_model(arch: str, seed: int, **overrides):
    """A random transformers model; norm weights and (Qwen2) q/k/v biases are randomized
    too (transformers initializes them to ones and zeros, which would test nothing)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    settings = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                    rms_norm_eps=1e-6, tie_word_embeddings=False, initializer_range=0.1,
                    bos_token_id=1, eos_token_id=2)
    settings.update(overrides)
    config_class = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config,
                    "qwen3": transformers.Qwen3Config, "gemma3": transformers.Gemma3TextConfig,
                    "phi3": transformers.Phi3Config}[arch]
    model_class = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM,
                   "qwen3": transformers.Qwen3ForCausalLM, "gemma3": transformers.Gemma3ForCausalLM,
                   "phi3": transformers.Phi3ForCausalLM}[arch]
    torch.manual_seed(seed)
    model = model_class(config_class(**settings)).eval()
    generator = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith(".bias"):
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
    return model


def hf_greedy(model, prompt: list[int], tokens: int, stop: list[int] | None = None) -> tuple[list[int], float]:
    """transformers' greedy continuation (up to and including a `stop` token; with none,
    always `tokens` tokens) and the smallest top-2 logit gap along it."""
    import torch

    model.generation_config.eos_token_id = stop
    with torch.no_grad():
        # An explicit mask: without one transformers masks out every token equal to pad_token_id.
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=tokens,
                             min_new_tokens=0, pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    gaps = [float(torch.topk(s[0], 2).values.diff().abs()) for s in out.scores]
    return out.sequences[0, len(prompt):].tolist(), min(gaps)


def hf_logits(model, prompt: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0, -1].numpy()


@dataclass
class TinyModel:
    arch: str
    seed: int
    model: object  # the transformers model
    folder: Path
    greedy: list[int]  # transformers' greedy continuation of PROMPT


def make_tiny(folder: Path, arch: str, first_seed: int = 0, **overrides) -> TinyModel:
    """The first seed from `first_seed` whose model's greedy output is varied, saved to `folder`."""
    for seed in range(first_seed, first_seed + 50):
        model = random_model(arch, seed, **overrides)
        greedy, gap = hf_greedy(model, PROMPT, GREEDY_TOKENS)
        varied = len(set(greedy)) >= MIN_DISTINCT_TOKENS and len(set(greedy[GREEDY_TOKENS // 2:])) >= 2
        if varied and gap > MIN_TOP2_GAP:
            break
    else:
        raise AssertionError(f"no {arch} seed in 50 gives a varied, well-separated greedy output")
    model.save_pretrained(folder)
    write_tokenizer(folder)
    return TinyModel(arch, seed, model, folder, greedy)


# One of each per session: a fixture imported into several test modules is set up once
# per module, so the models themselves are kept here.
_MADE: dict[str, TinyModel] = {}


def _session_tiny(tmp_path_factory, arch: str, key: str | None = None, **overrides) -> TinyModel:
    key = key or arch
    if key not in _MADE:
        _MADE[key] = make_tiny(tmp_path_factory.mktemp("models") / f"tiny-{key}", arch, **overrides)
    return _MADE[key]


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> TinyModel:
    return _session_tiny(tmp_path_factory, "llama")


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> TinyModel:
    # Qwen2's own config defaults (sliding-window fields, 32k context) with a real Qwen2 rope base.
    return _session_tiny(tmp_path_factory, "qwen2", rope_theta=1e6, max_position_embeddings=32768)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> TinyModel:
    # Qwen3's shape: head_dim set apart from hidden / heads (q is 128 wide, hidden 64), q/k norms,
    # no biases, tied embeddings, rope base 1e6.
    return _session_tiny(tmp_path_factory, "qwen3", head_dim=32, rope_theta=1e6, tie_word_embeddings=True,
                         max_position_embeddings=40960)


# Gemma 3 at a scale where every difference shows on PROMPT (20 tokens) and its continuation:
# a window of 64 keys (the build's context window: sequences stay within it); sliding and global
# layers with rope bases
# 1e4 and 1e6; a softmax scale (query_pre_attn_scalar 24) apart from 1/sqrt(head_dim); logits
# soft-capped at 8; norms scaling by 1 + weight; embeddings scaled by sqrt(64) = 8.
GEMMA3_LAYERS = ("sliding_attention", "sliding_attention", "full_attention", "sliding_attention")
GEMMA3_WINDOW = 64


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> TinyModel:
    return _session_tiny(tmp_path_factory, "gemma3", head_dim=16, num_hidden_layers=len(GEMMA3_LAYERS),
                         layer_types=list(GEMMA3_LAYERS), sliding_window=GEMMA3_WINDOW, query_pre_attn_scalar=24,
                         final_logit_softcapping=8.0, tie_word_embeddings=True, max_position_embeddings=4096,
                         pad_token_id=0)


# Phi-3 as Phi-4-mini shapes it: fused qkv_proj and gate_up_proj, LongRoPE (short divisors
# between 1 and 3 on the 6 rotary pairs; original context 64 of 4096, so cos/sin are scaled by
# sqrt(1 + ln 64 / ln 64)) and rope on 12 of each head's 16 dims (partial_rotary_factor 0.75).
PHI3_SHORT_FACTOR = [1.0, 1.4, 1.9, 2.3, 2.6, 3.0]
PHI3_ORIGINAL_CONTEXT = 64


@pytest.fixture(scope="session")
def tiny_phi3(tmp_path_factory) -> TinyModel:
    rope = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": PHI3_SHORT_FACTOR,
            "long_factor": [4.0 * f for f in PHI3_SHORT_FACTOR], "partial_rotary_factor": 0.75,
            "original_max_position_embeddings": PHI3_ORIGINAL_CONTEXT}
    return _session_tiny(tmp_path_factory, "phi3", head_dim=16, max_position_embeddings=4096,
                         original_max_position_embeddings=PHI3_ORIGINAL_CONTEXT, rope_parameters=rope,
                         partial_rotary_factor=0.75, sliding_window=None, pad_token_id=0)


# Llama 3.x rope scaling at a scale where the prompt sees all three regimes: with head_dim 16
# and base 1e4 the rotary wavelengths are 6.3, 20, 63, 199, ... positions; those below
# 64 / 4 = 16 are kept, above 64 divided by 8, and 20 and 63 are smoothed in between.
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}


@pytest.fixture(scope="session")
def tiny_llama3(tmp_path_factory) -> TinyModel:
    return _session_tiny(tmp_path_factory, "llama", "llama3", rope_scaling=dict(LLAMA3_ROPE))


# --- native compile and run --------------------------------------------------------


@dataclass
class Native:
    lm: object  # NativeLM
    params: dict[str, np.ndarray]  # converted parameters by name, in the packed order
    plan: object  # WeightPlan


def compile_native(source, plan, out: Path, dtype: str = "float32", prefill_chunk: int = PREFILL_CHUNK,
                   context: int = CONTEXT) -> Native:
    """Compiles `source` with `plan` for native-cpu and loads it with its converted weights."""
    from webkiln.compile.build import build_module
    from webkiln.compile.native import NativeLM
    from webkiln.compile.targets import get_target
    from webkiln.models.llm import export
    from webkiln.quant.convert import convert_params

    mod, spec = export(source.config, plan, dtype, get_target("native-cpu").tvm_target(), prefill_chunk)
    lib = build_module(mod, "native-cpu", out)
    params = dict(convert_params(source, plan, dtype, spec))
    assert list(params) == [name for name, _, _ in spec]
    return Native(NativeLM(lib, list(params.values()), context, prefill_chunk), params, plan)


def export_params(source, plan, dtype: str = "float32") -> list[tuple[str, tuple, str]]:
    """The model's (name, shape, dtype) parameters in the packed order, without compiling."""
    from webkiln.models.llm import build_model_class

    model = build_model_class()(source.config, plan, dtype, None)
    return [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in model.named_parameters()]


def dequantized_state(source, plan, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face name -> the float32 matrix the kernels see: each stored (fused) matrix
    dequantized with its format's NumPy reference and split back into source tensors."""
    from webkiln.quant.convert import matrix_sources

    state = {}
    for path, names in matrix_sources(source).items():
        fmt = plan.format_of(path)
        prefix = path if path == "lm_head" else f"{path}.w"
        parts = fmt.param_specs(1, 32, "float32")  # only the part names matter
        matrix = fmt.dequantize({part: params[f"{prefix}.{part}"] for part in parts})
        rows = np.cumsum([source.tensors[n].shape[0] for n in names])[:-1]
        state.update(zip(names, np.split(matrix, rows, axis=0)))
    return state


def _fused_as(current: dict, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Llama's q/k/v and gate/up fused back into Phi-3's qkv_proj / gate_up_proj where the model has those."""
    fused = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
    out = dict(state)
    for name in current:
        for whole, parts in fused.items():
            if name.endswith(f".{whole}.weight") and name not in state:
                names = [name.replace(whole, part) for part in parts]
                if all(n in state for n in names):
                    out[name] = np.concatenate([out.pop(n) for n in names], axis=0)
    return out


def with_weights(model, state: dict[str, np.ndarray]):
    """A copy of the transformers model with some weights replaced."""
    import copy

    import torch

    clone = copy.deepcopy(model)
    current = clone.state_dict()
    state = _fused_as(current, state)
    for name, value in state.items():
        assert current[name].shape == value.shape, name
    clone.load_state_dict({name: torch.from_numpy(np.ascontiguousarray(v)) for name, v in state.items()},
                          strict=False)
    return clone
