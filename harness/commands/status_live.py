"""`harness status --watch` on a terminal: a rich live table redrawn in place.

Piped output never comes here (status.py prints plain lines instead), so no terminal codes
end up in a log file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from harness.workers.cohort import format_seconds


def status_table(status: Any, text: str):  # -> rich.console.Group
    """The running jobs of a status.QueueStatus as a table (epoch bar, last val top-1, loss,
    s/epoch, ETA) under `text`: the rest of `harness status` (counts, ETA, failures)."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    table = Table(title="running jobs", title_justify="left", expand=False)
    for heading, justify in (("job", "right"), ("model/dataset/seed [protocol]", "left"),
                             ("epoch", "right"), ("", "left"), ("val top-1", "right"),
                             ("train loss", "right"), ("s/epoch", "right"), ("ETA", "right"),
                             ("worker", "left")):  # fmt: skip
        table.add_column(Text(heading), justify=justify, no_wrap=True)  # Text: no markup
    for job in status.running:
        eta = job.eta_seconds
        table.add_row(
            f"#{job.id}",
            Text(job.label),  # "[paper]" is not rich markup
            f"{job.epoch}/{job.max_epochs}",
            ProgressBar(total=max(job.max_epochs, 1), completed=job.epoch, width=20),
            "-" if job.val_acc is None else f"{job.val_acc:.4f}",
            "-" if job.train_loss is None else f"{job.train_loss:.4f}",
            "-" if job.mean_epoch_seconds is None else f"{job.mean_epoch_seconds:.1f}",
            "-" if eta is None else f"<= {format_seconds(eta)}",
            Text(job.worker + ("  STALE" if job.stale else ""), style="red" if job.stale else ""),
        )
    stamp = datetime.now().strftime("%H:%M:%S")
    header = Text(f"{stamp}  (Ctrl-C to stop)", style="dim")
    parts = [header, Text(text)]
    if status.running:
        parts.append(table)
    return Group(*parts)


def watch_live(read: Callable[[], tuple[Any, str]], interval: float) -> None:
    """Redraw every `interval` seconds until Ctrl-C; `read` gives (status, its text without
    the running jobs)."""
    from rich.live import Live

    with Live(status_table(*read()), auto_refresh=False, screen=False) as live:
        while True:
            time.sleep(interval)
            live.update(status_table(*read()), refresh=True)
