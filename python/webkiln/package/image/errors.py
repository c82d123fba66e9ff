"""The error of an image build the user can fix."""

from __future__ import annotations

from ...errors import WebkilnError


class ImageBuildError(WebkilnError, ValueError):
    """A pipeline this build cannot package as asked; the message names the tensor or field."""
