//! How long the edge waits for the actors and the store, and what their failures answer: an
//! ask or a handler's own store call that fails or does not answer in time is a 503 with
//! `Retry-After`, never a 500 or a hang (a corrupt record is the one 500).

use super::error::AppError;
use kassa_actors::ActorError;
use kassa_actors::registry::AskError;
use kassa_actors::store::{StoreError, StoreResult};
use std::time::Duration;

/// How long an ask waits for an actor, or a handler for its own store call, before
/// answering 503.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A handler's own store call (idempotency records, order listing), bounded like an actor
/// ask.
pub async fn store_call<T>(call: impl Future<Output = StoreResult<T>>) -> Result<T, AppError> {
    match tokio::time::timeout(ASK_TIMEOUT, call).await {
        Ok(answer) => answer.map_err(AppError::from),
        Err(_) => {
            tracing::warn!(timeout = ?ASK_TIMEOUT, "the store did not answer in time");
            Err(AppError::StoreUnavailable)
        }
    }
}

impl From<AskError> for AppError {
    fn from(e: AskError) -> Self {
        match e {
            AskError::Overloaded => Self::Overloaded,
            AskError::Unavailable => Self::StoreUnavailable,
        }
    }
}

impl From<ActorError> for AppError {
    fn from(e: ActorError) -> Self {
        match e {
            ActorError::Unavailable => Self::StoreUnavailable,
            ActorError::Contended => Self::Overloaded,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                Self::StoreUnavailable
            }
            corrupt @ StoreError::Corrupt(_) => Self::Internal(corrupt.into()),
        }
    }
}
