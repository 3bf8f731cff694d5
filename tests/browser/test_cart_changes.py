"""409 at checkout: a price changed, a line sold out or only some units left between adding to
the cart and placing the order. The shopper is told per line, updates the cart and buys."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from kassa_pages import (
    add_to_cart,
    expect_outcome,
    field,
    fill_shipping,
    h1,
    open_shop,
    pay,
    place_order,
    place_order_expecting_payment,
    start_checkout,
)

CONFLICT = "Items not available or prices changed"


def update_and_continue(page) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Update cart and continue", exact=True).click()
    expect(h1(page, "Checkout")).to_be_visible()


def test_price_change_and_sold_out_line(kassa, page):
    hoodie = ("bt-hoodie", "Browser test hoodie")
    cap = ("bt-cap", "Browser test cap")
    kassa.put_product(hoodie[0], hoodie[1], price=1999, stock=10)
    kassa.put_product(cap[0], cap[1], price=1250, stock=5)

    open_shop(page, kassa.base_url)
    add_to_cart(page, hoodie[1])
    add_to_cart(page, cap[1])
    start_checkout(page)
    typed = fill_shipping(
        page, {"Full name": "Grace Hopper", "Address line 2 (optional)": "Flat 3"}
    )

    kassa.put_product(hoodie[0], hoodie[1], price=2499, stock=10)
    kassa.put_product(cap[0], cap[1], price=1250, stock=0)
    place_order(page)

    expect(h1(page, CONFLICT)).to_be_visible()
    body = page.locator("body")
    expect(body).to_contain_text(hoodie[1])
    expect(body).to_contain_text("Price changed from €19.99 to €24.99")
    expect(body).to_contain_text(cap[1])
    expect(body).to_contain_text("No longer available")
    expect(page.get_by_role("link", name="Review cart", exact=True)).to_be_visible()

    update_and_continue(page)
    for label, value in typed.items():
        expect(field(page, label)).to_have_value(value)
    expect(body).to_contain_text("€24.99")

    place_order_expecting_payment(page)
    expect(body).to_contain_text(re.compile(r"€24\.99|24\.99 EUR"))
    pay(page)
    expect_outcome(page, "Thank you! Your order is confirmed")
    assert kassa.wait_available(hoodie[0], 9) == 9
    assert kassa.available(cap[0]) == 0


def test_only_some_units_left(kassa, page):
    socks = ("bt-socks", "Browser test socks")
    kassa.put_product(socks[0], socks[1], price=500, stock=5)

    open_shop(page, kassa.base_url)
    add_to_cart(page, socks[1])
    add_to_cart(page, socks[1])  # quantity 2
    start_checkout(page)
    fill_shipping(page)

    kassa.put_product(socks[0], socks[1], price=500, stock=1)
    place_order(page)
    expect(h1(page, CONFLICT)).to_be_visible()
    expect(page.locator("body")).to_contain_text("Only 1 left")

    update_and_continue(page)
    expect(page.locator("body")).to_contain_text("€5.00")
    place_order_expecting_payment(page)
    pay(page)
    expect_outcome(page, "Thank you! Your order is confirmed")
    assert kassa.wait_available(socks[0], 0) == 0
