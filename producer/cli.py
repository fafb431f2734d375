"""Commands of this component (registered on the ``jobpulse`` app)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this component's commands to ``app``."""
