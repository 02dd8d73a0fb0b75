"""The one path from claimed jobs to their recorded results: `run_cohort`.

A worker claims one job, or with `--fuse-seeds S` up to S seeds of one paper-grid cell
(queue.claim_cohort, docs/QUEUE.md). A cohort of one is a cohort: it goes through the same
leases, heartbeats, epoch rows, checkpoints (`<checkpoints>/<key>.pt`) and completions, and
only the trainer differs: the runner's `run_job` for one job, its fused `run_jobs` for several.
Each member's completion is written as soon as the trainer reports it finished, while the
others keep training. Split from harness/workers/loop.py, which calls run_cohort.
"""

from __future__ import annotations

import importlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.queue import jobs as queue
from harness.queue.jobs import ClaimedJob
from harness.queue.recording import record_epoch
from harness.store.outages import Backoff, DatabaseUnreachable
from harness.workers.parts import Heartbeat, last_line, progress_bar


class CohortHost(Protocol):
    """What run_cohort needs of its worker (harness.workers.loop.Worker has it all), so this
    module does not import the loop that calls it."""

    options: Any
    engine: Any
    progress: bool
    runner: tuple[Callable[..., Any], type[BaseException]]
    cohort_runner: tuple[Callable[..., Any], type[BaseException]] | None
    backoff: Backoff
    last_failure: str

    def stop_requested(self) -> bool: ...

    def finish(
        self, job: ClaimedJob, checkpoint: Path, label: str, outcome: Any, sharing: int = 1
    ) -> str: ...

    def interrupted(self, lease: Any, beat: Heartbeat, label: str) -> str: ...


log = logging.getLogger("harness.workers.loop")


def load_cohort_runner(spec: str | None) -> tuple[Callable[..., Any], type[BaseException]]:
    """The `run_jobs` of `--runner MODULE:FUNC`'s module (default harness.training.loop) and its
    JobInterrupted: a cohort goes through the same module as single jobs."""
    module_name = (spec or "harness.training.loop").partition(":")[0]
    try:
        module = importlib.import_module(module_name)
        return module.run_jobs, module.JobInterrupted
    except (ImportError, AttributeError, ValueError) as exc:
        raise HarnessError(
            f"--fuse-seeds needs {module_name}.run_jobs: {exc}; use a harness whose training "
            "module has run_jobs, or drop --fuse-seeds"
        ) from None


def one_job_trainer(run_job: Callable[..., Any]) -> Callable[..., list[Any]]:
    """`run_job` behind run_jobs' contract, so a cohort of one trains by the single-job path."""

    def run_jobs(specs: list[Any], *, checkpoint_paths: list[Path], on_epoch: Callable,
                 on_done: Callable, **options: Any) -> list[Any]:  # fmt: skip
        (spec,), (checkpoint,) = specs, checkpoint_paths
        outcome = run_job(spec, checkpoint_path=checkpoint,
                          on_epoch=lambda record: on_epoch(0, record), **options)  # fmt: skip
        on_done(0, outcome)
        return [outcome]

    return run_jobs


def epoch_line(label: str, record: Any, max_epochs: int, seconds: list[float]) -> str:
    """The worker's line per finished epoch: job, epoch/max, train loss, val top-1, seconds and
    the job's ETA (the epochs left at its mean epoch time; early stopping may end it sooner)."""
    left = max(0, max_epochs - record.epoch)
    eta = f"ETA <= {format_seconds(left * sum(seconds) / len(seconds))}" if left else "last epoch"
    return (
        f"{label} epoch {record.epoch}/{max_epochs}: train loss {record.train_loss:.4f}, "
        f"val top-1 {record.val_acc:.4f}, {seconds[-1]:.1f} s, {eta}"
    )


def format_seconds(seconds: float) -> str:
    """42.0 s, 3m05s, 2h07m."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def job_label(job: ClaimedJob) -> str:
    """How the logs and progress bars name a job."""
    return f"job {job.id} {job.model}/{job.dataset}/seed {job.seed}"


@dataclass
class Member:
    """One job of a running cohort; `result` is set once it is done, failed, released or lost."""

    job: ClaimedJob
    checkpoint: Path
    beat: Heartbeat
    bar: Any
    result: str | None = None
    # Seconds of the epochs this run has trained (a resumed job counts from its checkpoint).
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return job_label(self.job)


def run_cohort(worker: CohortHost, jobs: list[ClaimedJob]) -> list[str]:
    """Run claimed jobs (one, or a fused cohort); one result per job (done, failed, released or
    lost), in the order they were settled (so quarantine counts failures in a row as they
    happened)."""
    cohort = Cohort(worker, jobs)
    run_jobs, job_interrupted = cohort.trainer()
    cohort.start()
    try:
        outcomes = run_jobs(
            [m.job.spec() for m in cohort.members],
            device=worker.options.device,
            data_root=worker.options.data_root,
            checkpoint_paths=[m.checkpoint for m in cohort.members],
            on_epoch=cohort.on_epoch,
            on_done=cohort.on_done,
            should_stop=cohort.should_stop,
            slots=worker.options.slots,  # processes sharing the device: splits the CPU's cores
            progress=False,
        )
        cohort.settle_returned(outcomes)
    except job_interrupted:
        cohort.interrupted()
    except KeyboardInterrupt:
        cohort.release_all()
        raise
    except DatabaseUnreachable as gone:
        raise cohort.database_lost(gone) from None
    except Exception:
        cohort.fail_all(traceback.format_exc())
    finally:
        cohort.close()
    return cohort.settled


class Cohort:
    """The claimed jobs of one run_cohort call: their members and the trainer's callbacks."""

    def __init__(self, worker: CohortHost, jobs: list[ClaimedJob]) -> None:
        self.worker = worker
        self.fused = len(jobs) > 1
        opts = worker.options
        self.members = [
            Member(
                job=job,
                checkpoint=opts.checkpoints / f"{job.key}.pt",
                beat=Heartbeat(worker.engine, job.lease, opts.lease_seconds),
                bar=progress_bar(
                    f"job {job.id} seed {job.seed}" if self.fused else job_label(job),
                    job.spec().config.max_epochs,
                    opts.slot_index * opts.cohort_size + index,
                    worker.progress,
                ),
            )
            for index, job in enumerate(jobs)
        ]
        self.settled: list[str] = []
        self.retrying = worker.backoff.call
        # Jobs sharing the device, as recorded with every epoch row and result: a fused
        # cohort's epoch time is the time of all its members together (Table 8 shows the count).
        self.sharing = opts.slots * len(self.members)
        self.kind = ", cohort" if self.fused else ""

    def trainer(self) -> tuple[Callable[..., list[Any]], type[BaseException]]:
        """The runner's fused run_jobs for a cohort, its run_job behind the same contract for one."""
        if self.fused:
            return self.worker.cohort_runner  # type: ignore[return-value]
        run_job, job_interrupted = self.worker.runner
        return one_job_trainer(run_job), job_interrupted

    def start(self) -> None:
        if self.fused:
            log.info("claimed a cohort of %d", len(self.members))
        for member in self.members:
            job = member.job
            log.info("claimed job %d attempt %d (%s/%s/seed %d%s)", job.id, job.attempts,
                     job.model, job.dataset, job.seed, self.kind)  # fmt: skip
            member.beat.start()

    def settle(self, member: Member, result: str) -> None:
        member.result = result
        self.settled.append(result)

    def unsettled(self) -> list[Member]:
        return [m for m in self.members if m.result is None]

    def on_epoch(self, index: int, record: Any) -> None:
        member, worker = self.members[index], self.worker
        written = self.retrying(
            "epoch row",
            lambda: record_epoch(
                worker.engine, member.job.lease, record, worker.options.lease_seconds, self.sharing
            ),
        )
        if not written:
            member.beat.lost.set()
        else:
            member.epoch_seconds.append(record.train_seconds + record.eval_seconds)
            log.info(epoch_line(member.label, record, member.job.spec().config.max_epochs,
                                member.epoch_seconds))  # fmt: skip
        if member.bar is not None:
            member.bar.n = record.epoch
            member.bar.set_postfix(val_acc=f"{record.val_acc:.3f}", refresh=True)

    def on_done(self, index: int, outcome: Any) -> None:
        member = self.members[index]
        member.beat.stop()
        if self.fused:  # how many jobs shared the device as one fused model (Table 8)
            outcome.extra.setdefault("fused_seeds", len(self.members))
        result = self.worker.finish(
            member.job, member.checkpoint, member.label, outcome, len(self.members)
        )
        self.settle(member, result)

    def should_stop(self) -> bool:
        # One member's lost lease stops the cohort: the fused step cannot drop a member.
        return self.worker.stop_requested() or any(m.beat.lost.is_set() for m in self.unsettled())

    def settle_returned(self, outcomes: list[Any]) -> None:
        """The contract calls on_done for each member; a runner that returned without doing so
        for one still has its outcome here."""
        for index, (member, outcome) in enumerate(zip(self.members, outcomes, strict=True)):
            if member.result is None:
                self.on_done(index, outcome)

    def interrupted(self) -> None:
        for member in self.unsettled():
            self.settle(
                member, self.worker.interrupted(member.job.lease, member.beat, member.label)
            )

    def release_all(self) -> None:
        for member in self.unsettled():
            member.beat.stop()
            self.retrying(
                "release", lambda m=member: queue.release(self.worker.engine, m.job.lease)
            )
            log.info("%s released (forced stop)", member.label)

    def database_lost(self, gone: DatabaseUnreachable) -> DatabaseUnreachable:
        """Nothing can be written: the leases run out and the jobs go back to the queue."""
        held = [m.job.id for m in self.unsettled()]
        for member in self.unsettled():
            member.beat.stop()
        if len(held) == 1:
            where = (f"job {held[0]} stays leased to it and goes back to the queue when its "
                     "lease expires (resuming from its checkpoint)")  # fmt: skip
        else:
            where = (f"job(s) {', '.join(map(str, held))} stay leased to it and go back to the "
                     "queue when their leases expire (resuming from their checkpoints)")  # fmt: skip
        return DatabaseUnreachable(f"{gone}; worker stopped; {where}")

    def fail_all(self, error: str) -> None:
        self.worker.last_failure = last_line()
        for member in self.unsettled():
            member.beat.stop()
            self.retrying(
                "failure", lambda m=member: queue.fail(self.worker.engine, m.job.lease, error)
            )
            log.error("%s failed%s: %s", member.label, self.kind, self.worker.last_failure)
            self.settle(member, "failed")

    def close(self) -> None:
        for member in self.members:
            if member.beat.is_alive():
                member.beat.stop()
            if member.bar is not None:
                member.bar.close()
