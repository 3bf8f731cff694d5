//! Building and running the service: open the store, start the actor pool and registries,
//! bind the listener (port 0 in tests), serve, and on SIGTERM stop accepting, finish the
//! requests in flight, stop the actors and close the store. `main` only calls this.

use crate::auth::Authenticator;
use crate::config::{Config, Environment, GatewaySpec, StoreSpec};
use crate::gateway::http::HttpGateway;
use crate::gateway::sandbox::{SandboxGateway, SandboxSettings};
use crate::http::{self, ASK_TIMEOUT};
use crate::routes;
use crate::shopper::Pages;
use crate::shopper::links::OrderLinks;
use crate::state::AppState;
use crate::store::embedded::{CloseWaiter, EmbeddedStore};
use crate::store::scylla::{ScyllaStore, ScyllaTarget};
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, middleware, web};
use anyhow::Context as _;
use kassa_actors::ActorSettings;
use kassa_actors::cart::CartActor;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::gateway::SharedGateway;
use kassa_actors::mailer::{Mailer, MailerServices, MailerSettings};
use kassa_actors::order_actor::{OrderActor, OrderServices, OrderSettings};
use kassa_actors::product::ProductActor;
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::SharedStore;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// How long a checkout or webhook may take in its order's actor (the gateway call included:
/// 3 attempts of at most 10 s).
const ORDER_ASK_TIMEOUT: Duration = Duration::from_secs(45);
/// How often idle actors are asked to passivate.
const PASSIVATION_TICK: Duration = Duration::from_secs(30);
/// How often the store's active orders are re-scanned and woken.
const ACTIVE_ORDER_RESCAN: Duration = Duration::from_secs(15);
/// The built-in sandbox's payments, in the data directory.
const SANDBOX_JOURNAL: &str = "sandbox-payments.jsonl";
/// How often a replica of a shared store writes its heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica silent this long is presumed dead and recovered by the others: five missed
/// heartbeats, so a busy store or a short pause does not make a live replica look dead.
const SILENCE: time::Duration = time::Duration::seconds(10);
/// How often each replica looks for silent ones.
const SILENCE_SWEEP: Duration = Duration::from_secs(3);
/// How often expired idempotency keys are deleted.
const IDEMPOTENCY_PURGE: Duration = Duration::from_secs(10 * 60);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: u64 = 30;
/// How long shutdown waits for the last holder of the embedded store to let go of it.
const STORE_CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown waits for emails being sent to be recorded (the rest go out at the next
/// start, from the outbox).
const MAIL_FLUSH_GRACE: Duration = Duration::from_secs(10);

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    pool: Arc<ActorPool>,
    /// The built-in sandbox, whose journal is written out at shutdown.
    sandbox: Option<SandboxGateway>,
    /// Tells when the embedded store's file is closed (shutdown waits for it).
    store_closed: Option<CloseWaiter>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let settings = ActorSettings {
            max_live: config.max_live_actors,
            ..ActorSettings::default()
        };
        Self::build_with(config, Arc::new(SystemClock), settings).await
    }

    /// Builds with an explicit clock and actor tuning (tests move time and shorten idles).
    pub async fn build_with(
        config: Config,
        clock: SharedClock,
        settings: ActorSettings,
    ) -> anyhow::Result<Self> {
        let listener = crate::connections::bind(&config.listen)
            .with_context(|| format!("KASSA_LISTEN: cannot listen on {}", config.listen))?;
        Self::build_on(listener, config, clock, settings).await
    }

    /// Builds on a listener bound by the caller (tests bind port 0 first, so that
    /// `KASSA_PUBLIC_URL` can name the real port).
    pub async fn build_on(
        listener: TcpListener,
        config: Config,
        clock: SharedClock,
        settings: ActorSettings,
    ) -> anyhow::Result<Self> {
        // The data dir is checked first: nothing else is opened if it cannot be used.
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "KASSA_DATA_DIR={}: cannot create it",
                config.data_dir.display()
            )
        })?;
        let (store, closed) = open_store(&config).await?;
        let mut app = Self::build_on_store(listener, config, store, clock, settings).await?;
        app.store_closed = closed;
        Ok(app)
    }

    /// Builds on a store opened by the caller (tests wrap a store to make it fail or stall).
    pub async fn build_on_store(
        listener: TcpListener,
        config: Config,
        store: SharedStore,
        clock: SharedClock,
        settings: ActorSettings,
    ) -> anyhow::Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = Arc::new(ActorPool::new(threads));
        let products = {
            let (store, clock, settings) = (store.clone(), clock.clone(), settings.clone());
            let max_live = settings.max_live;
            Registry::new(pool.clone(), ASK_TIMEOUT, move |m| {
                ProductActor::new(m, store.clone(), clock.clone(), settings.clone())
            })
            .with_max_live(max_live)
        };
        let carts = {
            let (store, clock, settings) = (store.clone(), clock.clone(), settings.clone());
            let max_live = settings.max_live;
            Registry::new(pool.clone(), ASK_TIMEOUT, move |m| {
                CartActor::new(m, store.clone(), clock.clone(), settings.clone())
            })
            .with_max_live(max_live)
        };
        let (gateway, sandbox) = build_gateway(&config, clock.clone())?;
        let emails = crate::mail::Emails::from_config(&config)?;
        let mailer = Arc::new(Mailer::start(MailerServices {
            store: store.clone(),
            clock: clock.clone(),
            transport: Arc::new(emails),
            settings: MailerSettings::default(),
        }));
        let orders = {
            let services = Arc::new(OrderServices {
                store: store.clone(),
                clock: clock.clone(),
                gateway: gateway.clone(),
                products: products.clone(),
                carts: carts.clone(),
                settings: OrderSettings {
                    reservation_ttl: time::Duration::try_from(config.reservation_ttl)
                        .context("KASSA_RESERVATION_TTL")?,
                    callback_url: join_url(&config.public_url, "/webhook/payment-status"),
                    shop_name: config.shop_name.clone(),
                    shop_url: config.storefront_url.to_string(),
                    reconcile_window: time::Duration::minutes(1),
                    reconcile_every: time::Duration::seconds(20),
                },
                actors: settings.clone(),
                mail: Some(mailer.handoff(clock.clone())),
            });
            Registry::new(pool.clone(), ORDER_ASK_TIMEOUT, move |m| {
                OrderActor::new(m, services.clone())
            })
            .with_max_live(settings.max_live)
        };
        let webhook_key = crate::routes::webhook::signing_key(&config.webhook_secret)
            .context("KASSA_WEBHOOK_SECRET")?;
        let authenticator = web::Data::new(Arc::new(
            Authenticator::new(&config.jwt, clock.clone()).context("KASSA_JWT_PUBLIC_KEY_FILE")?,
        ));
        let port = listener.local_addr()?.port();
        let links = OrderLinks::new(
            &webhook_key,
            config.public_url.as_str(),
            config.storefront_url.as_str(),
        );
        let demo = config.env == Environment::Development;
        let home_url = if demo {
            Some(links.shop_page())
        } else {
            (config.storefront_url != config.public_url)
                .then(|| config.storefront_url.as_str().to_string())
        };
        let pages = Arc::new(Pages::new(&config.shop_name, home_url).context("page templates")?);
        let state = web::Data::new(AppState {
            links,
            pages,
            config: Arc::new(config),
            store,
            clock,
            products,
            carts,
            orders,
            gateway,
            mailer,
            webhook_key,
            metrics: crate::telemetry::metrics_handle(),
            shutting_down: std::sync::atomic::AtomicBool::new(false),
        });
        let (keys, checkouts, emails) = state
            .recover_interrupted_checkouts()
            .await
            .context("recovering checkouts interrupted by a crash")?;
        if keys + checkouts > 0 {
            tracing::warn!(
                idempotency_keys = keys,
                checkouts,
                "released what interrupted checkouts held (the previous run did not stop cleanly)"
            );
        }
        if emails > 0 {
            tracing::info!(emails, "unsent emails of the previous run are due now");
        }
        let resumed = state
            .resume_active_orders()
            .await
            .context("scanning active orders")?;
        if resumed > 0 {
            tracing::info!(orders = resumed, "resumed active orders");
        }
        if demo {
            match crate::shopper::demo::seed_catalog(&state).await {
                Ok(0) => {}
                Ok(created) => tracing::info!(
                    products = created,
                    "the catalog was empty: demo products created (development only)"
                ),
                Err(e) => tracing::warn!(error = %e, "could not create the demo products"),
            }
        }
        let cors_origins = state.config.cors_origins.clone();
        let server_state = state.clone();
        let mounted = sandbox.clone();
        let admission = web::Data::new(http::Admission::new(state.config.max_in_flight));
        let server = crate::connections::serve(listener, threads, SHUTDOWN_GRACE, move || {
            let mut app = App::new()
                .app_data(server_state.clone())
                .app_data(authenticator.clone())
                .app_data(admission.clone())
                .wrap(middleware::from_fn(http::admit))
                .wrap(middleware::Condition::new(
                    !cors_origins.is_empty(),
                    http::cors(&cors_origins),
                ))
                .wrap(middleware::from_fn(http::limit_header_size))
                .wrap(middleware::from_fn(http::observe))
                .configure(routes::configure)
                .configure(|cfg| crate::shopper::configure(cfg, demo));
            if let Some(sandbox) = sandbox.clone() {
                app = app.service(
                    web::scope("/sandbox")
                        .configure(move |cfg| crate::gateway::sandbox::configure(cfg, sandbox)),
                );
            }
            app.default_service(web::to(http::not_found))
        })?;
        Ok(Self {
            port,
            server,
            state,
            pool,
            sandbox: mounted,
            store_closed: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Stops the server gracefully (what SIGTERM does, but without the readiness flip).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Begins a graceful shutdown as SIGTERM does: /readyz says no, then the server stops
    /// accepting and finishes the requests in flight.
    pub fn begin_shutdown(
        state: &AppState,
        server: &ServerHandle,
    ) -> impl Future<Output = ()> + use<> {
        state
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!("shutting down: not ready, finishing requests in flight");
        server.stop(true)
    }

    /// Serves until SIGTERM/SIGINT or `handle().stop()`, then stops the actors and closes
    /// the store; when this returns, everything acknowledged is on disk and files are closed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            state,
            pool,
            sandbox,
            store_closed,
            ..
        } = self;
        let ticker_state = state.clone();
        let ticker = actix_web::rt::spawn(async move {
            let mut passivation = tokio::time::interval(PASSIVATION_TICK);
            let mut rescan = tokio::time::interval(ACTIVE_ORDER_RESCAN);
            rescan.tick().await;
            loop {
                tokio::select! {
                    _ = passivation.tick() => {
                        ticker_state.passivate_idle_actors();
                        ticker_state.metrics.run_upkeep();
                    }
                    _ = rescan.tick() => {
                        // Adopts active orders this process does not host (another replica
                        // died, or an order was created elsewhere); CAS keeps it safe.
                        if let Err(e) = ticker_state.resume_active_orders().await {
                            tracing::warn!(error = %e, "active order scan failed");
                        }
                    }
                }
            }
        });
        // On a shared store: this replica's heartbeat, and the recovery of replicas that fell
        // silent (their unfinished checkouts, email claims). Apart from the ticker: a store
        // that hangs must not stop passivation.
        let watch = state.store.replica().is_some().then(|| {
            let watch_state = state.clone();
            actix_web::rt::spawn(async move {
                let mut heartbeat = tokio::time::interval(HEARTBEAT);
                heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut sweep = tokio::time::interval(SILENCE_SWEEP);
                sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = heartbeat.tick() => {
                            let now = watch_state.clock.now();
                            if let Err(e) = watch_state.store.heartbeat(now).await {
                                tracing::warn!(error = %e, "heartbeat not written");
                            }
                        }
                        _ = sweep.tick() => {
                            if let Err(e) = watch_state.recover_silent_replicas(SILENCE).await {
                                tracing::warn!(error = %e, "recovering silent replicas failed");
                            }
                        }
                    }
                }
            })
        });
        // Apart from the ticker: a first purge of a large backlog must not delay passivation.
        let purge_state = state.clone();
        let purger = actix_web::rt::spawn(async move {
            let mut purge = tokio::time::interval(IDEMPOTENCY_PURGE);
            purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                purge.tick().await;
                match purge_state.purge_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::info!(purged, "expired idempotency keys deleted"),
                    Err(e) => tracing::warn!(error = %e, "idempotency key purge failed"),
                }
            }
        });
        let signals = actix_web::rt::spawn(stop_on_signal(state.clone(), server.handle()));
        let served = server.await;
        signals.abort();
        // Awaited: the aborted task holds the state (and with it the store) until dropped.
        let _ = signals.await;
        tracing::info!("HTTP server stopped; stopping actors");
        ticker.abort();
        let _ = ticker.await;
        purger.abort();
        if let Some(watch) = watch {
            watch.abort();
        }
        let _ = purger.await;
        if !state.mailer.flush(MAIL_FLUSH_GRACE).await {
            tracing::warn!(
                "emails were still being sent at shutdown; they go out at the next start"
            );
        }
        let mailer = state.mailer.clone();
        drop(state);
        tokio::task::spawn_blocking(move || {
            mailer.shutdown();
            pool.shutdown();
            if let Some(sandbox) = sandbox {
                sandbox.close_journal();
            }
            // The HTTP workers' threads may still be dropping their copies of the state.
            if let Some(closed) = store_closed
                && !closed.wait(STORE_CLOSE_GRACE)
            {
                tracing::warn!("the store was still in use {STORE_CLOSE_GRACE:?} after shutdown");
            }
        })
        .await?;
        tracing::info!("actors stopped; store closed");
        Ok(served?)
    }
}

/// The configured store and, for the embedded one, what tells when its file is closed.
async fn open_store(config: &Config) -> anyhow::Result<(SharedStore, Option<CloseWaiter>)> {
    match &config.store {
        StoreSpec::Embedded(dir) => {
            let store = EmbeddedStore::open(dir)
                .with_context(|| format!("KASSA_STORE=embedded:{}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "embedded store open");
            let closed = store.close_waiter();
            Ok((Arc::new(store), closed))
        }
        StoreSpec::Scylla { hosts, keyspace } => {
            // Checks the keyspace's schema version too: `kassa migrate` must have run.
            let target = ScyllaTarget {
                hosts,
                keyspace,
                options: &config.scylla,
            };
            let store = ScyllaStore::open(target)
                .await
                .with_context(|| format!("KASSA_STORE=scylla://{}/{keyspace}", hosts.join(",")))?
                .with_replica(&config.replica);
            tracing::info!(replica = %config.replica, "replica name (KASSA_REPLICA_ID)");
            Ok((Arc::new(store), None))
        }
    }
}

/// `base` with `path` appended (no doubled slash).
fn join_url(base: &reqwest::Url, path: &str) -> String {
    format!("{}{path}", base.as_str().trim_end_matches('/'))
}

/// The configured gateway, and the sandbox to mount when it is the built-in one.
fn build_gateway(
    config: &Config,
    clock: SharedClock,
) -> anyhow::Result<(SharedGateway, Option<SandboxGateway>)> {
    match &config.gateway {
        GatewaySpec::Sandbox => {
            let sandbox = SandboxGateway::with_journal(
                SandboxSettings {
                    webhook_secret: config.webhook_secret.clone(),
                    public_base_url: join_url(&config.public_url, "/sandbox"),
                    retry_initial: Duration::from_millis(500),
                    retry_max: Duration::from_secs(60),
                },
                clock,
                &config.data_dir.join(SANDBOX_JOURNAL),
            )
            .with_context(|| format!("KASSA_DATA_DIR={}", config.data_dir.display()))?;
            Ok((Arc::new(sandbox.clone()), Some(sandbox)))
        }
        GatewaySpec::Http(url) => Ok((
            Arc::new(HttpGateway::new(url.clone()).with_deadline(config.gateway_timeout)),
            None,
        )),
        GatewaySpec::Stripe => {
            let stripe = crate::gateway::stripe::StripeGateway::new(
                crate::gateway::stripe::StripeSettings {
                    api_key: config
                        .stripe_api_key
                        .clone()
                        .context("KASSA_STRIPE_API_KEY is required with KASSA_GATEWAY=stripe")?,
                    api_base: config.stripe_api_base.clone(),
                    storefront_url: config.storefront_url.clone(),
                },
            )?
            .with_deadline(config.gateway_timeout);
            Ok((Arc::new(stripe), None))
        }
    }
}

/// Waits for SIGTERM or SIGINT, then shuts down gracefully.
async fn stop_on_signal(state: web::Data<AppState>, server: ServerHandle) {
    let mut sigterm = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    {
        Ok(sigterm) => Some(sigterm),
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            None
        }
    };
    let terminated = tokio::select! {
        _ = recv_or_never(&mut sigterm) => true,
        _ = tokio::signal::ctrl_c() => false,
    };
    let delay = state.config.shutdown_delay;
    if terminated && !delay.is_zero() {
        // Not ready from now on, but still serving: load balancers see /readyz fail and stop
        // sending before the listener closes. A second signal stops at once.
        state
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(delay = ?delay, "SIGTERM received: not ready, serving on before stopping");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = recv_or_never(&mut sigterm) => tracing::info!("second SIGTERM: stopping now"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping now"),
        }
    } else if terminated {
        tracing::info!("SIGTERM received");
    } else {
        tracing::info!("SIGINT received");
    }
    Application::begin_shutdown(&state, &server).await;
}

/// The next signal of `signal`, or never when it could not be listened for.
async fn recv_or_never(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
