//! How request bodies and paths are read at the edge: the 64 KiB body limit, `application/json`
//! (or `+json`) required, and the extractors' failures in the contract's error shape.

use super::error::{AppError, FieldError};
use actix_web::web;

/// Request bodies above this are refused with 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Whether `mime` is JSON: `application/json` or a `+json` type.
pub fn is_json_mime(mime: mime::Mime) -> bool {
    mime.subtype() == mime::JSON || mime.suffix() == Some(mime::JSON)
}

/// The JSON extractor's settings: at most `MAX_BODY_BYTES`, a JSON content type required,
/// failures mapped by `json_error`.
pub fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .content_type_required(true)
        .content_type(is_json_mime)
        .error_handler(|err, _| json_error(err).into())
}

/// The path extractor's settings: a segment that does not parse is a 422 on `path`.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default()
        .error_handler(|err, _| AppError::invalid("path", err.to_string()).into())
}

/// Maps actix's JSON body errors onto the contract: 413, 415, 400 `invalid_json`, 422.
pub fn json_error(err: actix_web::error::JsonPayloadError) -> AppError {
    use actix_web::error::JsonPayloadError as E;
    match err {
        E::OverflowKnownLength { .. } | E::Overflow { .. } => AppError::PayloadTooLarge,
        E::ContentType => AppError::UnsupportedMediaType,
        E::Deserialize(e) if e.is_data() => AppError::Validation(vec![FieldError {
            field: "body".into(),
            message: e.to_string(),
        }]),
        E::Deserialize(e) => AppError::InvalidJson(format!("the body is not valid JSON: {e}")),
        E::Payload(actix_web::error::PayloadError::Overflow) => AppError::PayloadTooLarge,
        other => AppError::InvalidJson(format!("the body could not be read: {other}")),
    }
}

/// The raw body, at most `MAX_BODY_BYTES` (413 beyond): for the webhooks, whose signature is
/// checked on the bytes before anything is parsed.
pub async fn read_limited(mut payload: web::Payload) -> Result<web::BytesMut, AppError> {
    use futures_util::StreamExt;
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| AppError::InvalidJson(format!("the body could not be read: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(AppError::PayloadTooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
