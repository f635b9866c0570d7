"""Connectors for the command-line tests, in a module of their own: the CLI and ``serve``
subprocesses load them by import path."""

from __future__ import annotations

import os

from .helpers import DictConnector

EVIL_DISPLAY = "[bold]Evil[/x] co"  # Rich markup: [/x] closes nothing, [bold] would vanish


class MarkupConnector(DictConnector):
    """A connector whose display name is Rich markup."""

    display_name = EVIL_DISPLAY

    def __init__(self) -> None:
        super().__init__("Markup")


class BrokenInitConnector(DictConnector):
    """Starts in the test process; in a process where credentials are "missing" init() fails."""

    def __init__(self) -> None:
        super().__init__("Broken")

    def init(self) -> None:
        if os.environ.get("SYNCBUS_TEST_BREAK_INIT"):
            raise RuntimeError("crm credentials missing")
