"""Errors raised by the toolchain, each naming the problem and the fix."""


class ToolchainError(RuntimeError):
    """A build tool is missing, broken or failed."""
