//! The scylla store on a real Apache Cassandra 5 node (tests/support/cassandra.rs starts it):
//! the shared conformance suite, the migrator, and the lightweight transactions that keep
//! several writers (replicas) from overwriting each other.

#[path = "support/cassandra.rs"]
mod cassandra;

use kassa::store::scylla::{MIGRATIONS, ScyllaStore, ScyllaTarget, required_version};
use kassa_actors::domain::{Currency, OrderId, ProductInfo, Sku};
use kassa_actors::store::{ProductRow, ProductWrite, Reservation, Store, WriteOutcome};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_store_conforms() {
    let keyspace = cassandra::fresh_keyspace("conformance");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    kassa_actors::conformance::run_all(&store).await;
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_and_records_every_version() {
    let keyspace = cassandra::fresh_keyspace("migrate");
    let hosts = cassandra::hosts();
    let options = cassandra::options();
    let target = || ScyllaTarget {
        hosts: &hosts,
        keyspace: &keyspace,
        options: &options,
    };
    let first = kassa::store::scylla::migrate(target())
        .await
        .expect("migrate");
    assert!(first.keyspace_created);
    assert_eq!(first.flavor, kassa::store::scylla::Flavor::Cassandra);
    let names: Vec<String> = MIGRATIONS.iter().map(|m| m.name.to_string()).collect();
    assert_eq!(first.applied, names);
    assert_eq!(first.version, required_version());

    let second = kassa::store::scylla::migrate(target())
        .await
        .expect("migrate again");
    assert!(!second.keyspace_created);
    assert!(
        second.applied.is_empty(),
        "nothing to apply the second time"
    );

    let session = cassandra::session().await;
    let rows = session
        .query_unpaged(
            format!("SELECT version FROM \"{keyspace}\".schema_migrations"),
            (),
        )
        .await
        .expect("read schema_migrations")
        .into_rows_result()
        .expect("rows");
    let mut versions: Vec<i32> = rows
        .rows::<(i32,)>()
        .expect("versions")
        .map(|r| r.expect("version").0)
        .collect();
    versions.sort();
    let expected: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected);
    ScyllaStore::open(target())
        .await
        .expect("a migrated keyspace opens");
    cassandra::drop_keyspace(&keyspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_that_was_not_migrated_is_refused_naming_the_fix() {
    let keyspace = cassandra::fresh_keyspace("unmigrated");
    let hosts = cassandra::hosts();
    let options = cassandra::options();
    let target = ScyllaTarget {
        hosts: &hosts,
        keyspace: &keyspace,
        options: &options,
    };
    let missing = ScyllaStore::open(target.clone())
        .await
        .err()
        .expect("a missing keyspace is refused");
    assert!(
        format!("{missing:#}").contains("kassa migrate"),
        "{missing:#}"
    );

    // A keyspace whose recorded migration differs from this build's file is refused too.
    kassa::store::scylla::migrate(target.clone())
        .await
        .expect("migrate");
    cassandra::session()
        .await
        .query_unpaged(
            format!(
                "UPDATE \"{keyspace}\".schema_migrations SET checksum = 'edited' WHERE version = 1"
            ),
            (),
        )
        .await
        .expect("tamper");
    let changed = ScyllaStore::open(target)
        .await
        .err()
        .expect("a changed migration is refused");
    assert!(
        format!("{changed:#}").contains("was changed after it was applied"),
        "{changed:#}"
    );
    cassandra::drop_keyspace(&keyspace).await;
}

#[test]
fn kassa_migrate_applies_the_schema_once() {
    let keyspace = cassandra::fresh_keyspace("cli");
    let data = tempfile::tempdir().expect("tempdir");
    let run = || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kassa"))
            .arg("migrate")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "KASSA_STORE",
                format!("scylla://{}/{keyspace}", cassandra::hosts_csv()),
            )
            .env("KASSA_DATA_DIR", data.path())
            .env("KASSA_LOG", "warn")
            .env("KASSA_SCYLLA_REQUEST_TIMEOUT", "30s")
            .output()
            .expect("run kassa migrate");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "kassa migrate failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let first = run();
    assert!(
        first.contains("created") && first.contains("0001_initial"),
        "{first}"
    );
    let second = run();
    assert!(second.contains("up to date"), "{second}");
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(cassandra::drop_keyspace(&keyspace));
}

fn product(version: u64, on_hand: i64) -> ProductRow {
    ProductRow {
        info: Some(ProductInfo {
            name: "Flash tee".into(),
            price: 1999,
            currency: Currency::EUR,
        }),
        on_hand,
        version,
    }
}

/// Two stores on one keyspace are two replicas: of many writers that read the same version,
/// exactly one conditional batch applies, and nothing of the others is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_product_writes_from_two_replicas_apply_exactly_once() {
    let keyspace = cassandra::fresh_keyspace("race");
    cassandra::migrate(&keyspace).await;
    let a: Arc<dyn Store> = Arc::new(cassandra::open(&keyspace).await);
    let b: Arc<dyn Store> = Arc::new(cassandra::open(&keyspace).await);
    let sku = Sku::parse("race-tee").expect("sku");
    let created = ProductWrite {
        sku: sku.clone(),
        expected_version: 0,
        row: product(1, 1),
        put_reservations: vec![],
        remove_reservations: vec![],
    };
    assert_eq!(
        a.write_product(created).await.expect("create"),
        WriteOutcome::Applied
    );
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(15);
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let write = ProductWrite {
                sku: sku.clone(),
                expected_version: 1,
                row: product(2, 1),
                put_reservations: vec![Reservation {
                    order_id: OrderId::new(),
                    qty: 1,
                    expires_at,
                    committed: false,
                }],
                remove_reservations: vec![],
            };
            tokio::spawn(async move { store.write_product(write).await })
        })
        .collect();
    let mut applied = 0;
    for writer in writers {
        if writer.await.expect("task").expect("write") == WriteOutcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1, "exactly one writer of version 2 wins");
    let stored = b.load_product(&sku).await.expect("load").expect("present");
    assert_eq!(stored.row.version, 2);
    assert_eq!(
        stored.reservations.len(),
        1,
        "only the winner's reservation is stored: the last unit is held once"
    );
    drop((a, b));
    cassandra::drop_keyspace(&keyspace).await;
}
