"""Sequential audits (`harness audit`): queue seeds only where a claim part is still open.

spec.py holds an audit's definition and its database row; plan.py decides, from the database's
jobs and results alone, which seeds to queue next and which parts are done; run.py is the loop
that applies the plan until every part is decided, at its horizon or out of budget. The
procedure that decides a part is harness.report.sequential (docs/STATISTICS.md).
"""

DEFAULT_HORIZON = 20  # the most seeds per part when only a budget is given
DEFAULT_POLL_SECONDS = 10.0
