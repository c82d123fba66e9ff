"""Decoder-only chat models (the Llama family, Qwen2, Qwen3, Gemma 3) as a tvm.relax.frontend.nn module.

One module covers them: Qwen2 differs from Llama only by q/k/v biases, Qwen3 by an RMSNorm
over each head of q and k, and Llama 3.x by rope frequency scaling, which TVM's KV
cache applies; the config carries each difference. Gemma 3 adds a GeGLU MLP, norms around
attention and the MLP whose scale is 1 + weight, scaled embeddings, its own softmax scale
and sliding-window layers (5 of every 6) whose rope has another base. Phi-3 is Llama with
LongRoPE (per-pair frequency divisors, cos/sin scaled) and, in Phi-4-mini, rope on only part of
each head. Attention goes through TVM's paged KV cache (nn.llm), which also applies rotary
embeddings (Hugging Face "rotate half" layout; GGUF Llama weights are un-permuted on load),
except where the cache cannot (layers differing in rope base, LongRoPE, partial rotary): there
the model rotates q and k itself (`_rope_te`) at the cache's query positions.

Every linear and the embedding store their matrix in a WeightFormat chosen per
weight at build time (`WeightPlan`): GGUF Q4_0/Q4_1/Q8_0 blocks stay as they
are, other weights follow the quantization scheme. Dequantization is fused into
the matmul as one tensor expression, so no dequantized copy of a weight is ever
materialized.

Entry points (all take the packed parameter tuple last):
  embed(input_ids[seq_len] int32)                  -> [seq_len, hidden]
  prefill(input_embed[1, seq_len, hidden], kv)      -> (logits[1, 1, vocab] f32, kv)
  decode(input_embed[1, 1, hidden], kv)             -> (logits[1, 1, vocab] f32, kv)
  create_paged_kv_cache(max_batch_size, max_total_seq_len, prefill_chunk_size,
                        page_size, support_sliding_window) -> kv
"""

from __future__ import annotations

from ..compile import cpu_matmul
from ..compile.schedules import TOKEN_TILE_ATTR
from ..model_source import LlmConfig
from ..quant.formats import WeightFormat
from ..quant.plan import WeightPlan


def _matmul_te(x, fmt: WeightFormat, params: dict, out_f: int, in_f: int, dtype: str, name: str):
    """y[..., j] = sum_k x[..., k] * W[j, k] with W dequantized on the fly."""
    from tvm import te  # lazy, as in build_model_class

    k = te.reduce_axis((0, in_f), name="k")
    if len(x.shape) == 3:
        return te.compute(
            (x.shape[0], x.shape[1], out_f),
            lambda b, s, j: te.sum(x[b, s, k] * fmt.value_te(params, j, k, dtype), axis=k),
            name=name,
            attrs={TOKEN_TILE_ATTR: int(fmt.token_tiled)},
        )
    return te.compute(
        (x.shape[0], out_f),
        lambda s, j: te.sum(x[s, k] * fmt.value_te(params, j, k, dtype), axis=k),
        name=name,
    )


def _rope_te(x, positions, theta: float, rotary_dim: int, divisors: list[float] | None = None,
             scale: float = 1.0):
    """Hugging Face's "rotate half" rope on the first `rotary_dim` dims of x [b, s, heads,
    head_dim] at `positions` [b * s] (int32), in float32 as transformers computes it: inv_freq =
    1 / (divisor_i * theta^(2i/rotary_dim)), angle = position * inv_freq, cos and sin times
    `scale` (LongRoPE's divisors and attention factor; 1 otherwise)."""
    from tvm import te, tirx  # lazy, as in build_model_class

    half = rotary_dim // 2

    def value(b, s, h, j):
        i = tirx.floormod(j, half)
        base = tirx.power(tirx.const(theta, "float32"), tirx.Cast("float32", i * 2) / tirx.const(rotary_dim, "float32"))
        inv_freq = tirx.const(1.0, "float32") / (base if divisors is None else _select(i, divisors) * base)
        angle = tirx.Cast("float32", positions[b * x.shape[1] + s]) * inv_freq
        rotated = tirx.if_then_else(j < half, -x[b, s, h, tirx.min(j + half, rotary_dim - 1)],
                                     x[b, s, h, tirx.max(j - half, 0)])
        cos = tirx.cos(angle) * tirx.const(scale, "float32")
        sin = tirx.sin(angle) * tirx.const(scale, "float32")
        out = tirx.Cast("float32", x[b, s, h, j]) * cos + tirx.Cast("float32", rotated) * sin
        return tirx.if_then_else(j < rotary_dim, tirx.Cast(x.dtype, out), x[b, s, h, j])

    return te.compute(x.shape, value, name="rope")


def _select(i, values: list[float]):
    """values[i] for a TIR index i, as a chain of selects (a constant table of a few dozen)."""
    from tvm import tirx

    out = tirx.const(values[-1], "float32")
    for k in range(len(values) - 2, -1, -1):
        out = tirx.Select(i == k, tirx.const(values[k], "float32"), out)
    return out


# Threads per workgroup of the attention-state merge kernel below.
MERGE_THREADS = 64


def merge_state_kernel(num_heads: int, head_dim: int, dtype: str):
    """A race-free replacement for TVM's `tir_attention_merge_state` (nn.llm, GPU targets).

    The paged KV cache merges two partial attention results in place: V[n, h, :]
    and its log2-sum-exp S[n, h] with V_other / S_other. TVM 0.27's kernel
    (_decode_kernels._merge_state_inplace) gives each (n, h) head_dim / 4 threads
    that all read S[n, h] and all write the merged value back, with no barrier
    between the reads and the writes. That is only correct when those threads run
    in lockstep. SwiftShader (like any implementation free to run a workgroup's
    invocations in separate batches) lets an earlier batch overwrite S[n, h] before
    a later one reads it, so those threads rescale their slice of V with the wrong
    weights. Observed: head_dim 16 (4 threads per head) was right, head_dim 64
    (SmolLM2: 16 threads) wrong, consistent with 4-wide batches. The KV cache merges
    only when several tokens are prefilled on top of cached pages (attention over
    the new tokens merged with attention over the cached pages), so that is where
    the browser's logits were wrong; fresh prefill and single-token decode never merge.

    Here one thread owns one (n, h): it reads both states, rescales all of V[n, h, :]
    and then writes S[n, h], so nothing is shared and no barrier is needed.
    """
    from tvm.script import tirx as T  # lazy, as in build_model_class

    threads = MERGE_THREADS

    @T.prim_func(s_tir=True)
    def merge_state_inplace(v: T.handle, s: T.handle, v_other: T.handle, s_other: T.handle):
        T.func_attr({"tirx.is_scheduled": True})
        N = T.int32()
        V = T.match_buffer(v, (N, num_heads, head_dim), dtype)
        S = T.match_buffer(s, (N, num_heads), "float32")
        V_other = T.match_buffer(v_other, (N, num_heads, head_dim), dtype)
        S_other = T.match_buffer(s_other, (N, num_heads), "float32")
        for bx in T.thread_binding((N * num_heads + threads - 1) // threads, thread="blockIdx.x"):
            for tx in T.thread_binding(threads, thread="threadIdx.x"):
                with T.sblock("merge"):
                    T.reads()
                    T.writes()
                    if bx * threads + tx < N * num_heads:
                        n: T.let[T.int32] = (bx * threads + tx) // num_heads
                        h: T.let[T.int32] = (bx * threads + tx) % num_heads
                        s_max: T.let[T.float32] = T.max(S[n, h], S_other[n, h])
                        w: T.let[T.float32] = T.exp2(S[n, h] - s_max)
                        w_other: T.let[T.float32] = T.exp2(S_other[n, h] - s_max)
                        for k in T.serial(head_dim):
                            V[n, h, k] = T.cast(
                                (T.cast(V[n, h, k], "float32") * w + T.cast(V_other[n, h, k], "float32") * w_other)
                                / (w + w_other),
                                dtype,
                            )
                        S[n, h] = T.log2(w + w_other) + s_max

    return merge_state_inplace


def _replace_merge_kernel(num_heads: int, head_dim: int, dtype: str) -> None:
    """Swaps our merge kernel in for TVM's in the module being built (see merge_state_kernel).

    CPU targets get TVM's serial `merge_state_inplace_cpu` instead, which is correct.
    """
    from tvm import relax as rx  # lazy, as in build_model_class

    bb = rx.BlockBuilder.current()
    name = "tir_attention_merge_state"
    if any(gv.name_hint == name for gv in bb.get().get_global_vars()):
        gv = bb.get().get_global_var(name)
        bb.update_func(gv, merge_state_kernel(num_heads, head_dim, dtype).with_attr("global_symbol", name))


def build_model_class(cpu_kernels: bool = False):
    """Defines the nn.Module classes. With `cpu_kernels` (the wasm-cpu target), quantized
    matmuls call the hand-written WebAssembly SIMD kernels (compile/cpu_matmul.py) instead
    of the fused tensor expression, which TVM's CPU pipeline leaves unscheduled."""
    # Lazy: TVM takes seconds to import, and this module is imported by package/ (so by
    # `build_web --help`) and by the weight-only paths that never build a graph.
    from tvm import relax as rx
    from tvm import te
    from tvm.relax.frontend import nn
    from tvm.relax.frontend.nn.llm.kv_cache import PagedKVCache, TIRPagedKVCache
    from tvm.relax.frontend.nn.llm._kernel_common import RopeMode

    class QuantMatrix(nn.Module):
        """The parameters of one stored matrix [out, in]."""

        def __init__(self, out_f: int, in_f: int, fmt: WeightFormat, dtype: str) -> None:
            self.out_f, self.in_f, self.fmt, self.dtype = out_f, in_f, fmt, dtype
            self._names = []
            for pname, (shape, pdtype) in fmt.param_specs(out_f, in_f, dtype).items():
                setattr(self, pname, nn.Parameter(shape, pdtype))
                self._names.append(pname)

        def params(self):
            return [getattr(self, n) for n in self._names]

        def matmul(self, x, name: str):
            if not self.fmt.packed:
                return nn.matmul(x, nn.permute_dims(self.weight, [1, 0]))
            if cpu_kernels and cpu_matmul.has_kernel(self.fmt) and x.dtype == "float32" and len(x.shape) == 3:
                func = cpu_matmul.matmul_func(self.fmt, self.out_f, self.in_f)
                arrays = [getattr(self, n) for n in cpu_matmul.KERNELS[self.fmt.name][1]]
                out = nn.Tensor.placeholder([*x.shape[:-1], self.out_f], "float32")
                return nn.tensor_ir_op(func, f"{name}_cpu", [x, *arrays], out)
            names = self._names

            def compute(xx, *ps):
                return _matmul_te(xx, self.fmt, dict(zip(names, ps)), self.out_f, self.in_f, self.dtype, name)

            return nn.tensor_expr_op(compute, name, [x, *self.params()])

        def rows(self, ids):
            """Rows `ids` of the dequantized matrix (an embedding lookup)."""
            names = self._names

            def compute(idx, *ps):
                p = dict(zip(names, ps))
                return te.compute(
                    (idx.shape[0], self.in_f),
                    lambda i, j: self.fmt.value_te(p, idx[i], j, self.dtype),
                    name="embedding",
                )

            return nn.tensor_expr_op(compute, "embedding", [ids, *self.params()])

    class RMSNorm(nn.Module):
        """RMSNorm whose weight is stored f32 (shared by the f32 and f16 builds). Gemma's
        scales by 1 + weight (`offset`), added in f32 as transformers does."""

        def __init__(self, hidden: int, eps: float, dtype: str, offset: float | None = None) -> None:
            self.weight = nn.Parameter((hidden,), "float32")
            self.eps, self.dtype, self.offset = eps, dtype, offset

        def forward(self, x):
            w = self.weight + self.offset if self.offset else self.weight
            w = w if self.dtype == "float32" else w.astype(self.dtype)
            return nn.rms_norm(x, w, axes=-1, epsilon=self.eps)

    class Linear(nn.Module):
        """y = x W^T (+ bias). W is one stored matrix, or, where the plan splits a fused
        matrix, one matrix per block of output rows (`rows`), each in its own format."""

        def __init__(self, in_f: int, rows: list[int], formats: list[WeightFormat], dtype: str,
                     bias: bool) -> None:
            out_f = sum(rows)
            if len(formats) == 1:
                self.w = QuantMatrix(out_f, in_f, formats[0], dtype)
                self.parts = None
            else:
                self.w = None
                self.parts = nn.ModuleList([QuantMatrix(r, in_f, f, dtype) for r, f in zip(rows, formats)])
            self.bias = nn.Parameter((out_f,), "float32") if bias else None
            self.dtype = dtype

        def forward(self, x):
            if self.parts is None:
                y = self.w.matmul(x, "linear")
            else:
                y = nn.concat([m.matmul(x, "linear") for m in self.parts], dim=-1)
            if self.bias is None:
                return y
            return y + (self.bias if self.dtype == "float32" else self.bias.astype(self.dtype))

    class Attention(nn.Module):
        def __init__(self, cfg: LlmConfig, plan: WeightPlan, prefix: str, dtype: str, layer_id: int) -> None:
            self.cfg = cfg
            # Rope by the model, at this layer's base, where the KV cache cannot (see _rope_te).
            self.rope_theta = cfg.layer_rope_theta(layer_id) if rope_in_model(cfg) else None
            longrope = cfg.rope_scaling if (cfg.rope_scaling or {}).get("rope_type") == "longrope" else None
            # The short divisors only: the build caps the context at the original one (chat_build).
            self.rope_divisors = longrope["short_factor"] if longrope else None
            self.rope_scale = longrope["attention_factor"] if longrope else 1.0
            q, kv = cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
            self.qkv_proj = Linear(cfg.hidden_size, [q, kv, kv], plan.formats_of(f"{prefix}.qkv_proj"), dtype,
                                   cfg.attention_bias)
            self.o_proj = Linear(q, [cfg.hidden_size], plan.formats_of(f"{prefix}.o_proj"), dtype, False)
            # Qwen3, Gemma 3: an RMSNorm over each head of q and of k, before rope.
            offset = cfg.norm_weight_offset
            self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype, offset) if cfg.qk_norm else None
            self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps, dtype, offset) if cfg.qk_norm else None

        def forward(self, x, kv, layer_id: int):
            c = self.cfg
            b, s, _ = x.shape
            qkv = nn.reshape(self.qkv_proj(x), (b, s, c.num_attention_heads + 2 * c.num_key_value_heads, c.head_dim))
            if self.q_norm is not None or self.rope_theta is not None:
                q, k, v = nn.split(qkv, [c.num_attention_heads, c.num_attention_heads + c.num_key_value_heads], axis=2)
                if self.q_norm is not None:
                    q, k = self.q_norm(q), self.k_norm(k)
                if self.rope_theta is not None:
                    positions = kv.get_query_positions(b * s)
                    rotary = c.rotary_dim or c.head_dim
                    q, k = (nn.tensor_expr_op(
                        lambda t, p: _rope_te(t, p, self.rope_theta, rotary, self.rope_divisors, self.rope_scale),
                        "rope", [t, positions]) for t in (q, k))
                qkv = nn.concat([q, k, v], dim=2)
            scale = c.attention_scale if c.attention_scale is not None else c.head_dim**-0.5
            out = kv.attention_with_fused_qkv(layer_id, qkv, c.num_attention_heads, sm_scale=scale)
            return self.o_proj(nn.reshape(out, (b, s, c.num_attention_heads * c.head_dim)))

    class MLP(nn.Module):
        def __init__(self, cfg: LlmConfig, plan: WeightPlan, prefix: str, dtype: str) -> None:
            self.ffn = cfg.intermediate_size
            ffn = cfg.intermediate_size
            self.gate_up_proj = Linear(cfg.hidden_size, [ffn, ffn], plan.formats_of(f"{prefix}.gate_up_proj"),
                                       dtype, False)
            self.down_proj = Linear(ffn, [cfg.hidden_size], plan.formats_of(f"{prefix}.down_proj"), dtype, False)
            self.act = cfg.hidden_act  # None: SiLU; Gemma's GeGLU: tanh-approximated GELU

        def forward(self, x):
            gate, up = nn.split(self.gate_up_proj(x), 2, axis=-1)
            gate = nn.gelu(gate, approximate="tanh") if self.act == "gelu_pytorch_tanh" else nn.silu(gate)
            return self.down_proj(gate * up)

    class DecoderLayer(nn.Module):
        """Llama's pre-norm layer; with `sandwich_norms` (Gemma) the attention and MLP outputs
        are normed too, and `post_attention_layernorm` is that output norm, as transformers names it."""

        def __init__(self, cfg: LlmConfig, plan: WeightPlan, i: int, dtype: str) -> None:
            prefix = f"model.layers.{i}"
            norm = lambda: RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, cfg.norm_weight_offset)  # noqa: E731
            self.input_layernorm = norm()
            self.self_attn = Attention(cfg, plan, f"{prefix}.self_attn", dtype, i)
            self.post_attention_layernorm = norm()
            if cfg.sandwich_norms:
                self.pre_feedforward_layernorm = norm()
                self.post_feedforward_layernorm = norm()
            self.mlp = MLP(cfg, plan, f"{prefix}.mlp", dtype)
            self.layer_id, self.sandwich = i, bool(cfg.sandwich_norms)

        def forward(self, x, kv):
            if self.sandwich:
                x = x + self.post_attention_layernorm(self.self_attn(self.input_layernorm(x), kv, self.layer_id))
                return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
            x = x + self.self_attn(self.input_layernorm(x), kv, self.layer_id)
            return x + self.mlp(self.post_attention_layernorm(x))

    class Embedding(nn.Module):
        def __init__(self, vocab: int, hidden: int, fmt: WeightFormat, dtype: str) -> None:
            self.w = QuantMatrix(vocab, hidden, fmt, dtype)

        def forward(self, ids):
            return self.w.rows(ids)

    class Backbone(nn.Module):
        def __init__(self, cfg: LlmConfig, plan: WeightPlan, dtype: str) -> None:
            self.embed_tokens = Embedding(cfg.vocab_size, cfg.hidden_size,
                                          plan.format_of("model.embed_tokens"), dtype)
            self.layers = nn.ModuleList([DecoderLayer(cfg, plan, i, dtype) for i in range(cfg.num_hidden_layers)])
            self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, dtype, cfg.norm_weight_offset)
            self.multiplier = cfg.embedding_multiplier

        def forward(self, x, kv):
            if self.multiplier is not None:  # in the activations' dtype, as transformers scales
                x = x * self.multiplier
            for layer in self.layers:
                x = layer(x, kv)
            return self.norm(x)

    class CausalLM(nn.Module):
        def __init__(self, cfg: LlmConfig, plan: WeightPlan, dtype: str, target) -> None:
            self.cfg, self.dtype, self.target = cfg, dtype, target
            self.model = Backbone(cfg, plan, dtype)
            self.lm_head = None if cfg.tie_word_embeddings else QuantMatrix(
                cfg.vocab_size, cfg.hidden_size, plan.format_of("lm_head"), dtype)

        def _logits(self, hidden):
            head = self.model.embed_tokens.w if self.lm_head is None else self.lm_head
            logits = head.matmul(hidden, "lm_head")
            cap = self.cfg.final_logit_softcapping
            if cap is not None:
                logits = nn.tanh(logits / cap) * cap
            return logits.astype("float32") if logits.dtype != "float32" else logits

        def embed(self, input_ids):
            return self.model.embed_tokens(input_ids)

        def prefill(self, input_embed, paged_kv_cache):
            hidden = self.model(input_embed, paged_kv_cache)

            def last(x):  # only the last position's logits are needed
                b, s, d = x.shape
                return te.compute((b, 1, d), lambda i, _, k: x[i, s - 1, k], name="last_token")

            return self._logits(nn.tensor_expr_op(last, "last_token", [hidden])), paged_kv_cache

        def decode(self, input_embed, paged_kv_cache):
            return self._logits(self.model(input_embed, paged_kv_cache)), paged_kv_cache

        def create_paged_kv_cache(self, max_batch_size, max_total_seq_len, prefill_chunk_size,
                                  page_size, support_sliding_window):
            c = self.cfg
            # Every layer attends to all cached keys: a sliding-window layer (Gemma 3) is exact only
            # because the build caps the context at the window (package/chat_build.py). TVM 0.27's
            # per-layer window ("mha_sliding") gave NaN logits once a sequence passed the window.
            cache = TIRPagedKVCache(
                attn_kind="mha",
                max_batch_size=max_batch_size,
                max_total_seq_len=max_total_seq_len,
                prefill_chunk_size=prefill_chunk_size,
                page_size=page_size,
                support_sliding_window=support_sliding_window,
                layer_partition=rx.ShapeExpr([0, c.num_hidden_layers]),
                num_hidden_layers=c.num_hidden_layers,
                num_attention_heads=c.num_attention_heads,
                num_key_value_heads=c.num_key_value_heads,
                qk_head_dim=c.head_dim,
                v_head_dim=c.head_dim,
                mla_original_qk_head_dim=0,
                mla_original_v_head_dim=0,
                rope_mode=RopeMode.NONE if rope_in_model(c) else RopeMode.NORMAL,
                rope_scale=1,
                rope_theta=c.rope_theta,
                rope_scaling={} if rope_in_model(c) else dict(c.rope_scaling or {}),
                rope_ext_factors=rx.prim_value(0),
                rotary_dim=c.head_dim,
                enable_disaggregation=False,
                dtype=self.dtype,
                target=self.target,
            )
            _replace_merge_kernel(c.num_attention_heads, c.head_dim, self.dtype)
            return cache

        def spec(self):
            packed = {"param_mode": "packed", "effect_mode": "none"}
            h = self.cfg.hidden_size
            kv = nn.spec.Object(object_type=PagedKVCache)
            return {
                "embed": {"input_ids": nn.spec.Tensor(["seq_len"], "int32"), "$": packed},
                "prefill": {"input_embed": nn.spec.Tensor([1, "seq_len", h], self.dtype),
                            "paged_kv_cache": kv, "$": packed},
                "decode": {"input_embed": nn.spec.Tensor([1, 1, h], self.dtype),
                           "paged_kv_cache": kv, "$": packed},
                "create_paged_kv_cache": {
                    "max_batch_size": int, "max_total_seq_len": int, "prefill_chunk_size": int,
                    "page_size": int, "support_sliding_window": int,
                    "$": {"param_mode": "none", "effect_mode": "none"},
                },
            }

    return CausalLM


def rope_in_model(cfg: LlmConfig) -> bool:
    """Whether the model rotates q and k itself: where layers differ in rope base (the KV cache
    has one base for all layers), for LongRoPE (which it does not know) and for partial rotary."""
    differing = cfg.layer_types is not None and cfg.rope_local_theta not in (None, cfg.rope_theta)
    longrope = (cfg.rope_scaling or {}).get("rope_type") == "longrope"
    return differing or longrope or cfg.rotary_dim not in (None, cfg.head_dim)


def export(cfg: LlmConfig, plan: WeightPlan, dtype: str, target, prefill_chunk: int,
           cpu_kernels: bool | None = None):
    """-> (IRModule, [(param name, shape, dtype)] in the packed order). `cpu_kernels`: whether
    quantized matmuls call the wasm-cpu kernels; default: on the wasm32 target (False gives the
    plain tensor expressions there, the baseline scripts/bench_cpu.py compares with)."""
    if cpu_kernels is None:
        cpu_kernels = cpu_matmul.uses_kernels(target)
    CausalLM = build_model_class(cpu_kernels)
    model = CausalLM(cfg, plan, dtype, target)
    mod, named = model.export_tvm(spec=model.spec())
    # Upper bounds let Relax plan memory statically for the dynamic sequence length.
    bounds = {"seq_len": prefill_chunk, "max_total_seq_len": 1 << 20}
    for name in ("embed", "prefill"):
        mod[name] = mod[name].with_attr("tir_var_upper_bound", bounds).with_attr(
            "tir_non_negative_var", ["seq_len"])
    params = [(n, tuple(int(d) for d in p.shape), str(p.dtype)) for n, p in named]
    return mod, params
