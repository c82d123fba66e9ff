"""Independent reference for chat generation: Hugging Face `transformers` with
PyTorch on the CPU, on the same GGUF weights (dequantized by transformers)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Reference:
    prompt_ids: list[int]
    prompt_text: str
    tokens: list[int]
    logits: list[np.ndarray]  # logits before each generated token


@functools.lru_cache(maxsize=2)
def _load(gguf_path: str):
    import torch
    import transformers

    path = Path(gguf_path)
    tok = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return tok, model


def greedy(gguf_path: Path, user_message: str, max_new_tokens: int) -> Reference:
    tok, _ = _load(str(gguf_path))
    messages = [{"role": "user", "content": user_message}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return _greedy_ids(gguf_path, text, tok(text, add_special_tokens=False)["input_ids"], max_new_tokens)


def greedy_text(gguf_path: Path, text: str, max_new_tokens: int) -> Reference:
    """A base model's continuation of plain text (the tokenizer's own BOS added, no template)."""
    tok, _ = _load(str(gguf_path))
    return _greedy_ids(gguf_path, text, tok(text)["input_ids"], max_new_tokens)


def _greedy_ids(gguf_path: Path, text: str, ids: list[int], max_new_tokens: int) -> Reference:
    import torch

    _, model = _load(str(gguf_path))
    # Greedy decoding written out over raw logits: `generate()` may apply logits
    # processors from the model's generation config, which would make it not a
    # plain argmax reference.
    tokens: list[int] = []
    logits: list[np.ndarray] = []
    with torch.no_grad():
        out = model(torch.tensor([ids]), use_cache=True)
        for _ in range(max_new_tokens):
            step = out.logits[0, -1].float().numpy()
            logits.append(step)
            tokens.append(int(np.argmax(step)))
            out = model(torch.tensor([[tokens[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return Reference(list(ids), text, tokens, logits)
