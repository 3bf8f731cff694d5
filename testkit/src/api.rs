//! Talking to a `kassa serve` process in a test: tokens minted with its JWT secret, and
//! answers read whole (status, JSON body, whether a Retry-After came). A request that gets
//! no answer at all fails the test: dropped connections are what these tests rule out.

use kassa::auth::{TokenRequest, mint};
use kassa::config::{JwtConfig, JwtKey};
use kassa_actors::clock::{SharedClock, SystemClock};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// An HS256 token for `sub` (email `{sub}@example.com`), valid for an hour.
pub fn token(secret: &str, sub: &str, admin: bool) -> String {
    let config = JwtConfig {
        key: JwtKey::Secret(secret.as_bytes().to_vec()),
        issuer: None,
        audience: None,
    };
    let clock: SharedClock = Arc::new(SystemClock);
    mint(
        &config,
        &clock,
        TokenRequest {
            sub,
            email: Some(&format!("{sub}@example.com")),
            admin,
            ttl: Duration::from_secs(3600),
            private_key_pem: None,
        },
    )
    .expect("mint")
}

/// The status, the JSON body (null when none) and whether a `Retry-After` came with it.
pub async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, bool) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("a request got no answer: {e}"));
    let status = response.status();
    let retry_after = response.headers().contains_key("retry-after");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

/// Creates `sku` through the admin API of the Kassa at `base` (`admin`: an admin's token):
/// `name` at `price` minor units in EUR with `stock` units. The answer must be 200.
pub async fn put_product(
    client: &reqwest::Client,
    base: &str,
    admin: &str,
    sku: &str,
    name: &str,
    price: i64,
    stock: i64,
) {
    let (status, body, _) = send(
        client
            .put(format!("{base}/api/admin/products/{sku}"))
            .bearer_auth(admin)
            .json(&json!({"name": name, "price": price, "currency": "EUR", "stock": stock})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
