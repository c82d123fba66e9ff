"""Run a compiled chat model natively with TVM (CPU): the numerical reference for
tests and the "native" column of benchmarks. Same VM entry points as the browser."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tvm
from tvm import relax


class NativeLM:
    PAGE_SIZE = 16

    def __init__(self, library: str | Path, params: Sequence[np.ndarray], context: int, prefill_chunk: int) -> None:
        self.dev = tvm.cpu()
        self.vm = relax.VirtualMachine(tvm.runtime.load_module(str(library)), self.dev)
        self.params = [tvm.runtime.tensor(p, self.dev) for p in params]
        self.context, self.prefill_chunk = context, prefill_chunk
        self._add = tvm.get_global_func("vm.builtin.kv_state_add_sequence")
        self._begin = tvm.get_global_func("vm.builtin.kv_state_begin_forward")
        self._end = tvm.get_global_func("vm.builtin.kv_state_end_forward")
        self.reset()

    def reset(self) -> None:
        S = tvm.runtime.ShapeTuple
        self.kv = self.vm["create_paged_kv_cache"](
            S([1]), S([self.context]), S([self.prefill_chunk]), S([self.PAGE_SIZE]), S([0]))
        self._add(self.kv, 0)

    def _forward(self, fn: str, ids: Sequence[int]) -> np.ndarray:
        S = tvm.runtime.ShapeTuple
        embed = self.vm["embed"](tvm.runtime.tensor(np.asarray(ids, dtype=np.int32), self.dev), self.params)
        embed = embed.numpy()[None]
        self._begin(self.kv, S([0]), S([len(ids)]))
        logits, self.kv = self.vm[fn](tvm.runtime.tensor(embed, self.dev), self.kv, self.params)
        self._end(self.kv)
        return logits.numpy().reshape(-1)

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Logits after the last of `ids` (chunked like the browser engine)."""
        logits = None
        for start in range(0, len(ids), self.prefill_chunk):
            logits = self._forward("prefill", ids[start : start + self.prefill_chunk])
        assert logits is not None
        return logits

    def decode(self, token: int) -> np.ndarray:
        return self._forward("decode", [token])

    def greedy(self, ids: Sequence[int], max_tokens: int, stop: Sequence[int] = ()) -> list[int]:
        self.reset()
        logits = self.prefill(ids)
        out: list[int] = []
        while len(out) < max_tokens:
            token = int(np.argmax(logits))
            out.append(token)
            if token in stop:
                break
            logits = self.decode(token)
        return out
