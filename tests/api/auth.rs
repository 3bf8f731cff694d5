//! JWT authentication as in the contract: missing, malformed, expired, forged and
//! wrong-algorithm tokens are 401 with the right WWW-Authenticate; non-admins get 403.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use kassa::config::RawConfig;
use kassa_testkit::app::{assert_error, spawn_app, spawn_app_with};
use reqwest::StatusCode;
use serde_json::json;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).expect("fixture")
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), &claims, key).expect("sign")
}

fn in_an_hour(app: &kassa_testkit::app::TestApp) -> i64 {
    use kassa_actors::clock::Clock;
    app.clock.now().unix_timestamp() + 3600
}

async fn post_cart(
    app: &kassa_testkit::app::TestApp,
    authorization: Option<&str>,
) -> reqwest::Response {
    let mut request = app.client.post(app.url("/api/carts"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    request.send().await.expect("request")
}

async fn assert_invalid_token(response: reqwest::Response) {
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[actix_web::test]
async fn a_missing_token_is_401_with_a_bare_bearer_challenge() {
    let app = spawn_app().await;
    let response = post_cart(&app, None).await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[actix_web::test]
async fn garbage_expired_and_wrongly_signed_tokens_are_invalid() {
    let app = spawn_app().await;
    assert_invalid_token(post_cart(&app, Some("Bearer not.a.jwt")).await).await;

    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let expired = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "alice", "exp": in_an_hour(&app) - 7200}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {expired}"))).await).await;

    let no_exp = sign(Algorithm::HS256, &secret, json!({"sub": "alice"}));
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {no_exp}"))).await).await;

    let wrong_key = EncodingKey::from_secret(b"some-other-secret");
    let forged = sign(
        Algorithm::HS256,
        &wrong_key,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {forged}"))).await).await;

    let hs512 = sign(
        Algorithm::HS512,
        &secret,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {hs512}"))).await).await;

    let good = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {good}")))
            .await
            .status(),
        StatusCode::CREATED
    );
    app.stop().await;
}

#[actix_web::test]
async fn alg_none_is_rejected() {
    let app = spawn_app().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64
        .encode(json!({"sub": "mallory", "exp": in_an_hour(&app), "roles": ["admin"]}).to_string());
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {header}.{claims}."))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn with_an_rsa_public_key_only_rs256_tokens_verify_and_hs256_with_the_public_key_is_rejected()
{
    let app =
        spawn_app_with(|raw| raw.jwt_public_key_file = Some(format!("{FIXTURES}/rsa_public.pem")))
            .await;
    let private = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    let rs256 = sign(
        Algorithm::RS256,
        &private,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {rs256}")))
            .await
            .status(),
        StatusCode::CREATED
    );

    // Algorithm confusion: an HMAC keyed with the public key's bytes.
    let confused = EncodingKey::from_secret(&fixture("rsa_public.pem"));
    let hs256 = sign(
        Algorithm::HS256,
        &confused,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {hs256}"))).await).await;

    // The configured secret is ignored once a public key is set.
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let hs256 = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {hs256}"))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn with_an_ec_public_key_es256_tokens_verify() {
    let app =
        spawn_app_with(|raw| raw.jwt_public_key_file = Some(format!("{FIXTURES}/ec_public.pem")))
            .await;
    let private = EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("ec key");
    let es256 = sign(
        Algorithm::ES256,
        &private,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {es256}")))
            .await
            .status(),
        StatusCode::CREATED
    );
    let rsa = EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("rsa key");
    let rs256 = sign(
        Algorithm::RS256,
        &rsa,
        json!({"sub": "alice", "exp": in_an_hour(&app)}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {rs256}"))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|raw| {
        raw.jwt_issuer = Some("https://id.example.com".into());
        raw.jwt_audience = Some("kassa".into());
    })
    .await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let exp = in_an_hour(&app);
    let right = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": exp, "iss": "https://id.example.com", "aud": "kassa"}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {right}")))
            .await
            .status(),
        StatusCode::CREATED
    );
    let wrong_iss = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": exp, "iss": "https://evil.example.com", "aud": "kassa"}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {wrong_iss}"))).await).await;
    let wrong_aud = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": exp, "iss": "https://id.example.com", "aud": "other"}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {wrong_aud}"))).await).await;
    let missing = sign(Algorithm::HS256, &secret, json!({"sub": "a", "exp": exp}));
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {missing}"))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_valid_token_without_the_admin_role_gets_403_on_admin_routes() {
    let app = spawn_app().await;
    let response = app
        .client
        .put(app.url("/api/admin/products/tee"))
        .bearer_auth(app.token("bob", false))
        .json(&json!({"name": "Tee", "price": 100, "currency": "EUR", "stock": 1}))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .client
        .delete(app.url("/api/admin/products/tee"))
        .bearer_auth(app.token("bob", false))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app
        .client
        .put(app.url("/api/admin/products/tee"))
        .json(&json!({"name": "Tee", "price": 100, "currency": "EUR", "stock": 1}))
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    app.stop().await;
}

#[actix_web::test]
async fn kassa_jwt_secret_from_the_environment_is_used_as_its_exact_bytes() {
    for (given, mangled) in [("0123", "123"), (" 0123 ", "0123"), ("[x]", "x")] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let from_env = RawConfig::read(
            &tmp.path().join("kassa.toml"),
            [("KASSA_JWT_SECRET".into(), given.into())],
        )
        .expect("the environment reads");
        let app = spawn_app_with(|raw| raw.jwt_secret = from_env.jwt_secret).await;
        let claims = json!({"sub": "alice", "exp": in_an_hour(&app)});
        let exact = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(given.as_bytes()),
            claims.clone(),
        );
        assert_eq!(
            post_cart(&app, Some(&format!("Bearer {exact}")))
                .await
                .status(),
            StatusCode::CREATED,
            "signed with {given:?}"
        );
        let wrong = sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(mangled.as_bytes()),
            claims,
        );
        assert_invalid_token(post_cart(&app, Some(&format!("Bearer {wrong}"))).await).await;
        app.stop().await;
    }
}

#[actix_web::test]
async fn an_audience_array_holding_ours_is_accepted() {
    let app = spawn_app_with(|raw| raw.jwt_audience = Some("kassa".into())).await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let exp = in_an_hour(&app);
    let listed = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": exp, "aud": ["kassa", "other"]}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {listed}")))
            .await
            .status(),
        StatusCode::CREATED
    );
    let others = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": exp, "aud": ["other", "more"]}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {others}"))).await).await;
    app.stop().await;

    let app = spawn_app().await;
    let listed = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": in_an_hour(&app), "aud": ["kassa", "other"]}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {listed}")))
            .await
            .status(),
        StatusCode::CREATED,
        "no audience configured: aud is not checked"
    );
    app.stop().await;
}

#[actix_web::test]
async fn a_fractional_exp_is_a_valid_numeric_date() {
    let app = spawn_app().await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let now = in_an_hour(&app) as f64 - 3600.0;
    let fresh = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": now + 3600.5}),
    );
    assert_eq!(
        post_cart(&app, Some(&format!("Bearer {fresh}")))
            .await
            .status(),
        StatusCode::CREATED
    );
    let stale = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "a", "exp": now - 0.5}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {stale}"))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn null_roles_are_no_roles() {
    let app = spawn_app().await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let token = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "alice", "exp": in_an_hour(&app), "roles": null}),
    );
    let response = post_cart(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = app
        .client
        .delete(app.url("/api/admin/products/tee"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop().await;
}

#[actix_web::test]
async fn a_token_without_sub_is_invalid() {
    let app = spawn_app().await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let token = sign(
        Algorithm::HS256,
        &secret,
        json!({"exp": in_an_hour(&app), "email": "a@example.com", "roles": ["admin"]}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {token}"))).await).await;
    app.stop().await;
}

#[actix_web::test]
async fn a_token_is_invalid_before_its_nbf_on_the_shared_clock() {
    use kassa_actors::clock::Clock;
    let app = spawn_app().await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let now = app.clock.now().unix_timestamp();
    let early = sign(
        Algorithm::HS256,
        &secret,
        json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}),
    );
    assert_invalid_token(post_cart(&app, Some(&format!("Bearer {early}"))).await).await;
    app.clock.advance(time::Duration::minutes(11));
    let response = post_cart(&app, Some(&format!("Bearer {early}"))).await;
    assert_eq!(response.status(), StatusCode::CREATED, "valid from its nbf");
    app.stop().await;
}

#[actix_web::test]
async fn a_validly_signed_token_over_8_kib_is_invalid_and_one_just_under_verifies() {
    let app = spawn_app().await;
    let secret = EncodingKey::from_secret(b"integration-test-secret");
    let padded = |padding: usize| {
        sign(
            Algorithm::HS256,
            &secret,
            json!({"sub": "alice", "exp": in_an_hour(&app), "pad": "x".repeat(padding)}),
        )
    };
    // The largest padding whose token still fits in 8 KiB, and one byte of claims more.
    let fits = (0..8192)
        .rev()
        .find(|&p| padded(p).len() <= 8192)
        .expect("a token of 8 KiB");
    let at_limit = padded(fits);
    let over = padded(fits + 3);
    assert!(over.len() > 8192, "{}", over.len());
    let response = post_cart(&app, Some(&format!("Bearer {at_limit}"))).await;
    assert_eq!(response.status(), StatusCode::CREATED);

    let response = post_cart(&app, Some(&format!("Bearer {over}"))).await;
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer error=\"invalid_token\"")
    );
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("8 KiB")),
        "refused for its length, before its signature was checked: {body}"
    );
    app.stop().await;
}
