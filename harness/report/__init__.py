"""The report: Tables 3-9, statistics, claims and figures, built from the results database only.

Entry point: `harness.report.render.build_report` (what `harness report` and `harness demo`
call). Layers, top down: render -> html, export -> data -> tables, claims, figures ->
claim_parts, decision -> power, signed_rank, verdicts, stats -> load.
"""
