//! The Cassandra node the scylla-store tests run against: `KASSA_TEST_CASSANDRA`
//! (`host:port[,host:port]`) when set, else the project's own node, started once per test
//! binary with `scripts/cassandra.sh start` (a no-op when it already runs). Never skips: when
//! Cassandra cannot be started or reached, the calling test fails with the script's output.
//! Each caller gets a fresh keyspace; keyspaces of earlier runs are dropped after a while.

use kassa::config::{Replication, ScyllaOptions};
use kassa::store::scylla::{ScyllaStore, ScyllaTarget};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Prefix of every keyspace the tests create: `kt_<unix seconds>_<tag>_<random>`.
const PREFIX: &str = "kt_";
/// Test keyspaces older than this are dropped when a test binary first connects (a test
/// binary never runs this long, so no running test loses its keyspace).
const KEEP_KEYSPACES: Duration = Duration::from_secs(20 * 60);

/// The contact points, e.g. `["127.0.0.1:9042"]`; starts the node on first use.
pub fn hosts() -> Vec<String> {
    static HOSTS: OnceLock<Vec<String>> = OnceLock::new();
    HOSTS
        .get_or_init(|| match std::env::var("KASSA_TEST_CASSANDRA") {
            Ok(hosts) if !hosts.trim().is_empty() => hosts
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect(),
            _ => {
                start_local_node();
                vec![format!(
                    "127.0.0.1:{}",
                    std::env::var("CASSANDRA_PORT").unwrap_or_else(|_| "9042".into())
                )]
            }
        })
        .clone()
}

/// `hosts()` as KASSA_STORE writes them.
pub fn hosts_csv() -> String {
    hosts().join(",")
}

fn start_local_node() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cassandra.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg("start")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        output.status.success(),
        "Cassandra did not start (set KASSA_TEST_CASSANDRA=host:port to use a running node).\n\
         {script} start exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The options tests connect with: the defaults, with a generous timeout (two cores run
/// Cassandra, the tests and sometimes a build).
pub fn options() -> ScyllaOptions {
    ScyllaOptions {
        replication: Replication::Factor(1),
        consistency: scylla::statement::Consistency::LocalQuorum,
        serial_consistency: scylla::statement::SerialConsistency::LocalSerial,
        request_timeout: Duration::from_secs(30),
        local_dc: None,
        credentials: None,
        tls: None,
    }
}

/// A keyspace name no other test uses (`tag`: letters and `_`, for whoever reads the node).
pub fn fresh_keyspace(tag: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let mut name = format!("{PREFIX}{now}_{tag}_{}", &random[..12]);
    name.truncate(48);
    name
}

/// Creates `keyspace` with Kassa's schema (what `kassa migrate` does).
pub async fn migrate(keyspace: &str) {
    drop_old_keyspaces_once().await;
    let hosts = hosts();
    let options = options();
    kassa::store::scylla::migrate(ScyllaTarget {
        hosts: &hosts,
        keyspace,
        options: &options,
    })
    .await
    .unwrap_or_else(|e| panic!("migrating {keyspace} on {hosts:?}: {e:#}"));
}

/// A migrated fresh keyspace and a store on it.
pub async fn fresh_store(tag: &str) -> ScyllaStore {
    let keyspace = fresh_keyspace(tag);
    migrate(&keyspace).await;
    open(&keyspace).await
}

pub async fn open(keyspace: &str) -> ScyllaStore {
    let hosts = hosts();
    let options = options();
    ScyllaStore::open(ScyllaTarget {
        hosts: &hosts,
        keyspace,
        options: &options,
    })
    .await
    .unwrap_or_else(|e| panic!("opening {keyspace}: {e:#}"))
}

/// A plain session on the node, for a test's own checks and for dropping keyspaces.
pub async fn session() -> scylla::client::session::Session {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(hosts())
        .keyspaces_to_fetch(Vec::<String>::new())
        .build()
        .await
        .unwrap_or_else(|e| panic!("connecting to {:?}: {e}", hosts()))
}

pub async fn drop_keyspace(keyspace: &str) {
    session()
        .await
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS \"{keyspace}\""), ())
        .await
        .unwrap_or_else(|e| panic!("dropping {keyspace}: {e}"));
}

/// Drops the test keyspaces earlier runs left behind (each holds tables the node keeps in
/// memory), once per test binary.
async fn drop_old_keyspaces_once() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    let session = session().await;
    let rows = session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces", ())
        .await
        .expect("list keyspaces")
        .into_rows_result()
        .expect("rows");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    for row in rows.rows::<(String,)>().expect("keyspace names") {
        let (name,) = row.expect("keyspace name");
        let created = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|secs| secs.parse::<u64>().ok());
        if created.is_some_and(|at| at + KEEP_KEYSPACES.as_secs() < now) {
            session
                .query_unpaged(format!("DROP KEYSPACE IF EXISTS \"{name}\""), ())
                .await
                .unwrap_or_else(|e| panic!("dropping {name}: {e}"));
        }
    }
}
