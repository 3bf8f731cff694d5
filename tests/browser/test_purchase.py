"""The checkout sequence through the demo shop: buy and pay, decline, a double submit, cancel
from the payment page."""

from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse

from playwright.sync_api import expect

from kassa_pages import (
    CHECKOUT_URL,
    MUG,
    PAYMENT_URL,
    SHIPPING,
    TEE,
    add_to_cart,
    cart,
    decline,
    expect_outcome,
    field,
    fill_shipping,
    h1,
    open_shop,
    order_id_from_url,
    pay,
    payment_page,
    place_order_button,
    place_order_expecting_payment,
    start_checkout,
)

CONFIRMED = "Thank you! Your order is confirmed"


def test_full_purchase_through_the_demo_shop(kassa, page):
    sku, name = TEE
    open_shop(page, kassa.base_url)
    before = kassa.available(sku)
    add_to_cart(page, name)
    start_checkout(page)

    body = page.locator("body")
    expect(body).to_contain_text(name)
    expect(body).to_contain_text("€19.99")
    expect(field(page, "Email")).to_have_value("demo@example.com")
    methods = page.get_by_role("radiogroup", name="Payment method").or_(
        page.get_by_role("group", name="Payment method")
    )
    expect(methods.first.get_by_role("radio", name="Card", exact=True)).to_be_checked()
    back = page.get_by_role("link", name="Back to cart", exact=True)
    assert back.evaluate("a => a.href") == kassa.base_url + "/"

    fill_shipping(page)
    payment = place_order_expecting_payment(page)
    expect(body).to_contain_text(name)
    # The sandbox stands for a third-party gateway: either way of writing the amount will do.
    expect(body).to_contain_text(re.compile(r"€19\.99|19\.99 EUR"))
    expect(page.get_by_role("button", name="Decline", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Cancel and return to the shop", exact=True)).to_be_visible()
    assert kassa.available(sku) == before - 1, "placing the order reserves the T-shirt"

    pay(page)
    expect_outcome(page, CONFIRMED)
    expect(body).to_contain_text(payment.order_number)
    order = kassa.order(order_id_from_url(page))
    assert order["status"] == "processing", order
    assert kassa.available(sku) == before - 1, "the paid T-shirt leaves the stock once"
    kassa.wait_confirmation_mentioning(payment.order_number)


def test_declined_payment(kassa, page):
    sku, name = MUG
    open_shop(page, kassa.base_url)
    before = kassa.available(sku)
    add_to_cart(page, name)
    start_checkout(page)
    fill_shipping(page)
    payment = place_order_expecting_payment(page)

    decline(page)
    expect_outcome(page, "Payment failed")
    expect(page.locator("body")).to_contain_text(payment.order_number)
    order = kassa.order(order_id_from_url(page))
    assert order["status"] == "failed", order
    assert kassa.wait_available(sku, before) == before, "a failed payment releases the reservation"


def submitted_form(page) -> dict:
    """What the browser would send for the checkout form: its action and fields (the one-time
    key among them), as "Place order" submits it."""
    return place_order_button(page).evaluate(
        # (getAttribute: a field named "action", as the submit button is, hides form.action)
        """b => ({action: new URL(b.getAttribute('formaction') || b.form.getAttribute('action') || '',
                                 document.baseURI).href,
                  fields: Array.from(new FormData(b.form, b).entries())})"""
    )


def post_form(form: dict) -> tuple[int, str, str]:
    """POSTs FORM as the browser does, without following the redirect: (status, Location, body)."""
    request = urllib.request.Request(
        form["action"],
        data=urllib.parse.urlencode([(k, v) for k, v in form["fields"]]).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=15) as r:
            return r.status, r.headers.get("Location", ""), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Location", ""), e.read().decode(errors="replace")


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def same_payment_page(answers, payment_id: str) -> list[str]:
    """The answers that do not redirect to the payment page PAYMENT_ID, said in words."""
    wrong = []
    for status, location, body in answers:
        match = PAYMENT_URL.search(location)
        if status != 303 or not match or match.group(1) != payment_id:
            wrong.append(f"{status} Location={location!r} body={body[:1500]!r}")
    return wrong


def test_double_click_on_place_order_places_one_order(kassa, page):
    sku, name = TEE
    open_shop(page, kassa.base_url)
    before = kassa.available(sku)
    add_to_cart(page, name)
    start_checkout(page)
    fill_shipping(page)
    form = submitted_form(page)
    posts = []
    page.on("request", lambda r: r.method == "POST" and CHECKOUT_URL.search(r.url) and posts.append(r.url))

    place_order_button(page).dblclick()
    page.wait_for_url(PAYMENT_URL)
    payment = payment_page(page)
    print(f"the double click sent {len(posts)} POST(s) to the checkout page")

    # The same form once more (same one-time key), as a slow second click sends it: the
    # browser shows the last answer, so it must lead to the same payment page.
    wrong = same_payment_page([post_form(form)], payment.payment_id)
    assert not wrong, f"the repeated submit does not lead to {page.url}: {wrong}"
    assert kassa.available(sku) == before - 1, "one order reserves the T-shirt, not two"

    pay(page)
    expect_outcome(page, CONFIRMED)
    assert kassa.available(sku) == before - 1, "one order was placed and paid"


def test_simultaneous_submits_place_one_order(kassa, page):
    sku, name = MUG
    open_shop(page, kassa.base_url)
    before = kassa.available(sku)
    add_to_cart(page, name)
    start_checkout(page)
    fill_shipping(page)
    form = submitted_form(page)

    # Two submits of the same form at the same moment (a double click the browser did not
    # swallow, a retried request).
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(lambda _: post_form(form), range(2)))
    first = next((PAYMENT_URL.search(loc) for _, loc, _ in answers if PAYMENT_URL.search(loc)), None)
    assert first, f"neither submit led to a payment page: {answers}"
    wrong = same_payment_page(answers, first.group(1))
    assert not wrong, f"both submits must lead to the payment page {first.group(0)}; also got: {wrong}"
    assert kassa.available(sku) == before - 1, "one order reserves the mug, not two"

    page.goto(urllib.parse.urljoin(kassa.base_url, answers[0][1]))
    payment_page(page)
    pay(page)
    expect_outcome(page, CONFIRMED)
    assert kassa.available(sku) == before - 1, "one order was placed and paid"


def test_cancel_on_the_payment_page_returns_an_editable_cart(kassa, page):
    tee_sku, tee = TEE
    _, mug = MUG
    open_shop(page, kassa.base_url)
    before = kassa.available(tee_sku)
    add_to_cart(page, tee)
    start_checkout(page)
    fill_shipping(page)
    payment = place_order_expecting_payment(page)
    order_id = kassa.payment(payment.payment_id)["orderId"]
    assert kassa.available(tee_sku) == before - 1

    page.get_by_role("link", name="Cancel and return to the shop", exact=True).click()
    page.wait_for_url(lambda url: bool(CHECKOUT_URL.search(url)) or urlparse(url).path == "/")
    if CHECKOUT_URL.search(page.url):
        expect(h1(page, "Checkout")).to_be_visible()
        expect(place_order_button(page)).to_be_enabled()
    else:
        expect(h1(page, "Demo shop")).to_be_visible()
    order = kassa.order(order_id)
    assert order["status"] == "cancelled", order
    assert kassa.available(tee_sku) == before, "the cancelled order's reservation is released"

    # The cart is unlocked at once, with its line kept: another product goes in.
    open_shop(page, kassa.base_url)
    add_to_cart(page, mug)
    expect(cart(page)).to_contain_text(tee)
    expect(cart(page)).not_to_contain_text(re.compile("locked", re.IGNORECASE))


def test_purchase_without_javascript(kassa, new_context):
    """The pages are server-rendered and work with JavaScript off (the order page refreshes
    itself without it too)."""
    page = new_context(java_script_enabled=False).new_page()
    sku, name = TEE
    open_shop(page, kassa.base_url)
    before = kassa.available(sku)
    add_to_cart(page, name)
    start_checkout(page)
    fill_shipping(page)
    payment = place_order_expecting_payment(page)
    pay(page)
    expect_outcome(page, CONFIRMED)
    expect(page.locator("body")).to_contain_text(payment.order_number)
    assert kassa.available(sku) == before - 1


def tab_to(page, target, presses: int = 40) -> None:
    """Presses Tab until TARGET has the focus (fails after PRESSES)."""
    for _ in range(presses):
        page.keyboard.press("Tab")
        if target.evaluate("e => e === document.activeElement"):
            return
    raise AssertionError(f"{target} is not reached with Tab in {presses} presses")


def test_purchase_with_the_keyboard(kassa, page):
    """Checkout and payment by keyboard alone: Tab to each field and button, Enter to press."""
    _, name = MUG
    open_shop(page, kassa.base_url)
    add_to_cart(page, name)
    start_checkout(page)
    for label, value in SHIPPING.items():
        tab_to(page, field(page, label))
        page.keyboard.type(value)
    for label, value in SHIPPING.items():
        expect(field(page, label)).to_have_value(value)
    tab_to(page, place_order_button(page))
    with page.expect_navigation():
        page.keyboard.press("Enter")
    page.wait_for_url(PAYMENT_URL)
    payment_page(page)
    tab_to(page, page.get_by_role("button", name="Pay", exact=True))
    page.keyboard.press("Enter")
    expect_outcome(page, CONFIRMED)
