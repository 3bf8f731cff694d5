//! `kassa sandbox-gateway`: the sandbox on a listener of its own, its routes at the root, for
//! a storefront's own tests. It binds, serves and stops; what a payment may do is the
//! ledger's business, never this module's.

use super::{SandboxGateway, SandboxSettings, routes::configure};
use crate::connections::KEEP_ALIVE;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use base64::Engine as _;
use kassa_actors::clock::{SharedClock, SystemClock};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Arc;

/// The sandbox bound on its own listener, routes at the root (`kassa sandbox-gateway`).
pub struct StandaloneSandbox {
    address: SocketAddr,
    server: Server,
    gateway: SandboxGateway,
}

impl StandaloneSandbox {
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// `http://{bound address}`: the base URL for `KASSA_GATEWAY`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Stops the server (what SIGTERM does).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or `handle().stop()`, then writes out what its journal
    /// (if it has one) still has queued.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let served = self.server.await;
        let gateway = self.gateway;
        tokio::task::spawn_blocking(move || gateway.close_journal()).await?;
        Ok(served?)
    }
}

/// Binds the standalone sandbox (port 0 picks a free port); `paymentUrl`s use the bound
/// address. Its payments are kept in `journal` when given (as the built-in sandbox's are),
/// else in memory only. Serving starts with [`StandaloneSandbox::run_until_stopped`]. Must be
/// called inside a tokio runtime.
pub fn bind_standalone(
    listen: &str,
    webhook_secret: &str,
    clock: SharedClock,
    journal: Option<&Path>,
) -> anyhow::Result<StandaloneSandbox> {
    check_webhook_secret(webhook_secret)?;
    let listener =
        TcpListener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
    let address = listener.local_addr()?;
    let settings = SandboxSettings::new(webhook_secret, format!("http://{address}"));
    let gateway = match journal {
        Some(path) => SandboxGateway::with_journal(settings, clock, path)?,
        None => SandboxGateway::new(settings, clock),
    };
    let served = gateway.clone();
    let server = HttpServer::new(move || {
        App::new()
            .configure(|cfg| configure(cfg, served.clone()))
            .default_service(web::to(crate::http::not_found))
    })
    // Kassa's own keep-alive: a connection stays open longer than a client's pool keeps it
    // idle, so that the client closes it. actix's 5 s closed idle and new unused connections
    // under the replicas' gateway clients, whose requests then raced the close (a 408, or
    // "connection closed before message completed").
    .keep_alive(KEEP_ALIVE)
    .client_request_timeout(KEEP_ALIVE)
    .listen(listener)?
    .run();
    Ok(StandaloneSandbox {
        address,
        server,
        gateway,
    })
}

/// Runs the sandbox alone until SIGTERM/SIGINT, announcing `listening on http://ADDR` on
/// stdout so a parent process started with `--listen 127.0.0.1:0` can find the port.
pub async fn serve_standalone(
    listen: &str,
    webhook_secret: &str,
    journal: Option<&Path>,
) -> anyhow::Result<()> {
    let sandbox = bind_standalone(listen, webhook_secret, Arc::new(SystemClock), journal)?;
    let base_url = sandbox.base_url();
    tracing::info!(address = %base_url, "sandbox gateway listening");
    println!("listening on {base_url}");
    sandbox.run_until_stopped().await
}

fn check_webhook_secret(secret: &str) -> anyhow::Result<()> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok());
    match key {
        Some(key) if !key.is_empty() => Ok(()),
        _ => anyhow::bail!("the webhook secret must be `whsec_` followed by base64 key bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_refuses_a_secret_that_is_not_whsec_base64() {
        assert!(check_webhook_secret("whsec_c2VjcmV0").is_ok());
        assert!(check_webhook_secret("c2VjcmV0").is_err());
        assert!(check_webhook_secret("whsec_not base64!").is_err());
        assert!(check_webhook_secret("whsec_").is_err());
    }
}
