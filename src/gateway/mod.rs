//! The payment gateway adapters behind `kassa_actors::gateway::Gateway`: the built-in sandbox
//! (in-process, or standalone over HTTP) and a client for any gateway speaking the protocol.
//! They open, refund and look up payments; they never decide an order's state. `client`: the
//! HTTP client they share (timeouts, retries, deadline, metrics).

mod client;
pub mod http;
pub mod sandbox;
pub mod stripe;
