"""The root of every user-facing webkiln error.

Each error a user can cause or fix (a bad model source, a missing toolchain, an image build
that cannot fit the device limits, …) derives from `WebkilnError`, so the CLI prints its
message without a traceback and anything else stays a bug with a traceback. Kept in a
module of its own with no imports so that every layer can depend on it.
"""

from __future__ import annotations


class WebkilnError(Exception):
    """A problem the user can act on; its message names the problem and the fix."""
