"""The HTTP service: API, notify endpoint, metrics; processing in the background."""

from syncbus.service.app import create_app

__all__ = ["create_app"]
