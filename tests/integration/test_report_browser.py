"""The HTML report in a real headless Chromium: tables, figures, claims, sorting, no errors.

Needs Debian's Chromium (/usr/bin/chromium). Without it the test is skipped, unless
HARNESS_REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from synthetic_db import sample_report

CHROMIUM = os.environ.get("HARNESS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.browser


def _browser_or_skip() -> str:
    missing = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing = "the playwright Python package is not installed (pip install playwright)"
    if missing is None and not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    if missing:
        if os.environ.get("HARNESS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"HARNESS_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    return CHROMIUM


def _column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"{table} tbody tr",
        f"rows => rows.map(r => r.children[{index}].getAttribute('data-sort') || '')",
    )


def test_report_in_headless_chromium(tmp_path_factory):
    executable = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    _, index = sample_report(tmp_path_factory.mktemp("sample"))
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=LAUNCH_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda exc: problems.append(str(exc)))
            page.on("requestfailed", lambda req: problems.append(f"failed: {req.url}"))
            page.goto(index.resolve().as_uri(), wait_until="load")

            table3 = 'table[data-table="3"] >> nth=0'
            assert page.locator(table3).is_visible()
            assert page.locator("table.report-table").count() == 7 + 7  # two protocols
            assert page.get_by_text("Tiny ImageNet").first.is_visible()

            # Every figure loaded (decoded with a width), none broken.
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            assert len(widths) >= 8 and min(widths) > 0

            claims = page.locator("#p-paper-claims")
            claims.scroll_into_view_if_needed()
            assert claims.is_visible() and page.locator(".claim").count() > 0
            verdicts = set(page.locator(".claim .verdict").all_inner_texts())
            assert verdicts <= {"SUPPORTED", "CONTRADICTED", "INCONCLUSIVE", "UNTESTABLE"}

            # Sort Table 3 by the ResNet-18 column: numbers ascending, "no data" rows last.
            selector = 'section#p-paper table[data-table="3"]'
            header = page.locator(f"{selector} thead th", has_text="ResNet-18")
            header.click()
            values = _column(page, selector, 1)
            numbers = [float(v) for v in values if v]
            assert numbers == sorted(numbers) and len(numbers) == 3
            assert values[: len(numbers)] == [v for v in values if v]  # data on top
            assert header.get_attribute("aria-sort") == "ascending"
            header.click()
            values = _column(page, selector, 1)
            assert [float(v) for v in values if v] == sorted(numbers, reverse=True)
            assert header.get_attribute("aria-sort") == "descending"

            # Audit sections: a claims-by-arm verdict leads to that arm's claim details.
            link = page.locator('table[data-audit="claims-by-arm"] tbody tr >> nth=0').locator(
                "a >> nth=1"
            )
            target = link.get_attribute("href")
            assert target.startswith("#p-reference-code-claim-")
            link.click()
            assert page.evaluate("location.hash") == target
            assert page.locator(target).is_visible()
            assert page.locator('table[data-audit="diff-0"]').is_visible()

            # The markup-named model is text on the page, and no script of its ran.
            assert page.get_by_text("<script>alert(1)</script>").count() >= 1
            assert page.evaluate("document.scripts.length") == 1
        finally:
            browser.close()
    assert problems == []
