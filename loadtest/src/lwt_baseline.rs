//! The database's own LWT capacity, measured in the same run as the scenario: `concurrency`
//! tasks each create a row with `INSERT ... IF NOT EXISTS` and then change it with
//! `UPDATE ... IF version = ?` three times, the shape of Kassa's cart writes (a versioned
//! blob per partition, no two tasks on one partition), from the same driver with Kassa's
//! default consistency (LOCAL_QUORUM, serial LOCAL_SERIAL) and token-aware routing. Kassa's
//! LWTs per second during the scenario over this figure says how much of the database's
//! Paxos capacity a journey takes (issue 18): near 1, the database is the limit; far below,
//! Kassa is.
//!
//! Then the same tasks run the same shape for as long again with plain writes, each stamped
//! `USING TIMESTAMP` its version (the fenced writes of `docs/ownership.md`), so the report
//! can say what an LWT costs the node in plain writes: the figure that proposal's estimate
//! ("about a tenth") rests on.
//!
//! Runs in a keyspace of its own (`kassa_lwt_baseline`, the same replication as Kassa's
//! keyspace when that exists), dropped afterwards; never reads or writes Kassa's tables.
//! Reaches the node named by a `scylla://[user:password@]host:port[,host:port]/keyspace`
//! URL (Kassa's `KASSA_STORE` form; TLS is not supported here).

use anyhow::Context as _;
use hdrhistogram::Histogram;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlValue, Row};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

const KEYSPACE: &str = "kassa_lwt_baseline";
/// Updates after each row's insert: a cart is created, then changed a few times.
const UPDATES_PER_ROW: i64 = 3;
/// About a small cart's JSON body.
const BODY_BYTES: usize = 256;

/// What the loops measured.
#[derive(Debug, Clone, Serialize)]
pub struct LwtBaseline {
    /// Tasks in each loop.
    pub concurrency: usize,
    /// The LWTs.
    pub lwt: Loop,
    /// The same shape as plain writes, from the same tasks, run after the LWTs.
    pub plain: Loop,
}

/// One loop's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Loop {
    pub statement: &'static str,
    pub seconds: f64,
    /// Writes that landed (for an LWT: applied).
    pub writes: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Writes that failed (timeouts, unavailable) or, for an LWT, were not applied (none
    /// expected).
    pub errors: u64,
}

/// The statements one loop runs: a row's creation, then its changes.
#[derive(Clone)]
enum Shape {
    /// `IF NOT EXISTS`, then `IF version = ?`.
    Lwt {
        insert: PreparedStatement,
        update: PreparedStatement,
    },
    /// The same columns, plain, `USING TIMESTAMP` the version.
    Plain {
        insert: PreparedStatement,
        update: PreparedStatement,
    },
}

impl Shape {
    fn statement(&self) -> &'static str {
        match self {
            Self::Lwt { .. } => "INSERT .. IF NOT EXISTS, then 3 x UPDATE .. IF version = ?",
            Self::Plain { .. } => "INSERT, then 3 x UPDATE, each USING TIMESTAMP its version",
        }
    }
}

/// Where the baseline connects: the hosts, credentials and keyspace of a `scylla://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub hosts: Vec<String>,
    pub credentials: Option<(String, String)>,
    /// Kassa's keyspace, whose replication the baseline's keyspace copies.
    pub keyspace: String,
}

impl Node {
    /// `None` when `url` is not a `scylla://` URL (the embedded store has no LWTs).
    pub fn from_store_url(url: &str) -> Option<Self> {
        let rest = url.strip_prefix("scylla://")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                (Some((user.to_string(), password.to_string())), hosts)
            }
            None => (None, authority),
        };
        let hosts: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| {
                if h.contains(':') {
                    h.to_string()
                } else {
                    format!("{h}:9042")
                }
            })
            .collect();
        let keyspace = path
            .split(['?', '/'])
            .next()
            .unwrap_or_default()
            .to_string();
        (!hosts.is_empty()).then_some(Self {
            hosts,
            credentials,
            keyspace,
        })
    }
}

/// Drives the LWT loop from `concurrency` tasks for `length`, then the plain-write loop for
/// as long.
pub async fn run(node: &Node, concurrency: usize, length: Duration) -> anyhow::Result<LwtBaseline> {
    let session = Arc::new(connect(node).await?);
    let replication = replication_of(&session, &node.keyspace).await;
    session
        .query_unpaged(
            format!("CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = {replication}"),
            (),
        )
        .await
        .context("creating the baseline's keyspace")?;
    session
        .query_unpaged(
            format!(
                "CREATE TABLE IF NOT EXISTS {KEYSPACE}.rows \
                 (id uuid PRIMARY KEY, owner text, version bigint, body blob)"
            ),
            (),
        )
        .await
        .context("creating the baseline's table")?;
    session.await_schema_agreement().await?;
    let insert = session
        .prepare(format!(
            "INSERT INTO {KEYSPACE}.rows (id, owner, version, body) VALUES (?, ?, ?, ?) \
             IF NOT EXISTS"
        ))
        .await?;
    let update = session
        .prepare(format!(
            "UPDATE {KEYSPACE}.rows SET owner = ?, version = ?, body = ? WHERE id = ? \
             IF version = ?"
        ))
        .await?;
    let plain_insert = session
        .prepare(format!(
            "INSERT INTO {KEYSPACE}.rows (id, owner, version, body) VALUES (?, ?, ?, ?) \
             USING TIMESTAMP ?"
        ))
        .await?;
    let plain_update = session
        .prepare(format!(
            "UPDATE {KEYSPACE}.rows USING TIMESTAMP ? SET owner = ?, version = ?, body = ? \
             WHERE id = ?"
        ))
        .await?;

    let lwt = drive(
        &session,
        &Shape::Lwt { insert, update },
        concurrency,
        length,
    )
    .await?;
    let plain = drive(
        &session,
        &Shape::Plain {
            insert: plain_insert,
            update: plain_update,
        },
        concurrency,
        length,
    )
    .await?;
    // Best effort: a keyspace left behind is reused by the next run.
    let _ = session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {KEYSPACE}"), ())
        .await;
    Ok(LwtBaseline {
        concurrency,
        lwt,
        plain,
    })
}

/// Runs `shape` from `concurrency` tasks for `length`.
async fn drive(
    session: &Arc<Session>,
    shape: &Shape,
    concurrency: usize,
    length: Duration,
) -> anyhow::Result<Loop> {
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (session, shape, histogram) = (session.clone(), shape.clone(), histogram.clone());
            tokio::spawn(async move { worker(&session, &shape, deadline, &histogram).await })
        })
        .collect();
    let mut errors = 0;
    for task in tasks {
        errors += task.await.context("a baseline task")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
    let quantile_ms = |quantile| histogram.value_at_quantile(quantile) as f64 / 1000.0;
    Ok(Loop {
        statement: shape.statement(),
        seconds,
        writes: histogram.len(),
        per_second: histogram.len() as f64 / seconds.max(1e-9),
        p50_ms: quantile_ms(0.5),
        p99_ms: quantile_ms(0.99),
        errors,
    })
}

/// One task's loop until `deadline`; answers its errors. Each write's latency goes into
/// `histogram` if it landed (for an LWT: applied).
async fn worker(
    session: &Session,
    shape: &Shape,
    deadline: Instant,
    histogram: &Mutex<Histogram<u64>>,
) -> u64 {
    let body = vec![0x5a_u8; BODY_BYTES];
    let mut latencies = Vec::with_capacity(4096);
    let mut errors = 0;
    'rows: while Instant::now() < deadline {
        let id = Uuid::new_v4();
        let began = Instant::now();
        let inserted = match shape {
            Shape::Lwt { insert, .. } => applied(
                session
                    .execute_unpaged(insert, (id, "baseline", 1_i64, &body))
                    .await,
            ),
            Shape::Plain { insert, .. } => session
                .execute_unpaged(insert, (id, "baseline", 1_i64, &body, 1_i64))
                .await
                .is_ok(),
        };
        if !inserted {
            errors += 1;
            continue;
        }
        latencies.push(began.elapsed());
        for version in 1..=UPDATES_PER_ROW {
            if Instant::now() >= deadline {
                break 'rows;
            }
            let began = Instant::now();
            let updated = match shape {
                Shape::Lwt { update, .. } => applied(
                    session
                        .execute_unpaged(update, ("baseline", version + 1, &body, id, version))
                        .await,
                ),
                Shape::Plain { update, .. } => session
                    .execute_unpaged(update, (version + 1, "baseline", version + 1, &body, id))
                    .await
                    .is_ok(),
            };
            if !updated {
                errors += 1;
                continue 'rows;
            }
            latencies.push(began.elapsed());
        }
    }
    let mut histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
    for latency in latencies {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros.max(1));
    }
    errors
}

/// Whether an LWT answered `[applied] = true` (the first column on Cassandra and ScyllaDB).
fn applied(
    result: Result<scylla::response::query_result::QueryResult, scylla::errors::ExecutionError>,
) -> bool {
    let Ok(result) = result else { return false };
    let Ok(rows) = result.into_rows_result() else {
        return false;
    };
    matches!(
        rows.maybe_first_row::<Row>(),
        Ok(Some(Row { columns })) if matches!(columns.first(), Some(Some(CqlValue::Boolean(true))))
    )
}

/// A session as Kassa opens one by default: LOCAL_QUORUM, LOCAL_SERIAL, token-aware.
async fn connect(node: &Node) -> anyhow::Result<Session> {
    let profile = ExecutionProfile::builder()
        .consistency(Consistency::LocalQuorum)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .request_timeout(Some(Duration::from_secs(10)))
        .load_balancing_policy(DefaultPolicy::builder().token_aware(true).build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&node.hosts)
        .default_execution_profile_handle(profile.into_handle())
        .keyspaces_to_fetch([KEYSPACE.to_string()]);
    if let Some((user, password)) = &node.credentials {
        builder = builder.user(user, password);
    }
    builder
        .build()
        .await
        .with_context(|| format!("LWT baseline: cannot connect to {}", node.hosts.join(",")))
}

/// Kassa's keyspace's replication as CQL (`{'class': ..., ...}`), or one replica when that
/// keyspace is not there.
async fn replication_of(session: &Session, keyspace: &str) -> String {
    let stored = async {
        let result = session
            .query_unpaged(
                "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (keyspace,),
            )
            .await
            .ok()?;
        let rows = result.into_rows_result().ok()?;
        rows.maybe_first_row::<(HashMap<String, String>,)>()
            .ok()
            .flatten()
            .map(|(map,)| map)
    }
    .await;
    match stored {
        Some(map) if !map.is_empty() => {
            let mut entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("'{}': '{}'", k.replace('\'', "''"), v.replace('\'', "''")))
                .collect();
            entries.sort();
            format!("{{{}}}", entries.join(", "))
        }
        _ => "{'class': 'SimpleStrategy', 'replication_factor': 1}".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_url_names_the_hosts_the_credentials_and_the_keyspace() {
        assert_eq!(
            Node::from_store_url("scylla://u:p@10.0.0.5:9042,10.0.0.6/shop?x=1"),
            Some(Node {
                hosts: vec!["10.0.0.5:9042".into(), "10.0.0.6:9042".into()],
                credentials: Some(("u".into(), "p".into())),
                keyspace: "shop".into(),
            })
        );
        assert_eq!(
            Node::from_store_url("scylla://127.0.0.1:9042/kassa"),
            Some(Node {
                hosts: vec!["127.0.0.1:9042".into()],
                credentials: None,
                keyspace: "kassa".into(),
            })
        );
        assert_eq!(Node::from_store_url("embedded:/tmp/x"), None);
        assert_eq!(Node::from_store_url("scylla:///kassa"), None);
    }
}
