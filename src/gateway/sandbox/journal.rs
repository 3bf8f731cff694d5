//! The sandbox's payments on disk, so that a restarted Kassa still knows them: its payment
//! pages still open, its status answers still reconcile, and a decision whose webhook was
//! not yet delivered is delivered after the restart.
//!
//! One JSON line per change, the payment as it then stands, appended by one thread. Without
//! fsync: a process that crashes loses nothing the kernel already has (a machine that
//! crashes may lose the last lines, which a sandbox can afford). At start the journal is
//! read, a torn last line skipped, and rewritten with one line per payment it still keeps.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Appends lines to the journal from its own thread.
pub(super) struct Journal {
    lines: mpsc::Sender<Vec<u8>>,
    path: PathBuf,
}

impl Journal {
    /// Reads what `path` holds (the last line of each key wins), drops the entries `keep`
    /// refuses, rewrites it compacted and starts appending to it. Answers the journal and
    /// the entries, oldest first.
    pub(super) fn open<E>(
        path: &Path,
        key: impl Fn(&E) -> String,
        keep: impl Fn(&E) -> bool,
    ) -> std::io::Result<(Self, Vec<E>)>
    where
        E: serde::Serialize + serde::de::DeserializeOwned,
    {
        let mut entries = read(path, key)?;
        entries.retain(|e| keep(e));
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("jsonl.tmp");
        {
            let mut out = std::io::BufWriter::new(File::create(&tmp)?);
            for entry in &entries {
                serde_json::to_writer(&mut out, entry)?;
                out.write_all(b"\n")?;
            }
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let (lines, queue) = mpsc::channel::<Vec<u8>>();
        let shown = path.display().to_string();
        std::thread::Builder::new()
            .name("kassa-sandbox-log".into())
            .spawn(move || append(file, &queue, &shown))?;
        Ok((
            Self {
                lines,
                path: path.to_path_buf(),
            },
            entries,
        ))
    }

    /// Queues `entry` as the journal's next line.
    pub(super) fn record(&self, entry: &impl serde::Serialize) {
        match serde_json::to_vec(entry) {
            Ok(mut line) => {
                line.push(b'\n');
                // Only fails once the thread is gone (it never stops while we hold `lines`).
                let _ = self.lines.send(line);
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot encode a sandbox journal entry");
            }
        }
    }
}

/// The entries of `path`, one per key (its last line), in the order their keys first appeared.
fn read<E>(path: &Path, key: impl Fn(&E) -> String) -> std::io::Result<Vec<E>>
where
    E: serde::de::DeserializeOwned,
{
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries: Vec<E> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let entry: E = match serde_json::from_slice(&line) {
            Ok(entry) => entry,
            Err(e) => {
                // A torn line from a crash mid-write (only ever the last one).
                tracing::warn!(path = %path.display(), line = number + 1, error = %e, "skipping an unreadable sandbox journal line");
                continue;
            }
        };
        match index.get(&key(&entry)) {
            Some(&at) => entries[at] = entry,
            None => {
                index.insert(key(&entry), entries.len());
                entries.push(entry);
            }
        }
    }
    Ok(entries)
}

/// The journal thread: writes whatever is queued in one `write`, until every sender is gone.
fn append(mut file: File, queue: &mpsc::Receiver<Vec<u8>>, shown: &str) {
    while let Ok(first) = queue.recv() {
        let mut batch = first;
        while let Ok(more) = queue.try_recv() {
            batch.extend_from_slice(&more);
        }
        if let Err(e) = file.write_all(&batch) {
            tracing::error!(path = shown, error = %e, "cannot append to the sandbox journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Entry {
        id: String,
        state: u32,
    }

    fn entry(id: &str, state: u32) -> Entry {
        Entry {
            id: id.into(),
            state,
        }
    }

    #[test]
    fn the_last_line_of_each_key_wins_a_torn_line_is_skipped_and_what_is_kept_is_compacted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.jsonl");
        {
            let (journal, entries) =
                Journal::open(&path, |e: &Entry| e.id.clone(), |_| true).expect("open");
            assert!(entries.is_empty());
            journal.record(&entry("a", 1));
            journal.record(&entry("b", 1));
            journal.record(&entry("a", 2));
        }
        // The thread writes what was queued before it ends; wait for the three lines.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count()
            < 3
        {
            assert!(std::time::Instant::now() < deadline, "lines never written");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut file = OpenOptions::new().append(true).open(&path).expect("file");
        file.write_all(br#"{"id":"b","sta"#).expect("torn line");
        drop(file);

        let (journal, entries) =
            Journal::open(&path, |e: &Entry| e.id.clone(), |_| true).expect("reopen");
        assert_eq!(entries, vec![entry("a", 2), entry("b", 1)]);
        let compacted = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            compacted,
            "{\"id\":\"a\",\"state\":2}\n{\"id\":\"b\",\"state\":1}\n"
        );
        drop(journal);

        // What `keep` refuses is gone from the answer and from the file.
        let (_journal, entries) =
            Journal::open(&path, |e: &Entry| e.id.clone(), |e| e.state > 1).expect("reopen");
        assert_eq!(entries, vec![entry("a", 2)]);
        let compacted = std::fs::read_to_string(&path).expect("read");
        assert_eq!(compacted, "{\"id\":\"a\",\"state\":2}\n");
    }
}
