//! Kassa's API tests: the real server on port 0 over real HTTP, as a storefront would call it.

mod auth;
mod carts;
mod catalog;
mod gateway_faults;
mod lifecycle;
mod operations;
mod orders;
mod sandbox;
mod shopper;
mod store_faults;
mod webhooks;
