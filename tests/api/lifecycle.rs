//! What survives: restarts on the same data dir, and actors passivating and coming back.

use kassa_testkit::app::{json_of, spawn_app, start};
use reqwest::StatusCode;

#[actix_web::test]
async fn products_and_carts_survive_a_restart_on_the_same_data_dir() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 7).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 3).await;
    let (data_dir, clock, tmp) = app.stop().await;

    let app = start(data_dir, clock, |_| {}).await;
    let (status, body) = json_of(app.get_product("tee").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["available"], 7);
    let (status, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["quantity"], 3);
    assert_eq!(body["total"], 3 * 1999);
    app.stop().await;
    drop(tmp);
}

#[actix_web::test]
async fn a_stop_returns_once_the_last_holder_of_the_store_let_go_of_it() {
    // As an HTTP worker thread still dropping its copy of the state after the server
    // stopped: the store is closed on that thread, later. The stop must wait for it, or
    // the restart below finds the file still open.
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 7).await;
    let held = app.state().store.clone();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(held);
    });
    let (data_dir, clock, tmp) = app.stop().await;
    let app = start(data_dir, clock, |_| {}).await;
    let (status, body) = json_of(app.get_product("tee").await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["available"], 7);
    holder.join().expect("holder thread");
    app.stop().await;
    drop(tmp);
}

#[actix_web::test]
async fn idle_actors_passivate_and_come_back_with_their_state() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 7).await;
    let alice = app.token("alice", false);
    let cart = app.create_cart(&alice).await;
    app.set_item(&alice, &cart, "tee", 2).await;
    let state = app.state();
    assert!(state.products.live_count() >= 1);
    assert!(state.carts.live_count() >= 1);

    app.passivate_everything().await;
    assert_eq!(state.products.live_count(), 0);
    assert_eq!(state.carts.live_count(), 0);

    let (_, body) = json_of(app.get_product("tee").await).await;
    assert_eq!(body["available"], 7);
    let (_, body) = json_of(app.get_cart(&alice, &cart).await).await;
    assert_eq!(body["items"][0]["quantity"], 2);
    // Setting a line asks the product's actor for its price (a GET of the product reads the
    // stored row on a shared store, without an actor).
    app.set_item(&alice, &cart, "tee", 2).await;
    assert_eq!(state.products.live_count(), 1);
    assert_eq!(state.carts.live_count(), 1);
    app.stop().await;
}

#[actix_web::test]
async fn actors_that_were_used_recently_are_not_passivated() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 7).await;
    app.clock.advance(time::Duration::minutes(1));
    app.state().passivate_idle_actors();
    let (_, body) = json_of(app.get_product("tee").await).await;
    assert_eq!(body["available"], 7);
    assert!(
        app.state()
            .products
            .is_live(&kassa_actors::domain::Sku::parse("tee").expect("sku"))
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_pending_payment_at_the_built_in_sandbox_survives_a_restart() {
    let app = spawn_app().await;
    app.put_product("tee", 1999, "EUR", 5).await;
    let (alice, cart) = app.cart_with("alice", "tee", 2).await;
    let checkout = app.place_order(&alice, &cart).await;
    let id = checkout["orderId"].as_str().expect("id").to_string();

    let app = app.restart().await;
    let page = app
        .client
        .get(checkout["paymentUrl"].as_str().expect("paymentUrl"))
        .send()
        .await
        .expect("request");
    assert_eq!(
        page.status(),
        StatusCode::OK,
        "the payment page still opens"
    );
    let html = page.text().await.expect("body");
    assert!(html.contains("39.98"), "it shows the amount: {html}");
    app.decide(&checkout, "success").await;
    app.wait_for_status(&alice, &id, "processing").await;
    assert_eq!(app.available("tee").await, 3);
    app.stop().await;
}
