"""The suite's own machinery, without Kassa: Playwright drives Debian's Chromium, and axe-core
runs in it and reports what it should."""

from __future__ import annotations

import urllib.parse

from playwright.sync_api import expect

from axe_check import run_axe, serious

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Probe</title></head>
<body><main>
<h1>Probe</h1>
<form onsubmit="event.preventDefault(); document.getElementById('out').textContent = 'Hello ' + this.who.value">
  <label for="who">Name</label> <input id="who" name="who">
  <button type="submit">Greet</button>
</form>
<p id="out"></p>
%s
</main></body></html>"""


def data_url(html: str) -> str:
    return "data:text/html;charset=utf-8," + urllib.parse.quote(html)


def test_chromium_drives_a_page(browser, page):
    assert browser.version.split(".")[0].isdigit(), browser.version
    print(f"Chromium {browser.version}")
    page.goto(data_url(PAGE % ""))
    page.get_by_label("Name", exact=True).fill("Kassa")
    page.get_by_role("button", name="Greet").click()
    expect(page.locator("#out")).to_have_text("Hello Kassa")
    assert page.screenshot(full_page=True)[:8] == b"\x89PNG\r\n\x1a\n"


def test_axe_finds_nothing_on_a_clean_page(page, axe_js):
    page.goto(data_url(PAGE % ""))
    result = run_axe(page, axe_js)
    assert result["passes"], "axe ran no check at all"
    assert serious(result) == []


def test_axe_reports_a_critical_violation(page, axe_js):
    # An image without alt text is a critical violation (image-alt).
    page.goto(data_url(PAGE % '<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw=">'))
    ids = [v["id"] for v in serious(run_axe(page, axe_js))]
    assert "image-alt" in ids, ids
