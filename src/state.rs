//! What every handler shares: the actor registries, the store, the clock, the config.
//! Built once by `startup`; handlers reach actors only through the registries.

use crate::config::Config;
use kassa_actors::cart::CartActor;
use kassa_actors::clock::SharedClock;
use kassa_actors::product::ProductActor;
use kassa_actors::registry::{PassivateIfIdle, Registry};
use kassa_actors::store::SharedStore;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub clock: SharedClock,
    pub products: Registry<ProductActor>,
    pub carts: Registry<CartActor>,
    pub metrics: PrometheusHandle,
}

impl AppState {
    /// Asks every live actor to stop if it has been idle long enough (the passivation tick).
    pub fn passivate_idle_actors(&self) {
        self.products.broadcast(PassivateIfIdle);
        self.carts.broadcast(PassivateIfIdle);
    }
}
