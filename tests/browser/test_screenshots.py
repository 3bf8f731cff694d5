"""The pages at a 320 px phone width and a 1280 px desktop width: full-page screenshots, and no
horizontal scrolling on the phone.

docs/checkout-320.png and docs/checkout-1280.png go to the repository's docs/; every page's
pair (checkout, conflict = the 409 page, payment, order) goes to KASSA_BROWSER_SHOTS."""

from __future__ import annotations

import shutil

from artifacts import repo_root, shots_dir
from kassa_pages import walk_checkout_pages

WIDTHS = (320, 1280)


def test_pages_at_phone_and_desktop_width(kassa, new_context):
    page = new_context(viewport={"width": 1280, "height": 800}).new_page()
    shots = shots_dir()
    docs = repo_root() / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    overflows = []

    def shoot(name, page):
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 800})
            if width == 320:
                scroll = page.evaluate("() => document.documentElement.scrollWidth")
                if scroll > width:
                    wide = page.evaluate(
                        """w => Array.from(document.querySelectorAll('body *'))
                               .filter(e => e.getBoundingClientRect().right > w)
                               .slice(0, 5)
                               .map(e => e.outerHTML.slice(0, 160))""",
                        width,
                    )
                    overflows.append(f"{name}: scrollWidth {scroll} > {width}; too wide: {wide}")
            path = shots / f"{name}-{width}.png"
            page.screenshot(path=str(path), full_page=True)
            if name == "checkout":
                shutil.copyfile(path, docs / f"checkout-{width}.png")
        page.set_viewport_size({"width": 1280, "height": 800})

    walk_checkout_pages(page, kassa, shoot)
    print(f"screenshots in {shots} and {docs}/checkout-*.png")
    assert not overflows, "horizontal scrolling at 320 px:\n" + "\n".join(overflows)
