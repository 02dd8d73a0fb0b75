"""The fault suite's supervisor: real `harness worker` processes, killed and replaced.

`FaultRun` starts N worker processes running the stand-in runner (tests/helpers/fault_runner.py), keeps N
alive (a dead one is replaced at once), SIGKILLs random ones at random moments, and lets the
workers SIGKILL themselves at exact points through HARNESS_FAULTS (harness/faults.py). When every
job is done it stops them with SIGTERM and `check()` reads the truth back from the database,
the stand-in's run log and the checkpoint directory.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from harness.store.schema import EpochRow, GradientLayer, Job, Result, WorkerRow

HELPERS = Path(__file__).resolve().parent  # tests/helpers: fault_runner importable
RUNNER = "fault_runner:run_job"


def worker_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a stand-in worker: tests/helpers importable, its own log and checkpoints."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HELPERS), os.environ.get("PYTHONPATH")])),
        "HARNESS_CHECKPOINTS": str(tmp_path / "checkpoints"),
        "HARNESS_DATA": str(tmp_path / "data"),
        "FAULT_RUNNER_LOG": str(tmp_path / "runs.log"),
        "HARNESS_FAULTS_LOG": str(tmp_path / "faults.log"),
    }
    env.pop("HARNESS_FAULTS", None)
    env.update(extra)
    return env


def worker_argv(url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "worker", "--db", url, "--runner", RUNNER,
            "--no-progress", *extra]  # fmt: skip


@dataclass
class Run:
    """One stand-in run of one job by one process (from the runner's log)."""

    key: str
    pid: int
    start: float
    end: float | None = None  # None: the process died inside it
    how: str = "killed"


@dataclass
class Figures:
    jobs: int
    workers: int
    duplicates: int
    fenced: int  # runs overlapping a successor after their lease was taken over (fenced out)
    lost: int
    kills: int
    kills_by_point: dict[str, int]
    restarts: int
    recovery_seconds: float | None
    wall_seconds: float

    def line(self, label: str) -> str:
        points = ", ".join(f"{k} {v}" for k, v in sorted(self.kills_by_point.items()))
        recovery = "n/a" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (
            f"faults[{label}]: {self.jobs} jobs, {self.workers} workers, {self.duplicates} "
            f"duplicates, {self.lost} lost, {self.kills} kills survived ({points}), "
            f"{self.fenced} stalled runs fenced out, "
            f"{self.restarts} restarts, {recovery}/kill recovery, {self.wall_seconds:.0f} s"
        )


@dataclass
class FaultRun:
    url: str
    tmp_path: Path
    workers: int
    lease_seconds: float
    faults: list[str]  # HARNESS_FAULTS for the first workers started, one each (claim:@7)
    random_kills: int  # SIGKILLs sent by the supervisor
    limit_seconds: float = 240  # only keeps a broken run from hanging the suite
    procs: dict[int, subprocess.Popen] = field(default_factory=dict)
    deaths: dict[int, float] = field(default_factory=dict)  # pid -> when seen dead
    killed: set[int] = field(default_factory=set)  # pids the supervisor SIGKILLed
    sigkilled: set[int] = field(default_factory=set)  # those and the fault points' victims
    restarts: int = 0
    planned: dict[int, str] = field(default_factory=dict)  # pid -> its HARNESS_FAULTS
    exit_codes: list[int] = field(default_factory=list)
    _started: int = 0

    def _start(self) -> None:
        self._started += 1
        log = open(self.tmp_path / f"w{self._started}.log", "w")  # noqa: SIM115 - child owns it
        faults = self.faults.pop() if self.faults else ""
        env = worker_env(self.tmp_path, HARNESS_FAULTS=faults)
        argv = worker_argv(self.url, "--lease-seconds", str(self.lease_seconds),
                           "--poll-seconds", "0.3", "--max-failures", "0")  # fmt: skip
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.procs[proc.pid] = proc
        self.planned[proc.pid] = faults

    def _replan(self, pid: int) -> None:
        """A worker that died (a random kill) before its planned fault fired passes the plan on
        to its replacement, so every kill point is hit."""
        path = self.tmp_path / "faults.log"
        fired = path.exists() and f" {pid} " in path.read_text()
        if self.planned.get(pid) and not fired:
            self.faults.append(self.planned[pid])

    def _done(self, engine) -> int:
        with engine.connect() as conn:
            return conn.execute(
                select(func.count()).select_from(Job).where(Job.status == "done")
            ).scalar_one()

    def run(self, engine, jobs: int) -> float:
        """Until all `jobs` are done; returns the wall time."""
        rng = random.Random(os.getpid())
        started = time.monotonic()
        for _ in range(self.workers):
            self._start()
        kills_left = self.random_kills
        next_kill = time.monotonic() + rng.uniform(0.5, 1.5)
        try:
            while self._done(engine) < jobs:
                if time.monotonic() - started > self.limit_seconds:
                    raise AssertionError(
                        f"{self._done(engine)} of {jobs} jobs done after {self.limit_seconds} s"
                    )
                now = time.time()
                for pid, proc in list(self.procs.items()):
                    if proc.poll() is not None:  # killed here or by a fault point: replace it
                        self.deaths.setdefault(pid, now)
                        self.exit_codes.append(proc.returncode)
                        if proc.returncode == -signal.SIGKILL:
                            self.sigkilled.add(pid)
                        self._replan(pid)
                        del self.procs[pid]
                        self._start()
                        self.restarts += 1
                if kills_left and time.monotonic() >= next_kill:
                    victim = rng.choice(list(self.procs.values()))
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    self.killed.add(victim.pid)
                    self.sigkilled.add(victim.pid)
                    self.deaths[victim.pid] = time.time()
                    kills_left -= 1
                    next_kill = time.monotonic() + rng.uniform(0.3, 1.2)
                time.sleep(0.1)
        finally:
            self.stop()
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM the live workers: each releases its job (if any) and exits 0."""
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for pid, proc in self.procs.items():
            try:
                code = proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            self.exit_codes.append(code)
            self.deaths.setdefault(pid, time.time())
        self.procs.clear()

    # -- what happened -----------------------------------------------------------------------

    def runs(self) -> list[Run]:
        runs: list[Run] = []
        open_runs: dict[tuple[int, str], Run] = {}
        for line in (self.tmp_path / "runs.log").read_text().splitlines():
            stamp, pid, kind, key, detail = line.split()
            if kind == "start":
                run = Run(key, int(pid), float(stamp))
                open_runs[(run.pid, key)] = run
                runs.append(run)
            else:
                run = open_runs.pop((int(pid), key))
                run.end, run.how = float(stamp), detail
        for run in open_runs.values():  # its process died inside it
            run.end = self.deaths[run.pid]
        return runs

    def fenced_runs(self, engine) -> set[tuple[int, str]]:
        """(pid, job key) of runs whose worker found its lease taken over (log: lease lost)."""
        with engine.connect() as conn:
            keys = dict(conn.execute(select(Job.id, Job.key)).all())
        pattern = re.compile(r"worker\[(\d+)\] WARNING job (\d+) .*lease lost")
        return {
            (int(m[1]), keys[int(m[2])])
            for log in self.tmp_path.glob("w*.log")
            for m in pattern.finditer(log.read_text())
        }

    def fault_kills(self) -> Counter:
        path = self.tmp_path / "faults.log"
        lines = path.read_text().splitlines() if path.exists() else []
        return Counter(line.split()[2] for line in lines)

    def figures(self, engine, jobs: int, wall: float) -> tuple[Figures, list[str]]:
        """The figures, and every inconsistency found (empty when all is well)."""
        problems: list[str] = []
        runs = self.runs()
        by_key: dict[str, list[Run]] = defaultdict(list)
        for run in runs:
            by_key[run.key].append(run)
        fenced = self.fenced_runs(engine)
        # Two live workers running one job at once: overlapping runs by different processes,
        # unless the earlier one had stalled past its lease and was fenced out (it says so).
        concurrent = stale = 0
        recoveries: list[float] = []
        for key_runs in by_key.values():
            key_runs.sort(key=lambda r: r.start)
            for earlier, later in zip(key_runs, key_runs[1:], strict=False):
                was_fenced = (earlier.pid, earlier.key) in fenced
                if later.start < (earlier.end or 0):
                    if was_fenced:
                        stale += 1
                    else:
                        concurrent += 1
                # Died inside the run, or after it returned but before its completion
                # committed: how long until another worker took the job up again.
                killed = earlier.pid in self.sigkilled and earlier.how in ("killed", "returned")
                if killed and not was_fenced:
                    recoveries.append(later.start - self.deaths[earlier.pid])
        with Session(engine) as session:
            statuses = Counter(session.scalars(select(Job.status)))
            results = session.scalar(select(func.count()).select_from(Result))
            done_counted = session.scalar(select(func.sum(WorkerRow.jobs_done))) or 0
            failed_counted = session.scalar(select(func.sum(WorkerRow.jobs_failed))) or 0
            epochs = session.execute(
                select(
                    EpochRow.job_id,
                    func.count(),
                    func.min(EpochRow.epoch),
                    func.max(EpochRow.epoch),
                ).group_by(EpochRow.job_id)  # fmt: skip
            ).all()
            gradients = Counter(session.scalars(select(GradientLayer.job_id)))
            extra_attempts = session.scalar(select(func.sum(Job.attempts - 1))) or 0
            epochs_run = dict(session.execute(select(Result.job_id, Result.epochs_run)).all())
        completions = done_counted - jobs  # a completion counted twice shows up here
        duplicates = concurrent + max(0, completions) + max(0, results - jobs)
        lost = jobs - statuses.get("done", 0)
        if lost:
            problems.append(f"{lost} jobs not done: {dict(statuses)}")
        if results != jobs or done_counted != jobs or failed_counted:
            problems.append(
                f"{results} result rows, {done_counted} completions and {failed_counted} "
                f"failures counted for {jobs} jobs"
            )
        bad_epochs = [row for row in epochs if (row[1], row[2], row[3]) != (epochs_run[row[0]],
                      1, epochs_run[row[0]])]  # fmt: skip
        if len(epochs) != jobs or bad_epochs:
            problems.append(f"epoch rows wrong for {len(bad_epochs)} jobs: {bad_epochs[:3]}")
        if len(gradients) != jobs or set(gradients.values()) != {4}:
            problems.append(f"gradient rows: {len(gradients)} jobs, {set(gradients.values())}")
        fault_kills = self.fault_kills()
        kills = len(self.killed) + sum(fault_kills.values())
        lost_leases = sum(
            log.read_text().count("lease lost") for log in self.tmp_path.glob("w*.log")
        )
        if extra_attempts > kills + lost_leases:
            problems.append(
                f"{extra_attempts} claims beyond the first, but only {kills} kills and "
                f"{lost_leases} lost leases explain them"
            )
        leftovers = sorted(p.name for p in (self.tmp_path / "checkpoints").glob("*"))
        if leftovers:
            problems.append(f"checkpoint files left after completion: {leftovers[:5]}")
        unexpected = [code for code in self.exit_codes if code not in (0, -signal.SIGKILL)]
        if unexpected:
            problems.append(f"worker exit codes other than 0 and SIGKILL: {unexpected}")
        figures = Figures(
            jobs=jobs,
            workers=self.workers,
            duplicates=duplicates,
            fenced=stale,
            lost=lost,
            kills=kills,
            kills_by_point={"random": len(self.killed), **fault_kills},
            restarts=self.restarts,
            recovery_seconds=sum(recoveries) / len(recoveries) if recoveries else None,
            wall_seconds=wall,
        )
        if duplicates:
            problems.append(f"{concurrent} overlapping runs, {completions} extra completions")
        return figures, problems
