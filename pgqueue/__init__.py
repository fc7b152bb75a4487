"""pgqueue: durable functions on PostgreSQL alone, wire-compatible with the Inngest SDKs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
