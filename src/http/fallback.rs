//! The answers for what no route takes: an unknown path (404 `not_found`) and another method
//! on a known path (405 `method_not_allowed` with `Allow`), in the contract's error shape.

use super::code::Code;
use super::error::{AppError, ErrorBody};
use actix_web::{HttpResponse, web};

/// Unknown paths get the contract's error shape too.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::not_found(Code::NotFound, "no such route"))
}

/// A resource's default service: any other method is 405 in the contract's error shape,
/// with `Allow` naming the methods the resource takes (`"GET"`, `"PUT, DELETE"`).
pub fn method_not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move || async move {
        HttpResponse::MethodNotAllowed()
            .insert_header((actix_web::http::header::ALLOW, allow))
            .json(ErrorBody {
                error: "this method is not allowed on this route".into(),
                code: Code::MethodNotAllowed,
                details: None,
            })
    })
}
