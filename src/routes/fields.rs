//! Reading a JSON request body field by field, so that one 422 names every bad field at once.
//! Handlers get parsed domain values out of it, never raw JSON.

use crate::http::error::{AppError, FieldError};
use kassa_actors::domain::InvalidValue;
use serde_json::{Map, Value};

pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    pub fn of(body: &'a Value) -> Result<Self, AppError> {
        match body {
            Value::Object(object) => Ok(Self {
                object,
                errors: Vec::new(),
            }),
            _ => Err(AppError::invalid("body", "must be a JSON object")),
        }
    }

    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_string(),
            message: message.into(),
        });
    }

    /// The field, present and not null, or a recorded "is required".
    fn present(&mut self, name: &str) -> Option<&'a Value> {
        match self.object.get(name) {
            None | Some(Value::Null) => {
                self.fail(name, "is required");
                None
            }
            Some(v) => Some(v),
        }
    }

    /// A required string, parsed by `parse`.
    pub fn string<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Option<T> {
        let value = self.present(name)?;
        let Some(s) = value.as_str() else {
            self.fail(name, "must be a string");
            return None;
        };
        self.parsed(name, parse(s))
    }

    /// An optional string (absent or null is `None`), parsed by `parse`.
    pub fn optional_string<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, InvalidValue>,
    ) -> Option<Option<T>> {
        match self.object.get(name) {
            None | Some(Value::Null) => Some(None),
            Some(_) => self.string(name, parse).map(Some),
        }
    }

    /// A required integer (no fractions, no strings), parsed by `parse`.
    pub fn integer<T>(
        &mut self,
        name: &str,
        parse: impl FnOnce(i64) -> Result<T, InvalidValue>,
    ) -> Option<T> {
        let value = self.present(name)?;
        let Some(n) = value.as_i64() else {
            self.fail(name, "must be an integer");
            return None;
        };
        self.parsed(name, parse(n))
    }

    /// A required JSON object, handed to `read` as nested fields named `name.field`.
    pub fn object<T>(
        &mut self,
        name: &str,
        read: impl FnOnce(&mut Fields<'a>) -> Option<T>,
    ) -> Option<T> {
        let value = self.present(name)?;
        let Value::Object(object) = value else {
            self.fail(name, "must be an object");
            return None;
        };
        let mut nested = Fields {
            object,
            errors: Vec::new(),
        };
        let out = read(&mut nested);
        for e in nested.errors {
            self.fail(&format!("{name}.{}", e.field), e.message);
        }
        out
    }

    fn parsed<T>(&mut self, name: &str, result: Result<T, InvalidValue>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(name, e.message);
                None
            }
        }
    }

    /// `Ok` when every field read so far was valid, else one 422 listing them all.
    pub fn finish(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}

/// `?limit=&cursor=` of a listing, both optional. `limit` is read as text so that a bad one is
/// a 422 naming it, and documented as the integer it must be.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page: 1..=100, default 20.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<String>,
    /// The previous page's `nextCursor`.
    pub cursor: Option<String>,
}

impl PageQuery {
    const DEFAULT_LIMIT: usize = 20;
    const MAX_LIMIT: usize = 100;

    /// The page size and where to continue (`decode` reads a cursor this API gave out).
    pub fn parse<T>(
        req: &actix_web::HttpRequest,
        decode: impl FnOnce(&str) -> Option<T>,
    ) -> Result<(usize, Option<T>), AppError> {
        let query = actix_web::web::Query::<Self>::from_query(req.query_string())
            .map_err(|e| AppError::invalid("query", e.to_string()))?
            .into_inner();
        let limit = match query.limit.as_deref() {
            None => Self::DEFAULT_LIMIT,
            Some(raw) => raw
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=Self::MAX_LIMIT).contains(n))
                .ok_or_else(|| AppError::invalid("limit", "must be an integer from 1 to 100"))?,
        };
        let after = match query.cursor.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(
                decode(raw)
                    .ok_or_else(|| AppError::invalid("cursor", "is not a cursor from this API"))?,
            ),
        };
        Ok((limit, after))
    }
}
