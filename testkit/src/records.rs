//! The domain's records and messages as tests and benches build them: a plain function a
//! type, with the defaults most tests want, and struct-update syntax for the field a test
//! is about (`ProductWrite { put_reservations, ..records::product_write(..) }`).

use kassa_actors::domain::{Currency, OrderId, ProductInfo, Sku};
use kassa_actors::gateway::PaymentRequest;
use kassa_actors::store::{ProductRow, ProductWrite};

/// A product priced `price` minor units in EUR.
pub fn product_info(name: &str, price: i64) -> ProductInfo {
    ProductInfo {
        name: name.into(),
        price,
        currency: Currency::EUR,
    }
}

/// A stored product row: "Flash tee" at 19.99 EUR, `on_hand` units, at `version`.
pub fn product_row(version: u64, on_hand: i64) -> ProductRow {
    ProductRow {
        info: Some(product_info("Flash tee", 1999)),
        on_hand,
        version,
    }
}

/// A conditional write of `row` over `expected_version`, adding and removing no reservations.
pub fn product_write(sku: &Sku, expected_version: u64, row: ProductRow) -> ProductWrite {
    ProductWrite {
        sku: sku.clone(),
        expected_version,
        row,
        put_reservations: Vec::new(),
        remove_reservations: Vec::new(),
    }
}

/// A gateway payment for `order_id`: 19.99 EUR, a callback nobody listens on, a shop return
/// page, nothing to display.
pub fn payment_request(order_id: OrderId) -> PaymentRequest {
    PaymentRequest {
        order_id,
        amount: 1999,
        currency: Currency::EUR,
        callback_url: "http://127.0.0.1:9/webhook/payment-status".into(),
        return_url: format!("http://shop.test/orders/{order_id}"),
        display: Default::default(),
    }
}
