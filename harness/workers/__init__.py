"""Processes that drain the queue: the worker loop (loop), a fused seed cohort (cohort), heartbeat and runner (parts), child processes per slot (processes), Slurm/local launch (launch)."""
