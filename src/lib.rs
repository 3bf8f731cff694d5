//! The Kassa service shell: configuration, HTTP routes and extractors, JWT auth, store back
//! ends, telemetry and start-up. The domain and its actors live in `kassa-actors`.

pub mod auth;
pub mod config;
pub mod connections;
pub mod gateway;
pub mod http;
pub mod mail;
pub mod routes;
pub mod shopper;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
