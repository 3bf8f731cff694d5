//! The HTTP edge, shared by the JSON API (`routes`), the shopper pages, the built-in sandbox's
//! routes and start-up, which depend on it and not on each other: the contract's error type,
//! body and codes, what the cart and order actors' refusals answer, body limits and extractor
//! settings, the ask timeout and how actor and store failures answer, the 404/405 fallbacks,
//! the request middleware (request id, metrics, header limit, CORS, admission) and the OpenAPI
//! modifiers.

pub mod admission;
pub mod ask;
pub mod code;
pub mod domain;
pub mod error;
pub mod extract;
pub mod fallback;
pub mod middleware;
pub mod openapi;

pub use admission::{Admission, admit};
pub use ask::{ASK_TIMEOUT, store_call};
pub use code::Code;
pub use error::{AppError, ErrorBody, FieldError};
pub use extract::{MAX_BODY_BYTES, json_config, path_config, read_limited};
pub use fallback::{method_not_allowed, not_found};
pub use middleware::{cors, limit_header_size, observe};
