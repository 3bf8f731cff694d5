//! Talking to Kassa: one pooled HTTP client, every call timed and its outcome recorded as
//! (status, error code); tokens minted from the JWT secret, webhooks signed with the webhook
//! secret. Knows the contract's shapes, not the scenarios.

use crate::stats::{Op, Recorder};
use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A status and, when a code matters, the contract's error code it must carry.
#[derive(Debug, Clone, Copy)]
pub struct Expect(pub u16, pub Option<&'static str>);

pub const OK: Expect = Expect(200, None);

/// An answer: status (0 when none came), the error `code` (`ok` on 2xx) and the JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub code: String,
    pub body: Value,
    /// The `Retry-After` of a 503, when it carried one.
    pub retry_after: Option<Duration>,
}

impl Answer {
    pub fn is(&self, status: u16) -> bool {
        self.status == status
    }

    pub fn str(&self, field: &str) -> Option<&str> {
        self.body.get(field).and_then(Value::as_str)
    }
}

/// How long a retry of an interrupted request waits before it is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Kassa {
    pub base: String,
    pub http: reqwest::Client,
    pub recorder: Arc<Recorder>,
    /// `--retry-interrupted`: how long a request that got no answer is sent again.
    retry_window: Option<Duration>,
}

impl Kassa {
    pub fn new(base: &str, recorder: Arc<Recorder>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
            recorder,
            retry_window: None,
        })
    }

    /// Sends again, for up to `window`, every request that got no answer or a balancer's
    /// 502/504: what a storefront does when a Kassa process dies under it.
    pub fn retrying_interrupted(mut self, window: Option<Duration>) -> Self {
        self.retry_window = window;
        self
    }

    /// Whether interrupted requests are sent again (`--retry-interrupted`).
    pub fn retries(&self) -> bool {
        self.retry_window.is_some()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends `request`; when `op` is given, records the latency from `start` (the intended
    /// send time in an open loop) and whether the answer is one of `expected`.
    pub async fn call(
        &self,
        op: Option<Op>,
        start: Instant,
        request: reqwest::RequestBuilder,
        expected: &[Expect],
    ) -> Answer {
        let mut request = request;
        let mut interrupted_since: Option<Instant> = None;
        let answer = loop {
            let again = self.retry_window.and(request.try_clone());
            let answer = send(request).await;
            let (Some(window), Some(next)) = (self.retry_window, again) else {
                break answer;
            };
            if !interrupted(&answer, interrupted_since.is_some()) {
                break answer;
            }
            let since = *interrupted_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= window {
                break answer;
            }
            self.recorder.interrupted(op, answer.status, &answer.code);
            // A 503's Retry-After is honoured (a second at most: the window bounds the rest).
            let pause = answer.retry_after.map_or(RETRY_PAUSE, |after| {
                after.clamp(RETRY_PAUSE, Duration::from_secs(1))
            });
            tokio::time::sleep(pause).await;
            request = next;
        };
        if let Some(since) = interrupted_since {
            self.recorder.interruption_lasted(since.elapsed());
        }
        if let Some(op) = op {
            let ok = expected.iter().any(|Expect(status, code)| {
                *status == answer.status && code.is_none_or(|c| c == answer.code)
            });
            self.recorder
                .record(op, start.elapsed(), answer.status, &answer.code, ok);
        }
        answer
    }

    pub async fn get_json(&self, path: &str, token: Option<&str>) -> anyhow::Result<Answer> {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let answer = self.call(None, Instant::now(), request, &[]).await;
        anyhow::ensure!(answer.status != 0, "GET {path}: {}", answer.code);
        Ok(answer)
    }
}

/// One attempt: the answer, or status 0 and the transport failure as its code.
async fn send(request: reqwest::RequestBuilder) -> Answer {
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = match response.bytes().await {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            let code = if (200..300).contains(&status) {
                "ok".to_string()
            } else {
                body.get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("no_code")
                    .to_string()
            };
            Answer {
                status,
                code,
                body,
                retry_after,
            }
        }
        Err(e) => Answer {
            status: 0,
            code: transport_failure(&e).to_string(),
            body: Value::Null,
            retry_after: None,
        },
    }
}

/// No answer, or a balancer's for an upstream that died (502, 504), or a 503 that says when
/// to come back (`Retry-After`: overload, a replica draining or restarting); and, once a
/// request was interrupted, its Idempotency-Key still held by the attempt that died with the
/// process (API.md's crash rule frees it within 10 s of the restart).
fn interrupted(answer: &Answer, retrying: bool) -> bool {
    matches!(answer.status, 0 | 502 | 504)
        || (answer.status == 503 && answer.retry_after.is_some())
        || (retrying && answer.status == 409 && answer.code == "idempotency_key_in_use")
}

fn transport_failure(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: i64,
    email: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    roles: &'a [&'a str],
}

/// Mints HS256 tokens as `kassa token` does.
pub struct Minter {
    key: jsonwebtoken::EncodingKey,
}

impl Minter {
    pub fn new(secret: &str) -> Self {
        Self {
            key: jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        }
    }

    /// A token for `sub` valid for a day, with `{sub}@example.com` as its email.
    pub fn token(&self, sub: &str, admin: bool) -> anyhow::Result<String> {
        let exp = unix_now() + 24 * 3600;
        let email = format!("{sub}@example.com");
        let roles: &[&str] = if admin { &["admin"] } else { &[] };
        let claims = Claims {
            sub,
            exp,
            email: &email,
            roles,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.key,
        )
        .context("signing a token")
    }
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A Standard Webhooks delivery, ready to send.
#[derive(Debug, Clone)]
pub struct SignedWebhook {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
}

impl SignedWebhook {
    pub fn sign(
        secret: &str,
        id: &str,
        timestamp: i64,
        body: &str,
    ) -> anyhow::Result<SignedWebhook> {
        let signature = standardwebhooks::Webhook::new(secret)
            .map_err(|e| anyhow::anyhow!("webhook secret: {e:?}"))?
            .sign(id, timestamp, body.as_bytes())
            .map_err(|e| anyhow::anyhow!("signing a webhook: {e:?}"))?;
        Ok(SignedWebhook {
            id: id.to_string(),
            timestamp,
            signature,
            body: body.to_string(),
        })
    }

    pub fn request(&self, kassa: &Kassa) -> reqwest::RequestBuilder {
        kassa
            .http
            .post(kassa.url("/webhook/payment-status"))
            .header("content-type", "application/json")
            .header("webhook-id", &self.id)
            .header("webhook-timestamp", self.timestamp.to_string())
            .header("webhook-signature", &self.signature)
            .body(self.body.clone())
    }
}
