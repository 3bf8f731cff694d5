//! The catalog index (`cql/0002`'s `catalog`): the SKUs that have a name, in sku order, kept
//! beside `stock` by product writes and read by `list_products`. Owns when an entry is
//! written, with the product's version as its timestamp; never decides what is in the
//! catalog (the stock row's name does) and never lists an SKU without loading its row.

use super::{LOAD_CONCURRENCY, ScyllaStore, to_i64};
use dashmap::DashMap;
use futures_util::{StreamExt, TryStreamExt, stream};
use kassa_actors::domain::Sku;
use kassa_actors::store::{ProductWrite, StoreError, StoreResult};

/// The catalog's one partition (see `cql/0002_shopper.cql` for why one is enough).
pub(super) const CATALOG_BUCKET: i32 = 0;
/// Entries read per round of a listing (each is then checked against its product).
const CATALOG_PAGE: usize = 256;
/// SKUs whose entry this process remembers writing; beyond this the memory is dropped
/// whole, which costs one redundant index write per SKU and nothing else.
const KNOWN_ENTRIES_CAP: usize = 100_000;

/// Which index entries this process wrote and still match the stored row: sku -> (version,
/// listed). `listed` means the entry was inserted during an unbroken run of named versions
/// ending at `version`; not listed, that its delete was issued at `version`. Only applied
/// writes of this process are remembered, so a write expecting exactly that version may
/// skip an index write that would change nothing: a hot SKU's reservations, all named,
/// cost the one-partition catalog a single write, not one per batch.
#[derive(Default)]
pub(super) struct KnownEntries(DashMap<String, (u64, bool)>);

impl KnownEntries {
    fn at(&self, sku: &str, version: u64) -> Option<bool> {
        self.0
            .get(sku)
            .and_then(|known| (known.0 == version).then_some(known.1))
    }

    fn remember(&self, sku: &str, version: u64, listed: bool) {
        if self.0.len() >= KNOWN_ENTRIES_CAP && !self.0.contains_key(sku) {
            self.0.clear();
        }
        self.0.insert(sku.to_string(), (version, listed));
    }

    pub(super) fn forget(&self, sku: &str) {
        self.0.remove(sku);
    }
}

impl ScyllaStore {
    /// Before the stock LWT: a write that names the product makes sure its entry exists, at
    /// the new version, so a crash after the LWT cannot leave a named product unlisted.
    /// Answers what the entry was known to be at the expected version.
    pub(super) async fn index_before_write(&self, write: &ProductWrite) -> StoreResult<KnownAt> {
        let sku = write.sku.as_str();
        let known = match write.expected_version {
            0 => Some(false),
            v => self.known.at(sku, v),
        };
        if write.row.info.is_some() && known != Some(true) {
            let timestamp = to_i64(write.row.version, "version")?;
            self.run(
                "catalog",
                &self.st.insert_catalog,
                (CATALOG_BUCKET, sku, timestamp),
            )
            .await?;
        }
        Ok(KnownAt(known))
    }

    /// After the stock LWT: a write that applied and took the name away retires the entry
    /// (a crash before this leaves an entry the listing skips and deletes).
    pub(super) async fn index_after_write(
        &self,
        write: &ProductWrite,
        before: KnownAt,
        applied: bool,
    ) -> StoreResult<()> {
        let sku = write.sku.as_str();
        if !applied {
            self.known.forget(sku);
            return Ok(());
        }
        let listed = write.row.info.is_some();
        if !listed && before.0 != Some(false) {
            let timestamp = to_i64(write.row.version, "version")?;
            let deleted = self
                .run(
                    "catalog",
                    &self.st.delete_catalog,
                    (timestamp, CATALOG_BUCKET, sku),
                )
                .await;
            if let Err(e) = deleted {
                self.known.forget(sku);
                return Err(e);
            }
        }
        self.known.remember(sku, write.row.version, listed);
        Ok(())
    }

    /// Named SKUs in sku order, strictly after `after`, at most `limit`: pages of entries,
    /// each checked against its product row.
    pub(super) async fn list_catalog(
        &self,
        after: Option<&Sku>,
        limit: usize,
    ) -> StoreResult<Vec<Sku>> {
        let mut listed = Vec::new();
        let mut cursor = after.map(|s| s.as_str().to_string());
        while listed.len() < limit {
            let want = (limit - listed.len()).min(CATALOG_PAGE);
            let page_size = i32::try_from(want).unwrap_or(i32::MAX);
            let entries: Vec<(String,)> = match &cursor {
                None => {
                    self.rows(
                        "catalog",
                        &self.st.list_catalog,
                        (CATALOG_BUCKET, page_size),
                    )
                    .await?
                }
                Some(after) => {
                    self.rows(
                        "catalog",
                        &self.st.list_catalog_after,
                        (CATALOG_BUCKET, after, page_size),
                    )
                    .await?
                }
            };
            let Some((last,)) = entries.last() else { break };
            cursor = Some(last.clone());
            let exhausted = entries.len() < want;
            let named: Vec<Option<Sku>> = stream::iter(entries)
                .map(|(sku,)| self.named(sku))
                .buffered(LOAD_CONCURRENCY)
                .try_collect()
                .await?;
            listed.extend(named.into_iter().flatten());
            if exhausted {
                break;
            }
        }
        listed.truncate(limit);
        Ok(listed)
    }

    /// The entry's SKU if its product has a name. An entry whose product left the catalog
    /// (its delete lost in a crash) is deleted at that product version, which a later
    /// naming write (a higher version) always wins over. An entry without a product row (a
    /// creation that never applied) is skipped and left: deleting it could race with that
    /// creation's retry, which writes its entry at the same version.
    async fn named(&self, sku: String) -> StoreResult<Option<Sku>> {
        let row: Option<(Option<i64>, Option<String>)> = self
            .row("stock", &self.st.select_listing, (sku.as_str(),))
            .await?;
        match row {
            Some((_, Some(_name))) => Sku::parse(&sku)
                .map(Some)
                .map_err(|e| StoreError::Corrupt(format!("catalog entry {sku}: {e}"))),
            Some((Some(version), None)) => {
                self.run(
                    "catalog",
                    &self.st.delete_catalog,
                    (version, CATALOG_BUCKET, sku.as_str()),
                )
                .await?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// What the index entry of a product was known to be at the write's expected version:
/// `Some(true)` present, `Some(false)` absent (or its delete issued), `None` unknown.
pub(super) struct KnownAt(Option<bool>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_known_only_at_the_version_remembered() {
        let known = KnownEntries::default();
        assert_eq!(known.at("tee", 3), None);
        known.remember("tee", 3, true);
        assert_eq!(known.at("tee", 3), Some(true));
        assert_eq!(known.at("tee", 2), None, "another writer's version");
        assert_eq!(known.at("tee", 4), None);
        known.remember("tee", 4, false);
        assert_eq!(known.at("tee", 4), Some(false));
        known.forget("tee");
        assert_eq!(known.at("tee", 4), None);
    }

    #[test]
    fn the_memory_of_entries_stays_bounded() {
        let known = KnownEntries::default();
        for i in 0..KNOWN_ENTRIES_CAP + 10 {
            known.remember(&format!("sku-{i}"), 1, true);
        }
        assert!(known.0.len() <= KNOWN_ENTRIES_CAP);
        assert_eq!(
            known.at(&format!("sku-{}", KNOWN_ENTRIES_CAP + 9), 1),
            Some(true)
        );
    }
}
