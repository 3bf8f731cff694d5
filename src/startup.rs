//! Building and running the service: open the store, start the actor pool and registries,
//! bind the listener (port 0 in tests), serve, and on SIGTERM stop accepting, finish the
//! requests in flight, stop the actors and close the store. `main` only calls this.

use crate::auth::Authenticator;
use crate::config::{Config, StoreSpec};
use crate::routes;
use crate::state::AppState;
use crate::store::embedded::EmbeddedStore;
use actix_web::dev::{Server, ServerHandle};
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use kassa_actors::ActorSettings;
use kassa_actors::cart::CartActor;
use kassa_actors::clock::{SharedClock, SystemClock};
use kassa_actors::product::ProductActor;
use kassa_actors::registry::{ActorPool, Registry};
use kassa_actors::store::SharedStore;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// How long an ask waits for an actor before answering 503.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often idle actors are asked to passivate.
const PASSIVATION_TICK: Duration = Duration::from_secs(30);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: u64 = 30;

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    pool: Arc<ActorPool>,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Arc::new(SystemClock), ActorSettings::default()).await
    }

    /// Builds with an explicit clock and actor tuning (tests move time and shorten idles).
    pub async fn build_with(
        config: Config,
        clock: SharedClock,
        settings: ActorSettings,
    ) -> anyhow::Result<Self> {
        let store = open_store(&config)?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let pool = Arc::new(ActorPool::new(threads));
        let products = {
            let (store, clock, settings) = (store.clone(), clock.clone(), settings.clone());
            Registry::new(pool.clone(), ASK_TIMEOUT, move |m| {
                ProductActor::new(m, store.clone(), clock.clone(), settings.clone())
            })
        };
        let carts = {
            let (store, clock, settings) = (store.clone(), clock.clone(), settings.clone());
            Registry::new(pool.clone(), ASK_TIMEOUT, move |m| {
                CartActor::new(m, store.clone(), clock.clone(), settings.clone())
            })
        };
        let authenticator = web::Data::new(Arc::new(
            Authenticator::new(&config.jwt, clock.clone()).context("KASSA_JWT_PUBLIC_KEY_FILE")?,
        ));
        let listener = TcpListener::bind(&config.listen)
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            config: Arc::new(config),
            store,
            clock,
            products,
            carts,
            metrics: crate::telemetry::metrics_handle(),
        });
        let server_state = state.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(server_state.clone())
                .app_data(authenticator.clone())
                .wrap(middleware::from_fn(routes::record_metrics))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .workers(threads)
        .shutdown_timeout(SHUTDOWN_GRACE)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            state,
            pool,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Stops the server gracefully (what SIGTERM does).
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGTERM/SIGINT or `handle().stop()`, then stops the actors and closes
    /// the store; when this returns, everything acknowledged is on disk and files are closed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            state,
            pool,
            ..
        } = self;
        let ticker_state = state.clone();
        let ticker = actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(PASSIVATION_TICK);
            loop {
                tick.tick().await;
                ticker_state.passivate_idle_actors();
            }
        });
        let served = server.await;
        tracing::info!("HTTP server stopped; stopping actors");
        ticker.abort();
        let _ = ticker.await;
        drop(state);
        tokio::task::spawn_blocking(move || pool.shutdown()).await?;
        tracing::info!("actors stopped; store closed");
        Ok(served?)
    }
}

fn open_store(config: &Config) -> anyhow::Result<SharedStore> {
    match &config.store {
        StoreSpec::Embedded(dir) => {
            let store = EmbeddedStore::open(dir)
                .with_context(|| format!("KASSA_STORE=embedded:{}", dir.display()))?;
            tracing::info!(dir = %dir.display(), "embedded store open");
            Ok(Arc::new(store))
        }
        StoreSpec::Scylla { .. } => {
            anyhow::bail!("KASSA_STORE: the scylla back end is not built yet; use embedded:<dir>")
        }
    }
}
