"""Rebuild a Hugging Face `tokenizer.json` from the tokenizer a GGUF file describes.

A GGUF carries no `tokenizer.json`: llama.cpp stores the vocabulary, the merges, the
token kinds and the *name* of the pre-tokenizer (`tokenizer.ggml.pre`). The name stands
for the way the upstream `tokenizer.json` splits text before BPE, so each supported name
maps to the pre-tokenizer the upstream model ships. Only byte-level BPE (`gpt2`) is
supported, and SentencePiece BPE (`llama`, as in Gemma): its file lists no merges, so they are
recovered from the vocabulary (every split of a token into two tokens is a merge, ranked by the
token it makes), with byte fallback and spaces spelled "▁". Everything else is a SourceError
naming it, since a wrong tokenizer gives a model that runs and answers nonsense.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from ..model_source import SourceError

# GGUF `tokenizer.ggml.token_type` values (llama.cpp's llama_token_type).
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

# Split patterns from the upstream tokenizer.json files of these families.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class _PreTokenizerStyle:
    """How one `tokenizer.ggml.pre` family prepares text for BPE."""

    pre_tokenizer: Callable[[], pre_tokenizers.PreTokenizer]
    normalizer: Callable[[], normalizers.Normalizer] | None = None
    # Llama 3's BPE looks a whole pre-token up in the vocabulary before merging.
    ignore_merges: bool = False


def _gpt2_style() -> pre_tokenizers.PreTokenizer:
    # ByteLevel's built-in regex is GPT-2's split pattern.
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


def _digits_then_gpt2() -> pre_tokenizers.PreTokenizer:
    # StarCoder / SmolLM: every digit is its own pre-token, then GPT-2's split on the
    # rest (llama.cpp: the `\p{N}` split before the GPT-2 regex).
    return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), _gpt2_style()])


def _split_then_bytes(pattern: str) -> Callable[[], pre_tokenizers.PreTokenizer]:
    def build() -> pre_tokenizers.PreTokenizer:
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ])
    return build


_QWEN2_STYLE = _PreTokenizerStyle(_split_then_bytes(_QWEN2_SPLIT), normalizer=normalizers.NFC)
_LLAMA3_STYLE = _PreTokenizerStyle(_split_then_bytes(_LLAMA3_SPLIT), ignore_merges=True)
_DIGITS_STYLE = _PreTokenizerStyle(_digits_then_gpt2)

PRE_TOKENIZER_STYLES: dict[str, _PreTokenizerStyle] = {
    "gpt-2": _PreTokenizerStyle(_gpt2_style),
    "smollm": _DIGITS_STYLE,
    "starcoder": _DIGITS_STYLE,
    "qwen2": _QWEN2_STYLE,
    "deepseek-r1-qwen": _QWEN2_STYLE,
    "llama-bpe": _LLAMA3_STYLE,
    "llama3": _LLAMA3_STYLE,
    "llama-v3": _LLAMA3_STYLE,
    "smaug-bpe": _LLAMA3_STYLE,
}


@dataclass(frozen=True)
class GgufTokenizerSpec:
    """The tokenizer fields of a GGUF file (keys `tokenizer.ggml.*`)."""

    model: str
    pre: str | None
    tokens: Sequence[str]
    token_types: Sequence[int]
    merges: Sequence[str]
    bos_token_id: int | None
    eos_token_id: int | None
    add_bos_token: bool
    add_eos_token: bool
    scores: Sequence[float] = ()
    unknown_token_id: int | None = None
    add_space_prefix: bool = True


def spec_from_fields(fields: Mapping[str, Any], origin: str) -> GgufTokenizerSpec:
    """Pick the tokenizer fields out of GGUF metadata (key -> decoded value)."""
    if "tokenizer.ggml.model" not in fields or "tokenizer.ggml.tokens" not in fields:
        raise SourceError(
            f"{origin}: the GGUF file has no tokenizer (metadata `tokenizer.ggml.model` / "
            "`tokenizer.ggml.tokens` is missing). Use a GGUF converted with its tokenizer "
            "(llama.cpp's convert_hf_to_gguf.py includes it), or pass the Hugging Face folder instead."
        )
    tokens = list(fields["tokenizer.ggml.tokens"])
    token_types = list(fields.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if len(token_types) != len(tokens):
        raise SourceError(f"{origin}: GGUF `tokenizer.ggml.token_type` has {len(token_types)} entries for "
                          f"{len(tokens)} tokens; the file is corrupt, re-convert it.")
    return GgufTokenizerSpec(
        model=str(fields["tokenizer.ggml.model"]),
        pre=fields.get("tokenizer.ggml.pre"),
        tokens=tokens,
        token_types=token_types,
        merges=list(fields.get("tokenizer.ggml.merges") or []),
        bos_token_id=fields.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=fields.get("tokenizer.ggml.eos_token_id"),
        add_bos_token=bool(fields.get("tokenizer.ggml.add_bos_token", False)),
        add_eos_token=bool(fields.get("tokenizer.ggml.add_eos_token", False)),
        scores=list(fields.get("tokenizer.ggml.scores") or []),
        unknown_token_id=fields.get("tokenizer.ggml.unknown_token_id"),
        add_space_prefix=bool(fields.get("tokenizer.ggml.add_space_prefix", True)),
    )


def tokenizer_json_from_gguf(spec: GgufTokenizerSpec, origin: str, merge_order: str = "score") -> str:
    """The Hugging Face `tokenizer.json` text for a GGUF byte-level BPE or SentencePiece BPE
    tokenizer. `merge_order` ranks recovered SentencePiece merges: by the made token's "score",
    or by its "position" in the list (Gemma, whose scores do not follow its merge order)."""
    if spec.model == "llama":
        return _sentencepiece_json(spec, origin, merge_order)
    if spec.model != "gpt2":
        raise SourceError(
            f"{origin}: tokenizer model {spec.model!r} (GGUF `tokenizer.ggml.model`) is not supported; "
            "supported: byte-level BPE ('gpt2', as in SmolLM2, Qwen2 and Llama 3) and SentencePiece BPE "
            "('llama', as in Gemma). Pass the model's Hugging Face folder instead: its tokenizer.json is "
            "used as it is."
        )
    style = _style_for(spec.pre, origin)
    tokenizer = Tokenizer(_bpe_model(spec, style, origin))
    if style.normalizer is not None:
        tokenizer.normalizer = style.normalizer()
    tokenizer.pre_tokenizer = style.pre_tokenizer()
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = _post_processor(spec)
    _add_marked_tokens(tokenizer, spec)
    return tokenizer.to_str()


def _sentencepiece_json(spec: GgufTokenizerSpec, origin: str, merge_order: str) -> str:
    # Whitespace-only tokens are stored with real spaces (Gemma); the text reaches BPE with "▁".
    tokens = ["\u2581" * len(t) if t and not t.strip(" ") else t for t in spec.tokens]
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    if merge_order == "score":
        if len(spec.scores) != len(tokens):
            raise SourceError(f"{origin}: a SentencePiece GGUF tokenizer needs `tokenizer.ggml.scores` for every "
                              f"token ({len(spec.scores)} for {len(tokens)}); the file is corrupt, re-convert it.")
        rank = {t: -float(spec.scores[i]) for t, i in vocab.items()}
    else:
        rank = {t: float(i) for t, i in vocab.items()}
    candidates = []
    for token, token_rank in rank.items():
        for cut in range(len(token) - 1, 0, -1):  # longer left part first among one token's splits
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                candidates.append((token_rank, -len(left), left, right))
    candidates.sort(key=lambda c: (c[0], c[1]))
    unk = _token(spec, spec.unknown_token_id)
    try:
        model = models.BPE(vocab=vocab, merges=[(c[2], c[3]) for c in candidates], unk_token=unk and unk[0],
                           fuse_unk=True, byte_fallback=True)
    except Exception as error:  # tokenizers raises plain Exception
        raise SourceError(f"{origin}: the GGUF SentencePiece vocabulary cannot be read as BPE ({error}); "
                          "the file is corrupt, re-convert it.") from None
    tokenizer = Tokenizer(model)
    steps = [normalizers.Replace(" ", "\u2581")]
    if spec.add_space_prefix:
        steps.insert(0, normalizers.Prepend("\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    decode = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if spec.add_space_prefix:
        decode.append(decoders.Strip(" ", 1, 0))
    tokenizer.decoder = decoders.Sequence(decode)
    post = _post_processor(spec)
    if not isinstance(post, processors.ByteLevel):
        tokenizer.post_processor = post
    _add_marked_tokens(tokenizer, spec, tokens)
    return tokenizer.to_str()


def _style_for(pre: str | None, origin: str) -> _PreTokenizerStyle:
    if pre is None:
        pre = "gpt-2"  # files older than the `pre` key were converted with GPT-2's split
    style = PRE_TOKENIZER_STYLES.get(pre)
    if style is None:
        raise SourceError(
            f"{origin}: pre-tokenizer {pre!r} (GGUF `tokenizer.ggml.pre`) is not supported; supported: "
            f"{', '.join(sorted(PRE_TOKENIZER_STYLES))}. Pass the model's Hugging Face folder instead, "
            "whose tokenizer.json says how to split text."
        )
    return style


def _bpe_model(spec: GgufTokenizerSpec, style: _PreTokenizerStyle, origin: str) -> models.BPE:
    vocab: dict[str, int] = {}
    for index, token in enumerate(spec.tokens):
        # A repeated spelling can map to one id only; the first is the one BPE can reach.
        vocab.setdefault(token, index)
    merges: list[tuple[str, str]] = []
    for merge in spec.merges:
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right or " " in right:
            raise SourceError(f"{origin}: malformed merge {merge!r} in GGUF `tokenizer.ggml.merges`; "
                              "the file is corrupt, re-convert it.")
        merges.append((left, right))
    try:
        return models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False,
                          ignore_merges=style.ignore_merges)
    except Exception as error:  # tokenizers raises plain Exception on merges naming unknown tokens
        raise SourceError(f"{origin}: the GGUF tokenizer's merges do not fit its vocabulary ({error}); "
                          "the file is corrupt, re-convert it.") from None


def _post_processor(spec: GgufTokenizerSpec) -> processors.PostProcessor:
    bos = _token(spec, spec.bos_token_id) if spec.add_bos_token else None
    eos = _token(spec, spec.eos_token_id) if spec.add_eos_token else None
    if bos is None and eos is None:
        return processors.ByteLevel(trim_offsets=False)
    single = " ".join(p for p in (bos and f"{bos[0]}:0", "$A:0", eos and f"{eos[0]}:0") if p)
    pair = single + " " + " ".join(p for p in (bos and f"{bos[0]}:1", "$B:1", eos and f"{eos[0]}:1") if p)
    return processors.TemplateProcessing(single=single, pair=pair,
                                         special_tokens=[t for t in (bos, eos) if t is not None])


def _token(spec: GgufTokenizerSpec, token_id: int | None) -> tuple[str, int] | None:
    if token_id is None or not 0 <= token_id < len(spec.tokens):
        return None
    return spec.tokens[token_id], token_id


def _add_marked_tokens(tokenizer: Tokenizer, spec: GgufTokenizerSpec, tokens: Sequence[str] | None = None) -> None:
    """Control tokens (`<|im_start|>`) become special tokens, user-defined ones plain added
    tokens: both are matched whole in the text, as llama.cpp does, instead of being split."""
    special, added = [], []
    for token, kind in zip(spec.tokens if tokens is None else tokens, spec.token_types, strict=True):
        if kind == TOKEN_TYPE_CONTROL:
            special.append(AddedToken(token, special=True, normalized=False))
        elif kind == TOKEN_TYPE_USER_DEFINED:
            added.append(AddedToken(token, special=False, normalized=False))
    # The contents are in the BPE vocabulary, so they keep their GGUF ids.
    if special:
        tokenizer.add_special_tokens(special)
    if added:
        tokenizer.add_tokens(added)
