//! Kassa's test support, shared by the test binaries and benches of the workspace as an
//! ordinary (dev-dependency) library instead of source files included with `#[path]`:
//!
//! - `store`: `HookedStore`, the one `Store` decorator. It forwards every method of
//!   `kassa_actors::store::Store` to the store it wraps, after a hook that may wait, count,
//!   fail the call or answer a conditional write itself. A test's fault injection is a
//!   `Hooks` implementation; a new `Store` method is forwarded here only.
//! - `records`: the domain's records and messages with a test's defaults (product rows and
//!   writes, payment requests), so a test spells out only the fields it is about.
//! - With the `kassa` feature, the helpers that need the server crate or HTTP:
//!   `app` (`TestApp`: Kassa in-process on port 0 over a temporary data dir, and its
//!   request helpers), `api` (tokens and whole answers for a `kassa serve` process),
//!   `process` (child processes killed on drop, free ports, readiness), `cassandra` (the
//!   test Cassandra node and fresh keyspaces), `prometheus` (a real Prometheus) and
//!   `silent_server` (a peer that accepts connections and never answers).
//!
//! Why one crate with a feature: the crate depends on `kassa-actors` (for the `Store` trait)
//! and, with `kassa`, on the `kassa` crate itself. The root package takes it as a
//! dev-dependency with the feature (`kassa` → dev `kassa-testkit` → `kassa` is a
//! dev-dependency cycle, which cargo allows: the integration tests and benches link the same
//! `kassa` library the kit was built against). `kassa-actors` takes it without the feature,
//! so its tests need only the decorator and never build the server crate (in a workspace
//! build the features are unified and the one kit serves both). One limit of the cycle:
//! `kassa`'s own unit tests (`cargo test --lib`) cannot use the `kassa`-typed helpers, since
//! there `kassa` is a different build of the crate than the one the kit links; they do not.

#[cfg(feature = "kassa")]
pub mod api;
#[cfg(feature = "kassa")]
pub mod app;
#[cfg(feature = "kassa")]
pub mod cassandra;
#[cfg(feature = "kassa")]
pub mod process;
#[cfg(feature = "kassa")]
pub mod prometheus;
pub mod records;
#[cfg(feature = "kassa")]
pub mod silent_server;
pub mod store;
