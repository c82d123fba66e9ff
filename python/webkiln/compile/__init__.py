"""Compile Relax modules for the targets webkiln ships (and a native reference)."""

from .targets import TARGETS, TargetSpec, get_target
from .build import build_module

__all__ = ["TARGETS", "TargetSpec", "get_target", "build_module"]
