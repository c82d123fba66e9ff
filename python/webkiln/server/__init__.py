"""The development server for the static site."""

from .app import create_app

__all__ = ["create_app"]
