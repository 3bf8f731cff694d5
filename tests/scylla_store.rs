//! The scylla store on a real Apache Cassandra 5 node (testkit/src/cassandra.rs starts it):
//! the shared conformance suite, the migrator, the lightweight transactions that keep
//! several writers (replicas) from overwriting each other, and the catalog index and
//! session TTLs the suite cannot see.

use kassa::store::scylla::{MIGRATIONS, ScyllaStore, ScyllaTarget, required_version};
use kassa_actors::domain::{CartId, OrderId, Sku, UserId};
use kassa_actors::store::{
    CheckoutSession, ProductRow, ProductWrite, Reservation, Store, WriteOutcome,
};
use kassa_testkit::cassandra;
use kassa_testkit::records::{product_row, product_write};
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

/// Two stores on one keyspace are two replicas: of many writers that read the same version,
/// exactly one conditional batch applies, and nothing of the others is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_product_writes_from_two_replicas_apply_exactly_once() {
    let keyspace = cassandra::fresh_keyspace("race");
    cassandra::migrate(&keyspace).await;
    let a: Arc<dyn Store> = Arc::new(cassandra::open(&keyspace).await);
    let b: Arc<dyn Store> = Arc::new(cassandra::open(&keyspace).await);
    let sku = Sku::parse("race-tee").expect("sku");
    let created = product_write(&sku, 0, product_row(1, 1));
    assert_eq!(
        a.write_product(created).await.expect("create"),
        WriteOutcome::Applied
    );
    let expires_at = time::OffsetDateTime::now_utc() + time::Duration::minutes(15);
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let write = ProductWrite {
                put_reservations: vec![Reservation {
                    order_id: OrderId::new(),
                    qty: 1,
                    expires_at,
                    committed: false,
                }],
                ..product_write(&sku, 1, product_row(2, 1))
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

fn unnamed(version: u64) -> ProductRow {
    ProductRow {
        info: None,
        ..product_row(version, 0)
    }
}

/// Writes `write`, which must apply.
async fn apply(store: &ScyllaStore, write: ProductWrite) {
    let sku = write.sku.clone();
    assert_eq!(
        store.write_product(write).await.expect("write"),
        WriteOutcome::Applied,
        "{sku:?}"
    );
}

/// The SKUs the catalog index holds, read directly.
async fn catalog_entries(keyspace: &str) -> Vec<String> {
    cassandra::session()
        .await
        .query_unpaged(
            format!("SELECT sku FROM \"{keyspace}\".catalog WHERE bucket = 0"),
            (),
        )
        .await
        .expect("read catalog")
        .into_rows_result()
        .expect("rows")
        .rows::<(String,)>()
        .expect("skus")
        .map(|r| r.expect("sku").0)
        .collect()
}

/// A product named on one replica, unnamed on another and named again on the first is
/// listed: the first replica's memory of the entry it wrote is for an older version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_unnamed_on_another_replica_and_named_again_is_listed() {
    let keyspace = cassandra::fresh_keyspace("relist");
    cassandra::migrate(&keyspace).await;
    let a = cassandra::open(&keyspace).await;
    let b = cassandra::open(&keyspace).await;
    let sku = Sku::parse("relist-tee").expect("sku");
    apply(&a, product_write(&sku, 0, product_row(1, 5))).await;
    apply(&b, product_write(&sku, 1, unnamed(2))).await;
    assert_eq!(a.list_products(None, 10).await.expect("list"), vec![]);
    assert!(catalog_entries(&keyspace).await.is_empty());
    apply(&a, product_write(&sku, 2, product_row(3, 5))).await;
    apply(&a, product_write(&sku, 3, product_row(4, 4))).await;
    assert_eq!(
        b.list_products(None, 10).await.expect("list"),
        vec![sku.clone()]
    );
    drop((a, b));
    cassandra::drop_keyspace(&keyspace).await;
}

/// What a crash can leave in the index (an entry whose product lost its name before the
/// entry's delete, an entry whose product was never created) is never listed; the first
/// kind is retired by the listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_entries_a_crash_left_behind_are_never_listed() {
    let keyspace = cassandra::fresh_keyspace("crashed");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let (kept, gone) = (
        Sku::parse("kept").expect("sku"),
        Sku::parse("gone").expect("sku"),
    );
    for sku in [&kept, &gone] {
        apply(&store, product_write(sku, 0, product_row(1, 5))).await;
    }
    let session = cassandra::session().await;
    for cql in [
        // The LWT that unnamed `gone` applied; the process died before the entry's delete.
        "UPDATE \"{ks}\".stock SET version = 2, name = null, price = null, currency = null \
         WHERE sku = 'gone'",
        // An entry written before a creating LWT that never applied.
        "INSERT INTO \"{ks}\".catalog (bucket, sku) VALUES (0, 'never') USING TIMESTAMP 1",
    ] {
        session
            .query_unpaged(cql.replace("{ks}", &keyspace), ())
            .await
            .expect(cql);
    }
    assert_eq!(
        store.list_products(None, 10).await.expect("list"),
        vec![kept.clone()]
    );
    assert_eq!(
        catalog_entries(&keyspace).await,
        vec!["kept".to_string(), "never".to_string()],
        "the unnamed product's entry is retired; the uncreated one's is left (its creation \
         may still be retried) and skipped"
    );
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

/// Applying 0002 indexes the products named before the catalog index existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_indexes_products_named_before_the_catalog_existed() {
    let keyspace = cassandra::fresh_keyspace("backfill");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let (named, unnamed_sku) = (
        Sku::parse("old-named").expect("sku"),
        Sku::parse("old-unnamed").expect("sku"),
    );
    apply(&store, product_write(&named, 0, product_row(1, 5))).await;
    apply(&store, product_write(&unnamed_sku, 0, unnamed(1))).await;
    // Back to a keyspace at version 1 with those products: 0002 not applied, no index.
    let session = cassandra::session().await;
    for cql in [
        "TRUNCATE \"{ks}\".catalog",
        "DELETE FROM \"{ks}\".schema_migrations WHERE version = 2",
    ] {
        session
            .query_unpaged(cql.replace("{ks}", &keyspace), ())
            .await
            .expect(cql);
    }
    assert!(catalog_entries(&keyspace).await.is_empty());
    let hosts = cassandra::hosts();
    let options = cassandra::options();
    let report = kassa::store::scylla::migrate(ScyllaTarget {
        hosts: &hosts,
        keyspace: &keyspace,
        options: &options,
    })
    .await
    .expect("migrate");
    assert_eq!(report.applied, vec!["0002_shopper".to_string()]);
    assert_eq!(
        catalog_entries(&keyspace).await,
        vec!["old-named".to_string()]
    );
    assert_eq!(
        store.list_products(None, 10).await.expect("list"),
        vec![named]
    );
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

/// A session's row lives as long as the session, by the caller's clock, plus an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_session_row_expires_an_hour_after_the_session() {
    let keyspace = cassandra::fresh_keyspace("sessions");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let created_at = time::OffsetDateTime::now_utc();
    let session = CheckoutSession {
        id: format!("cs_{}", uuid::Uuid::new_v4().simple()),
        cart_id: CartId::new(),
        user: UserId("alice".into()),
        email: None,
        review_cart_url: None,
        cancel_url: None,
        created_at,
        expires_at: created_at + time::Duration::minutes(30),
    };
    store.put_session(&session).await.expect("put");
    let (ttl,): (Option<i32>,) = cassandra::session()
        .await
        .query_unpaged(
            format!("SELECT TTL(body) FROM \"{keyspace}\".checkout_sessions WHERE id = ?"),
            (&session.id,),
        )
        .await
        .expect("read ttl")
        .into_rows_result()
        .expect("rows")
        .single_row()
        .expect("one row");
    let ttl = ttl.expect("the row has a TTL");
    assert!((5300..=5400).contains(&ttl), "TTL {ttl}");
    assert_eq!(
        store.load_session(&session.id).await.expect("load"),
        Some(session)
    );
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

/// A named product's later writes (reservations, sales) on the replica that wrote its
/// entry do not write the one-partition catalog again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_products_stock_writes_leave_the_catalog_alone() {
    let keyspace = cassandra::fresh_keyspace("hot");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let sku = Sku::parse("hot-tee").expect("sku");
    apply(&store, product_write(&sku, 0, product_row(1, 5))).await;
    // Emptied behind the store's back (TRUNCATE leaves no tombstone): only a new insert
    // could bring the entry back.
    cassandra::session()
        .await
        .query_unpaged(format!("TRUNCATE \"{keyspace}\".catalog"), ())
        .await
        .expect("truncate");
    for version in 2..=4 {
        apply(
            &store,
            product_write(&sku, version - 1, product_row(version, 5)),
        )
        .await;
    }
    assert!(catalog_entries(&keyspace).await.is_empty());
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

/// An order id made at `minutes_ago` minutes before now (a UUIDv7 of that time).
fn order_id_minutes_ago(minutes_ago: u64) -> OrderId {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    let at = now.as_secs() - minutes_ago * 60;
    OrderId(uuid::Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at,
        0,
    )))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_notes_are_filed_by_minute_and_recovery_reads_the_last_half_hour() {
    use kassa_actors::store::InFlightCheckout;
    let keyspace = cassandra::fresh_keyspace("notes");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let me = store.replica().expect("named").to_string();
    let note = |order_id: OrderId| InFlightCheckout {
        order_id,
        cart_id: Some(CartId::new()),
        user: UserId("shopper".into()),
        idempotency_key: None,
        claim: None,
    };
    let (now, recent, old) = (
        note(order_id_minutes_ago(0)),
        note(order_id_minutes_ago(29)),
        note(order_id_minutes_ago(45)),
    );
    for n in [&now, &recent, &old] {
        store.begin_checkout(n).await.expect("note");
    }

    let found = store.checkouts_of(&me, 100).await.expect("list");
    assert!(found.contains(&now) && found.contains(&recent), "{found:?}");
    assert!(
        !found.contains(&old),
        "a note older than half an hour is not read: {found:?}"
    );

    // Each minute is a partition of its own: ended notes (tombstones) of other minutes are
    // never read with it.
    let session = cassandra::session().await;
    let minute = |id: OrderId| {
        i64::try_from(id.0.get_timestamp().expect("v7").to_unix().0).expect("fits") / 60
    };
    let rows = session
        .query_unpaged(
            format!(
                "SELECT order_id FROM \"{keyspace}\".checkouts_by_minute \
                 WHERE replica = ? AND minute = ?"
            ),
            (&me, minute(recent.order_id)),
        )
        .await
        .expect("select")
        .into_rows_result()
        .expect("rows")
        .rows::<(uuid::Uuid,)>()
        .expect("typed")
        .map(|r| r.expect("row").0)
        .collect::<Vec<_>>();
    assert_eq!(rows, [recent.order_id.0]);

    store.end_checkout(&me, now.order_id).await.expect("end");
    store.end_checkout(&me, recent.order_id).await.expect("end");
    let found = store.checkouts_of(&me, 100).await.expect("list");
    assert!(found.is_empty(), "{found:?}");
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}

/// A mailer that took an email over after its claim lapsed may record a failed attempt after
/// the first mailer recorded it sent (`outbox_sent`). The outbox row then says unsent again,
/// but the email stays sent: it is never due, and its index entry goes at the next scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_recorded_after_the_send_does_not_make_the_email_due_again() {
    use kassa_actors::order::OrderStatus;
    use kassa_actors::store::{EmailKind, OutboxEmail};
    let keyspace = cassandra::fresh_keyspace("sent");
    cassandra::migrate(&keyspace).await;
    let store = cassandra::open(&keyspace).await;
    let now = time::OffsetDateTime::now_utc();
    let order = kassa_actors::conformance::order(
        OrderId::new(),
        &UserId("alice".into()),
        OrderStatus::Processing,
        2,
    );
    let queued = OutboxEmail::new(&order, EmailKind::Confirmation, now);
    let depth = store.outbox_depth().await.expect("depth");
    store.enqueue_email(&queued).await.expect("enqueue");
    assert_eq!(store.outbox_depth().await.expect("depth"), depth + 1);
    let sent = OutboxEmail {
        attempts: 1,
        sent_at: Some(now),
        ..queued.clone()
    };
    store.update_email(&sent).await.expect("record sent");
    let failed = OutboxEmail {
        attempts: 1,
        last_error: Some("connection refused".into()),
        ..queued.clone()
    };
    store.update_email(&failed).await.expect("record failure");
    assert_eq!(
        store.outbox_depth().await.expect("depth"),
        depth + 1,
        "the failure put its index entry back"
    );

    let later = now + time::Duration::days(1);
    let due = store.due_emails(later, 1000).await.expect("due");
    assert!(
        due.iter().all(|e| e.order_id != queued.order_id),
        "a sent email is never due again: {due:?}"
    );
    assert_eq!(
        store.outbox_depth().await.expect("depth"),
        depth,
        "the scan dropped the entry of an email sent"
    );
    drop(store);
    cassandra::drop_keyspace(&keyspace).await;
}
