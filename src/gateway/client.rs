//! The one HTTP client the gateway adapters share: `http.rs` (API.md's gateway protocol) and
//! `stripe.rs` call through `GatewayClient`, the sandbox delivers webhooks with `builder()`'s
//! client. Every gateway call is idempotent by its key, so an attempt that fails in a way
//! another may not (no answer, for whatever transport reason; what the adapter's judge calls
//! retryable) is tried again, 3 attempts with waits from 200 ms doubling; a call, retries
//! included, ends at its deadline (`KASSA_GATEWAY_TIMEOUT`) as unavailable, and is timed in
//! `kassa_gateway_request_seconds{op,outcome}`.

use reqwest::header::HeaderMap;
use reqwest::{RequestBuilder, StatusCode};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long connecting may take, per attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one attempt may take, answer read included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole call's deadline unless `with_deadline` sets another (API.md's default).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);
/// Attempts per call; the waits between them start here and double.
const ATTEMPTS: u32 = 3;
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);

/// How long a pooled connection may stay idle before the client drops it: shorter than the
/// keep-alive of most servers and of what fronts them (60 to 75 s), so that the client, not
/// the gateway, closes an idle connection. reqwest's default (90 s) outlives those, and a
/// request sent on a connection the server is closing at that moment is lost with
/// "connection closed before message completed" (which is retried; this makes it rare).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// A client with the per-attempt timeouts and no redirects (a gateway's answer is its own).
pub(super) fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
}

/// An adapter's error type, as the shared client needs to make one and to label it.
pub(super) trait CallError: Sized {
    /// Final: a refusal, or a request that cannot be sent.
    fn refused(message: String) -> Self;
    /// The gateway could not be reached or did not answer (in time).
    fn unavailable(message: String) -> Self;
    /// The `outcome` label of `kassa_gateway_request_seconds`.
    fn outcome(&self) -> &'static str;
}

/// What one attempt's answer means: worth another try, or final.
pub(super) enum Attempt<E> {
    Retryable(String),
    Final(E),
}

/// A reqwest client with a deadline per call, the retry policy and the call metrics.
#[derive(Debug, Clone)]
pub(super) struct GatewayClient {
    client: reqwest::Client,
    /// Who is called, for the log (`payment gateway`, `Stripe`).
    peer: &'static str,
    /// The most one call may take, retries included.
    deadline: Duration,
}

impl GatewayClient {
    pub(super) fn new(client: reqwest::Client, peer: &'static str) -> Self {
        Self {
            client,
            peer,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// The same client, each call (retries included) ending after `deadline`.
    pub(super) fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    /// For building requests.
    pub(super) fn http(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends `request` until `judge` takes an answer (status, headers, body) as final or the
    /// attempts or the deadline are spent; a failure to get an answer is retried.
    pub(super) async fn call<T, E: CallError>(
        &self,
        op: &'static str,
        request: RequestBuilder,
        judge: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Result<T, Attempt<E>>,
    ) -> Result<T, E> {
        let started = Instant::now();
        let result = tokio::time::timeout(self.deadline, self.retry(op, request, judge))
            .await
            .unwrap_or_else(|_| {
                Err(E::unavailable(format!(
                    "{op}: no answer within {:?}, retries included",
                    self.deadline
                )))
            });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        metrics::histogram!("kassa_gateway_request_seconds", "op" => op, "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        result
    }

    async fn retry<T, E: CallError>(
        &self,
        op: &'static str,
        request: RequestBuilder,
        judge: impl Fn(StatusCode, &HeaderMap, &[u8]) -> Result<T, Attempt<E>>,
    ) -> Result<T, E> {
        let request = request
            .build()
            .map_err(|e| E::refused(format!("{op}: {}", describe(&e))))?;
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempt = 1;
        loop {
            let this_try = request
                .try_clone()
                .ok_or_else(|| E::refused(format!("{op}: the request body cannot be resent")))?;
            match self.attempt(this_try, &judge).await {
                Ok(answer) => return Ok(answer),
                Err(Attempt::Final(e)) => return Err(e),
                Err(Attempt::Retryable(problem)) if attempt < ATTEMPTS => {
                    tracing::warn!(op, attempt, error = %problem, "{} call failed; retrying", self.peer);
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                    attempt += 1;
                }
                Err(Attempt::Retryable(problem)) => {
                    return Err(E::unavailable(format!(
                        "{op}: {problem} (after {ATTEMPTS} attempts)"
                    )));
                }
            }
        }
    }

    async fn attempt<T, E: CallError>(
        &self,
        request: reqwest::Request,
        judge: &impl Fn(StatusCode, &HeaderMap, &[u8]) -> Result<T, Attempt<E>>,
    ) -> Result<T, Attempt<E>> {
        let response = self
            .client
            .execute(request)
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?;
        judge(status, &headers, &body)
    }
}

/// No answer, whatever the transport's reason, may be retried: the call is idempotent by its
/// key, so a request the gateway did receive is answered the same the second time. That
/// includes a pooled connection the gateway closed as the request went out ("connection
/// closed before message completed"), which a 5 s keep-alive on the gateway's side made fail
/// 8 of 300 flash-sale checkouts in one run of three replicas. Only a request that cannot be
/// built is final (as unavailable: nothing says the gateway refused).
fn transport_error<E: CallError>(e: reqwest::Error) -> Attempt<E> {
    let problem = describe(&e);
    if e.is_builder() {
        Attempt::Final(E::unavailable(problem))
    } else {
        Attempt::Retryable(problem)
    }
}

/// An error and its causes on one line (reqwest keeps the telling part in `source`).
pub(super) fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}
