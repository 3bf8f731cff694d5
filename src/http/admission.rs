//! Admission: a bound on requests in flight, shared by every worker, refused at once beyond it
//! (503 `overloaded`), never queued.

use super::code::Code;
use super::error::{AppError, ErrorBody};
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bound on requests in flight (`KASSA_MAX_IN_FLIGHT`), shared by every worker.
#[derive(Debug)]
pub struct Admission {
    in_flight: AtomicUsize,
    bound: usize,
}

impl Admission {
    pub fn new(bound: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            bound,
        }
    }

    /// A place among the requests in flight, held until dropped; none when all are taken.
    fn enter(admission: web::Data<Admission>) -> Option<Admitted> {
        admission
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < admission.bound).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted(admission))
    }
}

/// One request's place in flight, given back when the response is ready.
struct Admitted(web::Data<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Probes and scrapes pass whatever the load: a busy Kassa is alive, and says so.
fn never_refused(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Admission: with `KASSA_MAX_IN_FLIGHT` requests in flight, the next is answered at once with
/// 503 `overloaded` and `Retry-After: 1` (counted in `kassa_http_shed_total`, not logged one by
/// one), never queued; below the bound requests pass untouched. Needs `web::Data<Admission>`
/// in the app (without it every request passes).
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let admission = req
        .app_data::<web::Data<Admission>>()
        .filter(|_| !never_refused(req.path()))
        .cloned();
    let _admitted = match admission.map(Admission::enter) {
        Some(None) => {
            metrics::counter!("kassa_http_shed_total").increment(1);
            let refusal = HttpResponse::ServiceUnavailable()
                .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
                .json(ErrorBody {
                    error: AppError::Overloaded.to_string(),
                    code: Code::Overloaded,
                    details: None,
                });
            return Ok(req.into_response(refusal).map_into_right_body());
        }
        Some(admitted) => admitted,
        None => None,
    };
    next.call(req)
        .await
        .map(ServiceResponse::map_into_left_body)
}
