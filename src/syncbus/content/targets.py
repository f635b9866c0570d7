"""Kept for importers of ``TargetCache`` from here: the batch caches live in ``content.caches``."""

from syncbus.content.caches import TargetCache

__all__ = ["TargetCache"]
