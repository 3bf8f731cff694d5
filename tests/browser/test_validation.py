"""422 at checkout: an invalid field is marked for the eye and the screen reader, and what the
shopper typed is kept."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from kassa_pages import (
    CHECKOUT_URL,
    TEE,
    add_to_cart,
    field,
    fill_field,
    fill_shipping,
    h1,
    open_shop,
    place_order,
    place_order_button,
    place_order_expecting_payment,
    start_checkout,
)


def test_invalid_postal_code_is_marked_and_the_form_kept(kassa, page):
    open_shop(page, kassa.base_url)
    add_to_cart(page, TEE[1])
    start_checkout(page)
    typed = fill_shipping(page, {"Full name": "Katherine Johnson", "Postal code": "12#45!"})

    # The server's answer is under test: the browser must let the form go.
    refusal = place_order_button(page).evaluate(
        """b => { const bad = Array.from(b.form.elements).find(e => e.willValidate && !e.checkValidity());
                   return bad ? `${bad.name || bad.id}: ${bad.validationMessage}` : null; }"""
    )
    if refusal:
        pytest.fail(
            f"the browser itself refuses to submit the form ({refusal}), so the server's 422 "
            "page is never reached"
        )
    place_order(page)

    assert CHECKOUT_URL.search(page.url), f"expected the checkout form again, at {page.url}"
    expect(h1(page, "Checkout")).to_be_visible()
    postal = field(page, "Postal code")
    expect(postal).to_have_attribute("aria-invalid", "true")
    for label, value in typed.items():
        expect(field(page, label)).to_have_value(value)
        if label != "Postal code":
            expect(field(page, label)).not_to_have_attribute("aria-invalid", "true")

    # The message is tied to the field, so a screen reader says it with the field.
    ids = " ".join(
        filter(None, [postal.get_attribute("aria-describedby"), postal.get_attribute("aria-errormessage")])
    ).split()
    assert ids, "the invalid Postal code names no message (aria-describedby / aria-errormessage)"
    messages = [page.locator(f"[id='{i}']") for i in ids]
    texts = [m.inner_text().strip() for m in messages if m.count()]
    assert any(texts), f"the messages {ids} named by the Postal code field are missing or empty"
    for m in messages:
        if m.count() and m.inner_text().strip():
            expect(m).to_be_visible()

    fill_field(page, "Postal code", "10115")
    place_order_expecting_payment(page)
