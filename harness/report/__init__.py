"""The report: Tables 3-9, statistics, claims and figures, built from the results database only.

`build_report` (harness/report/render.py) is re-exported here; `harness report` and
`harness demo` call it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["build_report"]


def build_report(
    db: Any,
    out_dir: str | Path | None = None,
    protocol: str | None = None,
    formats: tuple[str, ...] = ("html",),
    name: str | None = None,
    claims_file: str | Path | None = None,
) -> Path:
    """Write reports/<name>/index.html (+ the other formats); returns the index path."""
    # Imported lazily: the renderers pull in matplotlib and jinja2, which loading data does not need.
    from harness.report.render import build_report as _build

    return _build(db, out_dir=out_dir, protocol=protocol, formats=formats, name=name,
                  claims_file=claims_file)  # fmt: skip
