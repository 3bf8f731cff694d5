"""axe-core on the shopper pages: no serious or critical violation on the checkout page, the
409 page, the sandbox payment page and the order page."""

from __future__ import annotations

from axe_check import describe, run_axe, serious
from kassa_pages import walk_checkout_pages


def test_no_serious_axe_violations(kassa, new_context, axe_js):
    # Kassa's pages forbid inline scripts (CSP); the injected axe-core needs them.
    page = new_context(bypass_csp=True).new_page()
    found = []
    checked = []

    def check(name, page):
        result = run_axe(page, axe_js)
        checked.append(name)
        blocking = serious(result)
        others = [v["id"] for v in result["violations"] if v not in blocking]
        if others:
            print(f"{name}: minor or moderate (not failing): {', '.join(others)}")
        if blocking:
            found.append(describe(blocking, f"{name} page ({page.url})"))

    walk_checkout_pages(page, kassa, check)
    assert checked == ["checkout", "conflict", "payment", "order"], checked
    assert not found, "axe-core found serious or critical violations:\n" + "\n".join(found)
