"""A small client of Kassa's JSON API (admin token) and of its dev mail folder, for the
browser tests' set-up and checks."""

from __future__ import annotations

import email
import email.policy
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ApiError(AssertionError):
    pass


@dataclass
class Kassa:
    base_url: str
    data_dir: Path
    admin_token: str = field(repr=False)
    log_tail: Callable[[int], str] = field(repr=False)

    def url(self, path: str) -> str:
        return self.base_url + path

    def api(self, method: str, path: str, body: Any = None, token: str | None = "admin") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/json")
        if token == "admin":
            token = self.admin_token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return status, parsed

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, parsed = self.api(method, path, body)
        if not 200 <= status < 300:
            raise ApiError(f"{method} {path} answered {status}: {parsed}")
        return parsed

    # --- catalog ---

    def put_product(self, sku: str, name: str, price: int, stock: int, currency: str = "EUR") -> dict:
        return self.ok(
            "PUT",
            f"/api/admin/products/{sku}",
            {"name": name, "price": price, "currency": currency, "stock": stock},
        )

    def product(self, sku: str) -> dict:
        return self.ok("GET", f"/api/products/{sku}")

    def available(self, sku: str) -> int:
        return self.product(sku)["available"]

    def wait_available(self, sku: str, expected: int, timeout: float = 10.0) -> int:
        """`available` of SKU once it equals EXPECTED (it changes when a webhook lands), or
        its last value after TIMEOUT seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.available(sku)
            if value == expected or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    # --- orders and payments ---

    def order(self, order_id: str) -> dict:
        return self.ok("GET", f"/api/orders/{order_id}")

    def payment(self, payment_id: str) -> dict:
        """The built-in sandbox gateway's view of a payment (`orderId`, `status`, ...)."""
        return self.ok("GET", f"/sandbox/payments/{payment_id}")

    # --- dev mail (KASSA_DATA_DIR/mail/*.eml) ---

    def mail_dir(self) -> Path:
        return self.data_dir / "mail"

    def confirmation_mails(self) -> list[Path]:
        return sorted(self.mail_dir().glob("*.confirmation.eml"))

    def wait_confirmation_mentioning(self, text: str, timeout: float = 10.0) -> Path:
        deadline = time.monotonic() + timeout
        while True:
            for path in self.confirmation_mails():
                if text in readable_mail(path):
                    return path
            if time.monotonic() > deadline:
                found = [p.name for p in self.confirmation_mails()]
                raise AssertionError(
                    f"no *.confirmation.eml in {self.mail_dir()} mentions {text!r} after "
                    f"{timeout:.0f} s; confirmation files there: {found or 'none'}"
                )
            time.sleep(0.2)


def readable_mail(path: Path) -> str:
    """The subject and every text part of an .eml file, transfer encodings decoded."""
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    parts = [str(message.get("Subject", ""))]
    for part in message.walk():
        if part.get_content_maintype() == "text":
            try:
                parts.append(part.get_content())
            except (LookupError, ValueError):
                parts.append(part.get_payload(decode=True).decode("utf-8", errors="replace"))
    return "\n".join(parts)
