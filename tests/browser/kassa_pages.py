"""What a shopper does on Kassa's pages, found by the exact labels and headings of the
contract (API.md, "Shopper pages")."""

from __future__ import annotations

import re
from dataclasses import dataclass

from playwright.sync_api import Locator, Page, expect

# API.md's example is K-7F3Q-9D2M; Kassa's numbers have 4 to 6 characters a group.
ORDER_NUMBER = re.compile(r"\bK-[A-Z0-9]{4,6}-[A-Z0-9]{4,6}\b")
PAYMENT_URL = re.compile(r"/sandbox/pay/([^/?#]+)")
CHECKOUT_URL = re.compile(r"/checkout/([^/?#]+)")
ORDER_URL = re.compile(r"/orders/([0-9a-fA-F-]{36})\?t=")

# How long the order page may take to show the outcome: it shows "Waiting for your payment"
# and refreshes itself until the sandbox's webhook lands.
OUTCOME_TIMEOUT_MS = 15_000

SHIPPING = {
    "Full name": "Ada Lovelace",
    "Address line 1": "Invalidenstraße 117",
    "City": "Berlin",
    "Postal code": "10115",
    "Country": "DE",
}

TEE = ("kassa-tee", "Kassa T-shirt")
MUG = ("kassa-mug", "Kassa mug")


def h1(page: Page, name: str) -> Locator:
    return page.get_by_role("heading", level=1, name=name, exact=True)


# --- the demo shop (GET /) ---


def open_shop(page: Page, base_url: str) -> None:
    page.goto(base_url + "/")
    expect(h1(page, "Demo shop")).to_be_visible()


def add_to_cart(page: Page, product_name: str) -> None:
    """Clicks "Add to cart" in the product's <article>; the form posts and comes back to /."""
    button = page.locator("article", has_text=product_name).get_by_role(
        "button", name="Add to cart", exact=True
    )
    with page.expect_navigation():
        button.click()
    expect(h1(page, "Demo shop")).to_be_visible()
    expect(cart(page)).to_contain_text(product_name)


def cart(page: Page) -> Locator:
    """The element holding the h2 "Your cart" and the cart's lines."""
    return page.get_by_role("heading", level=2, name="Your cart", exact=True).locator("xpath=..")


def start_checkout(page: Page) -> str:
    """Clicks the cart's "Checkout"; returns the checkout session id of the page it lands on."""
    cart(page).get_by_role("button", name="Checkout", exact=True).click()
    page.wait_for_url(CHECKOUT_URL)
    expect(h1(page, "Checkout")).to_be_visible()
    return CHECKOUT_URL.search(page.url).group(1)


# --- the checkout page ---


def field(page: Page, label: str) -> Locator:
    return page.get_by_label(label, exact=True)


def fill_field(page: Page, label: str, value: str) -> None:
    control = field(page, label)
    if control.evaluate("e => e.tagName") == "SELECT":
        control.select_option(value)
    else:
        control.fill(value)


def fill_shipping(page: Page, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Fills the shipping form with SHIPPING, OVERRIDES (by label) on top; returns what it typed."""
    values = dict(SHIPPING)
    values.update(overrides or {})
    for label, value in values.items():
        fill_field(page, label, value)
    return values


def place_order_button(page: Page) -> Locator:
    return page.get_by_role("button", name="Place order", exact=True)


def place_order(page: Page) -> None:
    """Clicks "Place order" and waits for the next page to load, whatever it is."""
    with page.expect_navigation():
        place_order_button(page).click()


def place_order_expecting_payment(page: Page) -> "PaymentPage":
    place_order(page)
    page.wait_for_url(PAYMENT_URL)
    return payment_page(page)


# --- the sandbox payment page ---


@dataclass
class PaymentPage:
    payment_id: str
    order_number: str


def payment_page(page: Page) -> PaymentPage:
    expect(page.get_by_role("button", name="Pay", exact=True)).to_be_visible()
    match = ORDER_NUMBER.search(page.locator("body").inner_text())
    assert match, (
        "the payment page shows no order number (K-XXXX-XXXX); it shows:\n"
        + page.locator("body").inner_text()
    )
    return PaymentPage(payment_id=PAYMENT_URL.search(page.url).group(1), order_number=match.group(0))


def pay(page: Page) -> None:
    page.get_by_role("button", name="Pay", exact=True).click()
    page.wait_for_url(ORDER_URL)


def decline(page: Page) -> None:
    page.get_by_role("button", name="Decline", exact=True).click()
    page.wait_for_url(ORDER_URL)


def expect_outcome(page: Page, heading: str) -> None:
    """The order page's heading turns to HEADING (after "Waiting for your payment" and the
    page's own refreshes, if the webhook has not landed yet)."""
    expect(h1(page, heading)).to_be_visible(timeout=OUTCOME_TIMEOUT_MS)


def order_id_from_url(page: Page) -> str:
    return ORDER_URL.search(page.url).group(1)


def buy(page: Page, base_url: str, *product_names: str) -> PaymentPage:
    """Demo shop to payment page: adds each product, checks out, fills, places the order."""
    open_shop(page, base_url)
    for name in product_names:
        add_to_cart(page, name)
    start_checkout(page)
    fill_shipping(page)
    return place_order_expecting_payment(page)


# --- every page of the sequence, for screenshots and accessibility checks ---

CONFLICT_HEADING = "Items not available or prices changed"


def walk_checkout_pages(page: Page, kassa, visit) -> None:
    """Leads PAGE through the checkout page, the 409 page, the sandbox payment page and the
    paid order page, calling VISIT(name, page) on each ("checkout", "conflict", "payment",
    "order"). Changes the demo T-shirt's price and sells out the mug on the way (KASSA is the
    module's own server)."""
    open_shop(page, kassa.base_url)
    add_to_cart(page, TEE[1])
    add_to_cart(page, MUG[1])
    start_checkout(page)
    visit("checkout", page)

    fill_shipping(page)
    tee = kassa.product(TEE[0])
    kassa.put_product(TEE[0], tee["name"], price=tee["price"] + 500, stock=tee["available"])
    mug = kassa.product(MUG[0])
    kassa.put_product(MUG[0], mug["name"], price=mug["price"], stock=0)
    place_order(page)
    expect(h1(page, CONFLICT_HEADING)).to_be_visible()
    visit("conflict", page)

    with page.expect_navigation():
        page.get_by_role("button", name="Update cart and continue", exact=True).click()
    expect(h1(page, "Checkout")).to_be_visible()
    place_order_expecting_payment(page)
    visit("payment", page)

    pay(page)
    expect_outcome(page, "Thank you! Your order is confirmed")
    visit("order", page)
