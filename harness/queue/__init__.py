"""The job queue on the store: enqueue, atomic claim, fenced leases, retry (jobs); writing epochs and outcomes under a lease (recording); results imported from other tools (importing)."""
