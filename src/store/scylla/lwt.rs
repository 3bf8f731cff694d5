//! The answer of a lightweight transaction, read the same on ScyllaDB and Cassandra: the
//! `[applied]` column found by name (ScyllaDB sends the old row on every LWT, Cassandra only
//! on failure) and, when not applied, the stored values by column. Never runs a statement.

use super::corrupt;
use kassa_actors::store::{StoreError, StoreResult, WriteOutcome};
use scylla::response::query_result::QueryResult;
use scylla::value::{CqlValue, Row};
use time::OffsetDateTime;
use uuid::Uuid;

/// The answer to a conditional statement.
pub(super) struct Lwt {
    pub(super) applied: bool,
    /// When not applied: the stored values, by column name.
    row: Vec<(String, Option<CqlValue>)>,
}

impl Lwt {
    pub(super) fn read(table: &'static str, result: QueryResult) -> StoreResult<Self> {
        let rows = result.into_rows_result().map_err(|e| corrupt(table, e))?;
        let names: Vec<String> = rows
            .column_specs()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let first = rows
            .maybe_first_row::<Row>()
            .map_err(|e| corrupt(table, e))?
            .ok_or_else(|| StoreError::Corrupt(format!("{table}: an LWT answered no row")))?;
        let row: Vec<(String, Option<CqlValue>)> = names.into_iter().zip(first.columns).collect();
        let applied = match row.iter().find(|(name, _)| name == "[applied]") {
            Some((_, Some(CqlValue::Boolean(applied)))) => *applied,
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "{table}: an LWT answered without an [applied] column"
                )));
            }
        };
        metrics::counter!(
            "kassa_store_lwt_total",
            "table" => table,
            "outcome" => if applied { "applied" } else { "not_applied" }
        )
        .increment(1);
        Ok(Self { applied, row })
    }

    pub(super) fn outcome(&self) -> WriteOutcome {
        if self.applied {
            WriteOutcome::Applied
        } else {
            WriteOutcome::Conflict
        }
    }

    fn get(&self, column: &str) -> Option<&CqlValue> {
        self.row
            .iter()
            .find(|(name, _)| name == column)
            .and_then(|(_, v)| v.as_ref())
    }

    pub(super) fn text(&self, column: &str) -> Option<&str> {
        match self.get(column) {
            Some(CqlValue::Text(s) | CqlValue::Ascii(s)) => Some(s),
            _ => None,
        }
    }

    pub(super) fn uuid(&self, column: &str) -> Option<Uuid> {
        match self.get(column) {
            Some(CqlValue::Uuid(u)) => Some(*u),
            _ => None,
        }
    }

    pub(super) fn int(&self, column: &str) -> Option<i32> {
        match self.get(column) {
            Some(CqlValue::Int(i)) => Some(*i),
            _ => None,
        }
    }

    pub(super) fn timestamp(&self, column: &str) -> Option<OffsetDateTime> {
        match self.get(column) {
            Some(CqlValue::Timestamp(ts)) => {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts.0) * 1_000_000).ok()
            }
            _ => None,
        }
    }
}
