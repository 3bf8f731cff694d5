//! The shopper's pages (API.md, "Shopper pages"): the hosted checkout, the order page and, in
//! development, a demo shop. Server-rendered from templates, working without JavaScript; they
//! call the same actors and the same checkout path as the JSON routes, never the store's
//! records directly but for checkout sessions.

pub mod links;
