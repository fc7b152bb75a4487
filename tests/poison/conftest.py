"""Poison inputs against the real app: reuse the API tests' in-process app fixture."""

from tests.api.conftest import make_api

__all__ = ["make_api"]
