"""Errors raised by the toolchain, each naming the problem and the fix."""

from __future__ import annotations

from ..errors import WebkilnError


class ToolchainError(WebkilnError, RuntimeError):
    """A build tool is missing, broken or failed."""
