"""Signals as exceptions, shared by every layer that stops work on one.

The CLI's handler raises :class:`Terminated` for SIGTERM and ``KeyboardInterrupt``
for Ctrl-C, so that every ``finally`` on the way out cleans up; the service layer
tells the two apart (exit code 143 or 130) by class, without knowing the CLI.
"""

from __future__ import annotations


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so every ``finally`` cleans up."""
