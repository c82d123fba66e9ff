"""Stage-by-stage progress of a build, printed as `[step/total] text` and `done in N s`."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.step, self.log, self.start = total, 0, log, time.monotonic()
        self.stage_start = self.start

    def stage(self, text: str) -> None:
        self.step += 1
        self.stage_start = time.monotonic()
        self.log(f"[{self.step}/{self.total}] {text}")

    def done(self, text: str = "") -> None:
        self.log(f"      done in {time.monotonic() - self.stage_start:.1f} s{('; ' + text) if text else ''}")

    def finished(self, model_id: str, final: object) -> None:
        self.log(f"built {model_id} in {time.monotonic() - self.start:.1f} s -> {final}")
