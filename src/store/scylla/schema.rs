//! The scylla schema: the numbered migrations of `cql/`, applied by `kassa migrate` and
//! checked by `kassa serve`. Creates the keyspace (replication from config; on ScyllaDB
//! without tablets, which LWT needs) and records every applied file with its checksum.
//! Never drops or rewrites anything, and refuses to run when an applied file has changed.

use super::catalog::CATALOG_BUCKET;
use crate::config::Replication;
use anyhow::{Context as _, bail};
use futures_util::TryStreamExt as _;
use scylla::client::session::Session;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One file of `cql/`, compiled into the binary.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub cql: &'static str,
}

/// Every migration, in order. A new file in `cql/` must be listed here (a test checks).
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_initial",
        cql: include_str!("../../../cql/0001_initial.cql"),
    },
    Migration {
        version: 2,
        name: "0002_shopper",
        cql: include_str!("../../../cql/0002_shopper.cql"),
    },
    Migration {
        version: 3,
        name: "0003_replicas",
        cql: include_str!("../../../cql/0003_replicas.cql"),
    },
    Migration {
        version: 4,
        name: "0004_checkouts_by_minute",
        cql: include_str!("../../../cql/0004_checkouts_by_minute.cql"),
    },
    Migration {
        version: 5,
        name: "0005_outbox_sent",
        cql: include_str!("../../../cql/0005_outbox_sent.cql"),
    },
    Migration {
        version: 6,
        name: "0006_order_effects_done",
        cql: include_str!("../../../cql/0006_order_effects_done.cql"),
    },
];

/// The schema version this build needs.
pub fn required_version() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// Which server the cluster runs: the keyspace DDL differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Cassandra,
    Scylla,
}

/// What `migrate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    pub flavor: Flavor,
    pub keyspace_created: bool,
    /// Names of the files applied by this run (empty: the schema was already current).
    pub applied: Vec<String>,
    pub version: i32,
}

/// Created by the migrator before anything else, so it lives here rather than in `cql/`.
const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (\
    version int PRIMARY KEY, name text, checksum text, applied_at timestamp)";

/// Creates the keyspace if needed and applies every migration not yet recorded. Safe to run
/// again; run it once per deploy (two migrators at once may race on Cassandra's schema).
/// `session` must not be bound to a keyspace yet.
pub async fn migrate(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
) -> anyhow::Result<MigrationReport> {
    let flavor = detect_flavor(session).await?;
    let keyspace_created = !keyspace_exists(session, keyspace).await?;
    if keyspace_created {
        create_keyspace(session, keyspace, replication, flavor).await?;
    }
    session
        .use_keyspace(keyspace, true)
        .await
        .with_context(|| format!("cannot use keyspace {keyspace}"))?;
    session
        .query_unpaged(CREATE_SCHEMA_MIGRATIONS, ())
        .await
        .context("cannot create schema_migrations")?;
    let recorded = applied_migrations(session, keyspace).await?;
    check_checksums(&recorded)?;
    let record = session
        .prepare(format!(
            "INSERT INTO \"{keyspace}\".schema_migrations (version, name, checksum, applied_at) \
             VALUES (?, ?, ?, toTimestamp(now()))"
        ))
        .await
        .context("cannot prepare the schema_migrations insert")?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        if recorded.contains_key(&migration.version) {
            continue;
        }
        for statement in statements(migration.cql) {
            session
                .query_unpaged(statement.as_str(), ())
                .await
                .with_context(|| {
                    format!(
                        "migration {} failed at statement:\n{statement}",
                        migration.name
                    )
                })?;
        }
        fill(session, migration)
            .await
            .with_context(|| format!("migration {} failed filling its tables", migration.name))?;
        session
            .execute_unpaged(
                &record,
                (migration.version, migration.name, checksum(migration.cql)),
            )
            .await
            .with_context(|| format!("cannot record migration {}", migration.name))?;
        tracing::info!(keyspace, migration = migration.name, "migration applied");
        applied.push(migration.name.to_string());
    }
    Ok(MigrationReport {
        flavor,
        keyspace_created,
        applied,
        version: required_version(),
    })
}

/// Writes the data a migration's new tables need from the old ones, which CQL cannot. Runs
/// after the file's statements and before the file is recorded, so a failure re-runs both.
async fn fill(session: &Session, migration: &Migration) -> anyhow::Result<()> {
    if migration.name == "0002_shopper" {
        let indexed = index_named_products(session).await?;
        tracing::info!(indexed, "catalog index filled from stock");
    }
    Ok(())
}

/// 0002's `catalog`: an entry for every product that has a name, at its version (the
/// timestamp every catalog write carries, so a newer write by a running replica wins).
/// Products an older build names while its replicas still run after this are indexed by
/// the next write a newer build makes to them.
async fn index_named_products(session: &Session) -> anyhow::Result<u64> {
    let insert = session
        .prepare("INSERT INTO catalog (bucket, sku) VALUES (?, ?) USING TIMESTAMP ?")
        .await
        .context("cannot prepare the catalog insert")?;
    let insert = &insert;
    session
        .query_iter("SELECT DISTINCT sku, version, name FROM stock", ())
        .await
        .context("cannot read stock")?
        .rows_stream::<(String, Option<i64>, Option<String>)>()
        .context("stock")?
        .map_err(anyhow::Error::from)
        .map_ok(|(sku, version, name)| async move {
            let (Some(version), Some(_)) = (version, name) else {
                return Ok(0);
            };
            session
                .execute_unpaged(insert, (CATALOG_BUCKET, &sku, version))
                .await
                .with_context(|| format!("cannot index {sku}"))?;
            Ok::<u64, anyhow::Error>(1)
        })
        .try_buffer_unordered(32)
        .try_fold(0, |total, one| async move { Ok(total + one) })
        .await
}

/// Fails unless `keyspace` holds every migration this build knows, unchanged. Newer
/// migrations (from a newer build) are allowed: they only ever add.
pub async fn check(session: &Session, keyspace: &str) -> anyhow::Result<()> {
    if !keyspace_exists(session, keyspace).await? {
        bail!("keyspace {keyspace} does not exist: run `kassa migrate` first");
    }
    let recorded = applied_migrations(session, keyspace)
        .await
        .with_context(|| {
            format!("cannot read the schema version of keyspace {keyspace}: run `kassa migrate`")
        })?;
    check_checksums(&recorded)?;
    let missing: Vec<&str> = MIGRATIONS
        .iter()
        .filter(|m| !recorded.contains_key(&m.version))
        .map(|m| m.name)
        .collect();
    if !missing.is_empty() {
        let current = recorded.keys().next_back().copied().unwrap_or(0);
        bail!(
            "keyspace {keyspace} is at schema version {current}, this build needs {} \
             (missing {}): run `kassa migrate`",
            required_version(),
            missing.join(", ")
        );
    }
    Ok(())
}

async fn detect_flavor(session: &Session) -> anyhow::Result<Flavor> {
    let rows = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables \
             WHERE keyspace_name = 'system' AND table_name = 'scylla_local'",
            (),
        )
        .await
        .context("cannot read system_schema.tables")?
        .into_rows_result()
        .context("system_schema.tables")?;
    Ok(if rows.rows_num() > 0 {
        Flavor::Scylla
    } else {
        Flavor::Cassandra
    })
}

async fn keyspace_exists(session: &Session, keyspace: &str) -> anyhow::Result<bool> {
    let rows = session
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .context("cannot read system_schema.keyspaces")?
        .into_rows_result()
        .context("system_schema.keyspaces")?;
    Ok(rows.rows_num() > 0)
}

async fn create_keyspace(
    session: &Session,
    keyspace: &str,
    replication: &Replication,
    flavor: Flavor,
) -> anyhow::Result<()> {
    let base = keyspace_ddl(keyspace, replication);
    if flavor == Flavor::Scylla {
        let without_tablets = format!("{base} AND tablets = {{'enabled': false}}");
        match session.query_unpaged(without_tablets.as_str(), ()).await {
            Ok(_) => return Ok(()),
            // ScyllaDB before 6.0 has no tablets and no such option: vnodes already.
            Err(e) if e.to_string().contains("tablets") => {
                tracing::info!(error = %e, "this ScyllaDB has no tablets option");
            }
            Err(e) => return Err(e).context(format!("cannot create keyspace {keyspace}")),
        }
    }
    session
        .query_unpaged(base.as_str(), ())
        .await
        .with_context(|| format!("cannot create keyspace {keyspace}"))?;
    tracing::info!(keyspace, ?flavor, "keyspace created");
    Ok(())
}

/// `CREATE KEYSPACE` for `keyspace` (validated by config: letters, digits, `_`).
fn keyspace_ddl(keyspace: &str, replication: &Replication) -> String {
    let mut map = String::from("{'class': 'NetworkTopologyStrategy'");
    match replication {
        Replication::Factor(n) => {
            let _ = write!(map, ", 'replication_factor': {n}");
        }
        Replication::PerDatacenter(dcs) => {
            for (dc, n) in dcs {
                let _ = write!(map, ", '{dc}': {n}");
            }
        }
    }
    map.push('}');
    format!(
        "CREATE KEYSPACE IF NOT EXISTS \"{keyspace}\" WITH replication = {map} \
         AND durable_writes = true"
    )
}

/// version -> (name, checksum) of every recorded migration.
async fn applied_migrations(
    session: &Session,
    keyspace: &str,
) -> anyhow::Result<BTreeMap<i32, (String, String)>> {
    let rows = session
        .query_unpaged(
            format!("SELECT version, name, checksum FROM \"{keyspace}\".schema_migrations"),
            (),
        )
        .await
        .context("cannot read schema_migrations")?
        .into_rows_result()
        .context("schema_migrations")?;
    let mut applied = BTreeMap::new();
    for row in rows
        .rows::<(i32, Option<String>, Option<String>)>()
        .context("schema_migrations")?
    {
        let (version, name, checksum) = row.context("schema_migrations row")?;
        applied.insert(
            version,
            (name.unwrap_or_default(), checksum.unwrap_or_default()),
        );
    }
    Ok(applied)
}

fn check_checksums(recorded: &BTreeMap<i32, (String, String)>) -> anyhow::Result<()> {
    for migration in MIGRATIONS {
        if let Some((name, stored)) = recorded.get(&migration.version)
            && *stored != checksum(migration.cql)
        {
            bail!(
                "migration {} was changed after it was applied (as {name}); add a new \
                 migration instead of editing an applied one",
                migration.name
            );
        }
    }
    Ok(())
}

fn checksum(cql: &str) -> String {
    Sha256::digest(cql.as_bytes())
        .iter()
        .fold(String::with_capacity(64), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        })
}

/// The statements of a migration file: whole-line `--` comments dropped, split at `;`.
fn statements(cql: &str) -> Vec<String> {
    let text: String = cql
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_cql_is_a_listed_migration_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cql");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .expect("cql/ exists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".cql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{}.cql", m.name))
            .collect();
        assert_eq!(files, listed, "cql/ and MIGRATIONS disagree");
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "versions are 1, 2, 3, ...");
            assert!(
                m.name.starts_with(&format!("{:04}_", m.version)),
                "{}",
                m.name
            );
        }
    }

    #[test]
    fn migrations_name_no_keyspace_and_are_rerunnable() {
        for m in MIGRATIONS {
            for statement in statements(m.cql) {
                let upper = statement.to_ascii_uppercase();
                assert!(
                    upper.contains("IF NOT EXISTS") || upper.contains("IF EXISTS"),
                    "{}: not re-runnable: {statement}",
                    m.name
                );
                assert!(
                    !upper.starts_with("CREATE KEYSPACE") && !upper.starts_with("USE "),
                    "{}: the migrator owns the keyspace: {statement}",
                    m.name
                );
            }
        }
    }

    #[test]
    fn statements_drop_comments_and_split_at_semicolons() {
        let cql = "-- a comment; with a semicolon\nCREATE TABLE a (x int PRIMARY KEY);\n\n  -- another\nCREATE TABLE b (y int PRIMARY KEY)\n  WITH gc_grace_seconds = 1;\n";
        assert_eq!(
            statements(cql),
            vec![
                "CREATE TABLE a (x int PRIMARY KEY)".to_string(),
                "CREATE TABLE b (y int PRIMARY KEY)\n  WITH gc_grace_seconds = 1".to_string(),
            ]
        );
    }

    #[test]
    fn keyspace_ddl_uses_network_topology_strategy() {
        assert_eq!(
            keyspace_ddl("kassa", &Replication::Factor(3)),
            "CREATE KEYSPACE IF NOT EXISTS \"kassa\" WITH replication = {'class': \
             'NetworkTopologyStrategy', 'replication_factor': 3} AND durable_writes = true"
        );
        let per_dc = keyspace_ddl(
            "k",
            &Replication::PerDatacenter(vec![("dc1".into(), 3), ("dc2".into(), 2)]),
        );
        assert!(per_dc.contains("{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"));
    }
}
