//! What a webhook adds to the process-wide counters, exactly. Its own test binary, so no other
//! test moves the counters between two scrapes.

use kassa_testkit::app::{WEBHOOK_SECRET, sample, spawn_app};
use reqwest::StatusCode;
use serde_json::json;

#[actix_web::test]
async fn a_redelivered_event_that_changed_nothing_is_counted_once() {
    const MISMATCHES: &str = "kassa_webhook_amount_mismatch_total";
    const DUPLICATES: &str = r#"kassa_webhooks_total{outcome="duplicate"}"#;
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 1).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id");
    app.decide(&checkout, "success").await;
    app.wait_for_status(&alice, id, "processing").await;

    // A second success for the paid order, for the wrong amount: it changes nothing, and is
    // logged and counted as a mismatch once, however often the gateway delivers it.
    let odd = json!({"orderId": id, "status": "Success", "paymentId": "pay_odd", "amount": 1, "currency": "EUR"})
        .to_string();
    let before = app.scrape().await;
    for _ in 0..3 {
        let response = app
            .send_webhook("msg_odd_success", app.now(), &odd, WEBHOOK_SECRET)
            .await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let after = app.scrape().await;
    assert_eq!(
        sample(&after, MISMATCHES) - sample(&before, MISMATCHES),
        1.0,
        "{MISMATCHES}"
    );
    assert_eq!(
        sample(&after, DUPLICATES) - sample(&before, DUPLICATES),
        2.0,
        "{DUPLICATES}"
    );
    let order = app.order(&alice, id).await;
    assert_eq!(order["status"], "processing");
    app.stop().await;
}
