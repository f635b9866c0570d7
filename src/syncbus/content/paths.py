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


# A culture code as BCP 47 shapes it: a language, then parts joined by "-" (en-US, cs-CZ,
# zh-Hans-CN, es-419).
_CULTURE = re.compile(r"[A-Za-z]{2,8}(?:-[A-Za-z0-9]{1,8})*")


def culture_problem(code: str) -> str | None:
    """Why ``code`` is no culture code (None when it is one)."""
    if _CULTURE.fullmatch(code) is None:
        return (
            "a culture code is a language and a region such as 'en-US', 'cs-CZ' or 'es-419' "
            "(letters and digits, parts joined by '-')"
        )
    return None


def canonical_culture(code: str) -> str:
    """A culture code in its usual case, so that one culture is one document: the language
    in lower case, a four-letter script capitalised, a region in upper case (``en-us`` ->
    ``en-US``, ``ZH-HANS-CN`` -> ``zh-Hans-CN``). A code that is no culture code is returned as
    it is (``culture_problem`` says why)."""
    if _CULTURE.fullmatch(code) is None:
        return code
    first, *rest = code.split("-")
    parts = [first.lower()]
    for part in rest:
        if len(part) == 4 and part.isalpha():
            parts.append(part.capitalize())
        elif (len(part) == 2 and part.isalpha()) or (len(part) == 3 and part.isdigit()):
            parts.append(part.upper())
        else:
            parts.append(part.lower())
    return "-".join(parts)
