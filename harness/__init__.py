"""Reproducibility benchmark harness for the GradAttn paper."""

from __future__ import annotations

__version__ = "0.1.0"
