"""The `edgexray` command line (app.py holds the table of commands)."""

from .app import app

__all__ = ["app"]
