"""Alias paths of the page tree: a page's alias from its name, and joining path segments."""

from __future__ import annotations

import re
import unicodedata

# Letters and digits of any script, and _ . ~ -: the rest (spaces, punctuation, symbols)
# becomes "-".
_ALIAS_BAD = re.compile(r"[^\w.~-]+")


def make_alias(name: str) -> str:
    """An alias from a page name: "Hello, world!" -> "Hello-world"; accents dropped from the
    Latin letters that carry them ("Čeština" -> "Cestina"); letters of other scripts kept as
    they are ("Новый" -> "Новый", "新闻" -> "新闻"), so that names in any language give aliases
    of their own instead of one fallback they would all share."""
    kept: list[str] = []
    base = ""
    for c in unicodedata.normalize("NFKD", name.strip()):
        if unicodedata.combining(c):
            if not base.isascii():  # a mark of another script is part of its letter (й, ά)
                kept.append(c)
            continue
        base = c
        kept.append(c)
    alias = _ALIAS_BAD.sub("-", unicodedata.normalize("NFC", "".join(kept))).strip("-.")
    return alias or "page"


def join_path(parent_path: str, alias: str) -> str:
    return ("" if parent_path == "/" else parent_path.rstrip("/")) + "/" + alias


def normalize_path(path: str) -> str:
    path = "/" + path.strip().strip("/")
    return path
