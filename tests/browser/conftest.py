"""Fixtures of Kassa's browser suite.

- `browser`: Debian's Chromium (KASSA_CHROMIUM), headless, launched by Playwright once per run.
- `kassa`: a Kassa server (KASSA_BIN `serve`, development mode) on a free loopback port with a
  fresh data dir, one per test module; stopped with SIGTERM (SIGKILL after 15 s).
- `new_context` / `page`: a fresh browser context per test (its own demo shopper cookie). When a
  test fails, every page it opened is saved (screenshot and HTML under
  KASSA_BROWSER_SHOTS/failures/) and its URL, title and text are printed, with the end of the
  server's log.

Everything the suite needs comes from the environment scripts/browser.sh sets; a missing
piece fails the run (nothing is skipped).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from artifacts import shots_dir
from kassa_client import Kassa

# Generous enough for a loaded 2-core machine, short enough that a broken page fails fast.
ACTION_TIMEOUT_MS = 10_000
expect.set_options(timeout=ACTION_TIMEOUT_MS)


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite with scripts/browser.sh test", pytrace=False)
    return value


def required_file(name: str) -> Path:
    path = Path(required_env(name))
    if not path.is_file():
        pytest.fail(f"{name}={path} does not exist: run scripts/browser.sh setup", pytrace=False)
    return path


@pytest.fixture(scope="session")
def axe_js() -> Path:
    return required_file("KASSA_AXE_JS")


@pytest.fixture(scope="session")
def browser() -> Browser:
    chromium = required_file("KASSA_CHROMIUM")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            # /dev/shm is small in containers; Chromium then crashes on big pages.
            args=["--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


# --- Kassa -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KassaProcess:
    """One `kassa serve` in development mode with its own data dir."""

    def __init__(self, binary: Path, data_dir: Path):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = data_dir / "kassa.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def env(self) -> dict[str, str]:
        # Only this server's settings: whatever KASSA_* the caller has (a gateway, an SMTP
        # URL, the suite's own variables) must not reach it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("KASSA_")}
        config = self.data_dir / "kassa.toml"
        config.touch()
        env.update(
            KASSA_ENV="development",
            KASSA_LISTEN=f"127.0.0.1:{self.port}",
            KASSA_PUBLIC_URL=f"http://127.0.0.1:{self.port}",
            KASSA_DATA_DIR=str(self.data_dir),
            KASSA_STORE=f"embedded:{self.data_dir / 'store'}",
            KASSA_CONFIG=str(config),
            KASSA_RESERVATION_TTL="15m",
        )
        return env

    def start(self) -> None:
        last_error = ""
        for _attempt in range(3):
            self.port = free_port()
            log = open(self.log_path, "ab")
            self.proc = subprocess.Popen(
                [str(self.binary), "serve"],
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            log.close()
            try:
                self.wait_ready()
                return
            except RuntimeError as e:
                last_error = str(e)
                self.stop()
                if "address" not in self.log_tail(20).lower():
                    break  # not a port race: trying again would not help
        raise RuntimeError(f"Kassa did not start: {last_error}\n--- kassa.log ---\n{self.log_tail(60)}")

    def wait_ready(self, timeout: float = 30.0) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"kassa serve exited with status {self.proc.returncode}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"GET /readyz did not answer 200 within {timeout:.0f} s")

    def admin_token(self) -> str:
        out = subprocess.run(
            [str(self.binary), "token", "--sub", "admin", "--admin"],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0 or not out.stdout.strip():
            raise RuntimeError(
                f"kassa token exited {out.returncode}: {out.stderr.strip() or out.stdout.strip()}"
            )
        return out.stdout.splitlines()[0].strip()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)

    def log_tail(self, lines: int) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # the log's colours
        return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="module")
def kassa(request) -> Kassa:
    binary = required_file("KASSA_BIN")
    with tempfile.TemporaryDirectory(prefix="kassa-browser-") as tmp:
        process = KassaProcess(binary, Path(tmp))
        try:
            process.start()
            client = Kassa(
                base_url=f"http://127.0.0.1:{process.port}",
                data_dir=Path(tmp),
                admin_token=process.admin_token(),
                log_tail=process.log_tail,
            )
            yield client
        finally:
            process.stop()


# --- browser contexts and failure reports ------------------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:120]


def report_pages(name: str, contexts: list[BrowserContext]) -> None:
    out = shots_dir() / "failures"
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for context in contexts:
        for page in context.pages:
            n += 1
            base = out / f"{_slug(name)}-{n}"
            print(f"\n--- page {n} at failure: {page.url}")
            try:
                print(f"title: {page.title()!r}")
                page.screenshot(path=f"{base}.png", full_page=True)
                Path(f"{base}.html").write_text(page.content())
                text = page.locator("body").inner_text(timeout=2000)
                print(f"saved {base}.png and .html; the page's text:\n{text[:4000]}")
            except Exception as e:  # a closed or crashed page still lets the others report
                print(f"(could not read the page: {e})")


@pytest.fixture
def new_context(request, browser: Browser):
    """Factory: a fresh context (own cookies: its own demo shopper). Closed after the test."""
    contexts: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        options.setdefault("viewport", {"width": 1280, "height": 900})
        context = browser.new_context(**options)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        report_pages(request.node.name, contexts)
        kassa = request.node.funcargs.get("kassa")
        if kassa is not None:
            print(f"\n--- the end of Kassa's log ({kassa.base_url}):\n{kassa.log_tail(40)}")
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context) -> Page:
    return new_context().new_page()
