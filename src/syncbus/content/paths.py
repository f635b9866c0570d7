"""Alias paths of the page tree: a page's alias from its name, and joining path segments."""

from __future__ import annotations

import re

_ALIAS_BAD = re.compile(r"[^A-Za-z0-9_.~-]+")


def make_alias(name: str) -> str:
    """A URL-safe alias from a page name ("Hello, world!" -> "Hello-world")."""
    alias = _ALIAS_BAD.sub("-", name.strip()).strip("-.")
    return alias or "page"


def join_path(parent_path: str, alias: str) -> str:
    return ("" if parent_path == "/" else parent_path.rstrip("/")) + "/" + alias


def normalize_path(path: str) -> str:
    path = "/" + path.strip().strip("/")
    return path
