"""`etong report --format html` opened in a real headless Chromium (DESIGN §10): the page
renders offline with no console error and no network request, shows the expected totals,
prints on A4; a screenshot and the PDF stay in the test's tmp dir as artefacts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.browser import headless_page
from tests.integration.conftest import Harness
from tests.integration.test_report_cli import NOVEMBER, _config, _run
from tests.integration.test_report_figures import _november_traffic

A4_POINTS = (595, 842)  # 210 x 297 mm at 72 points an inch, rounded

READ_FIGURES = """
Object.fromEntries(Array.from(document.querySelectorAll('section.station')).map(
  s => [s.dataset.station, Object.fromEntries(Array.from(s.querySelectorAll('[data-figure]'))
    .map(e => [e.dataset.figure, e.textContent.trim()]))]))
"""


async def test_the_page_renders_offline_with_the_expected_totals(
    harness: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await _november_traffic(harness)
    page_file = tmp_path / "november.html"
    code, _, _ = await _run(
        capsys,
        _config(harness, tmp_path / "etong.toml"),
        *NOVEMBER,
        "--format",
        "html",
        "--out",
        str(page_file),
    )
    assert code == 0
    html = page_file.read_text(encoding="utf-8")
    # Nothing to fetch: no src or href at all, no URL but the SVG namespace's name.
    assert not re.search(r"\b(src|href)\s*=", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) <= {"http://www.w3.org/2000/svg"}

    async with headless_page(tmp_path / "chromium-profile") as page:
        await page.open(page_file.as_uri())
        figures = await page.evaluate(READ_FIGURES)
        title = await page.evaluate("document.title")
        shot = await page.screenshot(tmp_path / "november.png")
        pdf = await page.pdf(tmp_path / "november.pdf")

    assert page.visit.requests == [page_file.as_uri()]  # the page itself, nothing else
    assert page.visit.console_errors == []
    station = figures["zhuangshi"]
    assert (station["reports"], station["accepted"], station["open"]) == ("5", "2", "1")
    assert (station["received"], station["verified"]) == ("1", "1")
    assert station["registrar_copy"] == "2" and station["silent_grids"] == "1"
    assert figures["*"]["reports"] == "5"  # the total of every station
    assert "网格上报统计" in title and "2026-11-01" in title
    assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    sizes = {
        (round(float(w)), round(float(h)))
        for w, h in re.findall(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", pdf.read_bytes())
    }
    assert sizes == {A4_POINTS}
