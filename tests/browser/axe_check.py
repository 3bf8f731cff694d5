"""axe-core (from npm, KASSA_AXE_JS) run in a page, and its violations said readably."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Page

BLOCKING = ("serious", "critical")


def run_axe(page: Page, axe_js: Path) -> dict:
    """Injects axe-core into PAGE and returns `axe.run()`'s result. The page's context needs
    `bypass_csp=True` where the page forbids inline scripts (Kassa's pages do)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(path=str(axe_js))
    return page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")


def serious(result: dict) -> list[dict]:
    return [v for v in result["violations"] if v.get("impact") in BLOCKING]


def describe(violations: list[dict], where: str) -> str:
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {where}: {v['id']}: {v['help']} ({v['helpUrl']})")
        for node in v["nodes"][:10]:
            target = " ".join(str(t) for t in node.get("target", []))
            lines.append(f"    at {target}: {node.get('html', '')[:200]}")
            summary = (node.get("failureSummary") or "").strip().replace("\n", "\n      ")
            if summary:
                lines.append(f"      {summary}")
        if len(v["nodes"]) > 10:
            lines.append(f"    ... and {len(v['nodes']) - 10} more elements")
    return "\n".join(lines)
