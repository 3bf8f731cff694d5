//! What the OpenAPI document says for every route alike: the bearer scheme (the JWT claims Kassa
//! reads) and the headers and meanings of the common error statuses. `routes::ApiDoc` lists
//! the routes and applies these.

use utoipa::Modify;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

/// The headers that come with some errors: `Retry-After` on every 503, `WWW-Authenticate`
/// on the 401 of a route that takes a bearer token (not on a webhook's `invalid_signature`);
/// and what an error status means where the route does not describe it itself.
pub struct ErrorHeaders;

impl Modify for ErrorHeaders {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Header, RefOr};
        let retry_after: RefOr<Header> = Header::builder()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            ))
            .description(Some("Seconds to wait before retrying"))
            .build()
            .into();
        let www_authenticate: RefOr<Header> = Header::builder()
            .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
            .description(Some(
                "`Bearer` when the token is missing, `Bearer error=\"invalid_token\"` when it is not valid",
            ))
            .build()
            .into();
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                let bearer = operation.security.is_some();
                for (status, response) in &mut operation.responses.responses {
                    let RefOr::T(response) = response else {
                        continue;
                    };
                    if response.description.is_empty() {
                        response.description = common_description(status, bearer).into();
                    }
                    match status.as_str() {
                        "503" => {
                            response
                                .headers
                                .insert("Retry-After".into(), retry_after.clone());
                        }
                        "401" if bearer => {
                            response
                                .headers
                                .insert("WWW-Authenticate".into(), www_authenticate.clone());
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What an error status means wherever a route does not say more.
fn common_description(status: &str, bearer: bool) -> &'static str {
    match status {
        "400" => "invalid_json: the body is not JSON",
        "401" if bearer => {
            "unauthorized: no bearer token; invalid_token: expired, wrongly signed or of another algorithm"
        }
        "401" => "invalid_signature",
        "403" => "forbidden: the token has no `admin` role",
        "413" => "payload_too_large: the body is over 64 KiB",
        "415" => "unsupported_media_type: the body is not `application/json`",
        "422" => "validation_failed: `details` names the fields",
        "502" => {
            "gateway_unavailable: the payment gateway failed; the order failed, its stock is released and the cart unlocked"
        }
        "503" => "overloaded or store_unavailable: retry after `Retry-After` seconds",
        _ => "",
    }
}

/// The whole interface to a storefront's identity provider: the claims Kassa reads.
const JWT_CLAIMS: &str = "A JWT issued by the storefront's identity provider, signed HS256 with `KASSA_JWT_SECRET` (raw UTF-8 bytes) or RS256/ES256 with the key in `KASSA_JWT_PUBLIC_KEY_FILE`. Claims: `sub` (required): the user id, owner of carts and orders; `exp` (required): expiry, unix seconds; `email` (optional): where confirmations go (else `shippingDetails.email`), and the checkout page's prefilled email; `roles` (optional array): `admin` unlocks the admin routes; `iss` / `aud`: required to equal `KASSA_JWT_ISSUER` / `KASSA_JWT_AUDIENCE` when those are set.";

pub struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        scheme.description = Some(JWT_CLAIMS.into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}
