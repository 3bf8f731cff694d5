//! The sandbox's payments on disk, so that a restarted Kassa still knows them: its payment
//! pages still open, its status answers still reconcile, and a decision whose webhook was
//! not yet delivered is delivered after the restart.
//!
//! One JSON line per change, the payment as it then stands, appended by one thread so that
//! opening a payment (every checkout) costs a channel send, not a write under the sandbox's
//! lock. A decision waits until its line is written (and with it every line before it), so
//! a process that crashes loses at most payments opened in the last moment, never a
//! decision; shutdown writes everything queued. Without fsync: a machine that crashes may
//! lose the last lines, which a sandbox can afford. At start the journal is read, a torn
//! last line skipped, and rewritten with one line per payment it still keeps.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use std::thread::JoinHandle;

/// A line for the journal thread, and who to tell once it is written.
type Line = (Vec<u8>, Option<tokio::sync::oneshot::Sender<()>>);

/// Appends lines to the journal file from its own thread.
pub(super) struct Journal {
    /// `None` once closed.
    lines: Mutex<Option<mpsc::Sender<Line>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
}

impl Journal {
    /// Reads what `path` holds (the last line of each key wins), drops the entries `keep`
    /// refuses, rewrites it compacted and opens it for appending. Answers the journal and
    /// the entries, oldest first. A line that cannot be read anywhere but at the end (where
    /// a crash may have torn it) stops the start: rewriting would lose it.
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
        let (lines, queue) = mpsc::channel::<Line>();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("kassa-sandbox-log".into())
            .spawn(move || append(file, &queue, &shown))?;
        Ok((
            Self {
                lines: Mutex::new(Some(lines)),
                thread: Mutex::new(Some(thread)),
                path: path.to_path_buf(),
            },
            entries,
        ))
    }

    /// Queues `entry` as the next line.
    pub(super) fn record(&self, entry: &impl serde::Serialize) {
        self.send(entry, None);
    }

    /// Queues `entry`; the receipt tells when it (and every line before it) is written.
    pub(super) fn record_with_receipt(&self, entry: &impl serde::Serialize) -> Receipt {
        let (done, written) = tokio::sync::oneshot::channel();
        Receipt(self.send(entry, Some(done)).then_some(written))
    }

    fn send(
        &self,
        entry: &impl serde::Serialize,
        done: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> bool {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot encode a sandbox journal entry");
                return false;
            }
        };
        line.push(b'\n');
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        match lines.as_ref().map(|l| l.send((line, done))) {
            Some(Ok(())) => true,
            _ => {
                tracing::error!(path = %self.path.display(), "the sandbox journal is closed; a change is not recorded");
                false
            }
        }
    }

    /// Writes what is queued and stops the thread; later changes are not recorded.
    pub(super) fn close(&self) {
        drop(self.lines.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// Tells when a queued line is written.
#[must_use = "wait() for the line to be written"]
pub(super) struct Receipt(Option<tokio::sync::oneshot::Receiver<()>>);

impl Receipt {
    /// A receipt for nothing (no journal).
    pub(super) fn none() -> Self {
        Self(None)
    }

    /// Resolves once the line is written (at once if it could not be queued).
    pub(super) async fn wait(self) {
        if let Some(written) = self.0 {
            // Fails only if the thread ended without writing it, which it reports itself.
            let _ = written.await;
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The journal thread: writes whatever is queued in one `write`, then tells who waits;
/// returns once every sender is gone and the queue is empty.
fn append(mut file: File, queue: &mpsc::Receiver<Line>, shown: &str) {
    while let Ok(first) = queue.recv() {
        let (mut batch, first_done) = first;
        let mut waiting: Vec<tokio::sync::oneshot::Sender<()>> = first_done.into_iter().collect();
        while let Ok((more, done)) = queue.try_recv() {
            batch.extend_from_slice(&more);
            waiting.extend(done);
        }
        if let Err(e) = file.write_all(&batch) {
            metrics::counter!("kassa_sandbox_journal_failures_total").increment(1);
            tracing::error!(path = shown, error = %e, "cannot append to the sandbox's payment journal");
        }
        for done in waiting {
            let _ = done.send(());
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
    let mut unreadable: Option<(usize, serde_json::Error)> = None;
    for (number, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        if let Some((at, e)) = unreadable.take() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("line {at} cannot be read ({e}); fix or remove it and start again"),
            ));
        }
        let entry: E = match serde_json::from_slice(&line) {
            Ok(entry) => entry,
            Err(e) => {
                unreadable = Some((number + 1, e));
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
    if let Some((at, e)) = unreadable {
        // The last line, torn by a crash in the middle of its write.
        tracing::warn!(path = %path.display(), line = at, error = %e, "skipping the torn last line of the sandbox's payment journal");
    }
    Ok(entries)
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

    fn open(path: &Path, keep: impl Fn(&Entry) -> bool) -> std::io::Result<Vec<Entry>> {
        Journal::open(path, |e: &Entry| e.id.clone(), keep).map(|(_, entries)| entries)
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
        let mut file = OpenOptions::new().append(true).open(&path).expect("file");
        file.write_all(br#"{"id":"b","sta"#).expect("torn line");
        drop(file);

        let entries = open(&path, |_| true).expect("reopen");
        assert_eq!(entries, vec![entry("a", 2), entry("b", 1)]);
        let compacted = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            compacted,
            "{\"id\":\"a\",\"state\":2}\n{\"id\":\"b\",\"state\":1}\n"
        );

        // What `keep` refuses is gone from the answer and from the file.
        let entries = open(&path, |e| e.state > 1).expect("reopen");
        assert_eq!(entries, vec![entry("a", 2)]);
        let compacted = std::fs::read_to_string(&path).expect("read");
        assert_eq!(compacted, "{\"id\":\"a\",\"state\":2}\n");
    }

    #[test]
    fn an_unreadable_line_before_the_last_stops_the_start_and_the_file_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.jsonl");
        let text = "{\"id\":\"a\",\"state\":1}\nnot json\n{\"id\":\"b\",\"state\":1}\n";
        std::fs::write(&path, text).expect("write");
        let err = open(&path, |_| true).expect_err("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("line 2"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), text);
    }
}
