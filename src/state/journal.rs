//! The state file on disk: a snapshot (`state_file`, one JSON document) plus a journal beside it
//! (`state_file` + `.journal`, one JSON change per line) that each commit appends to and fsyncs.
//!
//! Appending one line costs the same at 100,000 stored jobs as at none; rewriting the whole
//! file for each registration did not (see BENCHMARKS.md). When the journal outgrows the
//! snapshot, the snapshot is rewritten (temporary file, fsync, rename, directory fsync) and the
//! journal emptied, so the cost of compaction is spread over as many commits as it rewrites.
//!
//! Every change is idempotent (put or delete of a keyed record), so a crash between the rename
//! of a new snapshot and the emptying of the journal replays changes already in the snapshot,
//! harmlessly. A last journal line without its newline was never acknowledged (its fsync had
//! not returned) and is dropped; anything unreadable before it is an error naming the line.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Cursor, CursorKey, Discovered, Error, Finished, JobRef, Op, Records, Result};

/// Journal records beyond which compaction waits for the journal to outgrow the snapshot.
const MIN_COMPACTION: usize = 10_000;

/// Bytes buffered between the snapshot's encoder and its file: a write call for every few
/// hundred records.
const WRITE_BUFFER: usize = 256 * 1024;

/// The snapshot as written since the journal came in.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotV2 {
    // Read first through `Version`; named here so that `deny_unknown_fields` takes it.
    #[allow(dead_code)]
    version: u32,
    #[serde(default)]
    registrations: Vec<JobRef>,
    #[serde(default)]
    discovered: Vec<Discovered>,
    #[serde(default)]
    cursors: Vec<CursorEntry>,
    #[serde(default)]
    finished: Vec<Finished>,
}

/// The first state file: registrations only. Read and rewritten as version 2 at the first
/// compaction.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotV1 {
    #[allow(dead_code)]
    version: u32,
    jobs: Vec<JobRef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorEntry {
    key: CursorKey,
    cursor: Cursor,
}

/// [`SnapshotV2`] as it is written from the records: each list serialized as it is walked,
/// straight into the file. Collected first and encoded into one buffer, 90,000 finished jobs
/// took a list of their records and a 27 MB text at each compaction, and RSS kept 17 MiB of it
/// (BENCHMARKS.md, run 8).
struct SnapshotOut<'a>(&'a Records);

impl Serialize for SnapshotOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let r = self.0;
        let mut out = s.serialize_struct("SnapshotV2", 5)?;
        out.serialize_field("version", &2u32)?;
        out.serialize_field("registrations", &r.registrations)?;
        out.serialize_field("discovered", &Each(|| r.discovered.values()))?;
        out.serialize_field(
            "cursors",
            &Each(|| {
                r.cursors
                    .iter()
                    .map(|(key, cursor)| CursorOut { key, cursor })
            }),
        )?;
        out.serialize_field("finished", &Each(|| r.finished.records()))?;
        out.end()
    }
}

/// A list serialized from the iterator its closure makes.
struct Each<F>(F);

impl<F, I> Serialize for Each<F>
where
    F: Fn() -> I,
    I: IntoIterator,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq((self.0)())
    }
}

/// [`CursorEntry`] as it is written.
#[derive(Serialize)]
struct CursorOut<'a> {
    key: &'a CursorKey,
    cursor: &'a Cursor,
}

#[derive(Deserialize)]
struct Version {
    version: u32,
}

/// The snapshot and journal files of one state file.
pub(super) struct Files {
    snapshot: PathBuf,
    journal: PathBuf,
    /// Opened at the first append, so a read-only directory still starts (and fails on write).
    file: Option<File>,
    /// Length of the journal up to its last complete, fsynced line.
    good_len: u64,
    journal_records: usize,
    snapshot_records: usize,
}

fn corrupt(file: &Path, problem: String) -> Error {
    Error::Corrupt {
        file: file.display().to_string(),
        problem,
    }
}

fn write_err(file: &Path, source: std::io::Error) -> Error {
    Error::Write {
        file: file.display().to_string(),
        source,
    }
}

impl Files {
    /// Reads the snapshot and replays the journal; missing files are empty, anything unreadable
    /// is an error naming the file.
    pub(super) fn open(path: &Path) -> Result<(Self, Records)> {
        let mut records = Records::default();
        let mut snapshot_records = 0;
        match std::fs::read(path) {
            Ok(bytes) => {
                let v: Version = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(path, format!("not a valid state file: {e}")))?;
                match v.version {
                    1 => {
                        let s: SnapshotV1 = serde_json::from_slice(&bytes)
                            .map_err(|e| corrupt(path, format!("not a valid state file: {e}")))?;
                        for j in s.jobs {
                            records
                                .apply(Op::Register(j))
                                .map_err(|e| corrupt(path, e.to_string()))?;
                            snapshot_records += 1;
                        }
                    }
                    2 => {
                        let s: SnapshotV2 = serde_json::from_slice(&bytes)
                            .map_err(|e| corrupt(path, format!("not a valid state file: {e}")))?;
                        let ops = s
                            .registrations
                            .into_iter()
                            .map(Op::Register)
                            .chain(s.discovered.into_iter().map(Op::Discovered))
                            .chain(s.cursors.into_iter().map(|c| Op::Cursor {
                                key: c.key,
                                cursor: c.cursor,
                            }))
                            .chain(s.finished.into_iter().map(Op::Finished));
                        for op in ops {
                            records
                                .apply(op)
                                .map_err(|e| corrupt(path, e.to_string()))?;
                            snapshot_records += 1;
                        }
                    }
                    other => {
                        return Err(corrupt(
                            path,
                            format!("version {other} is not a supported one (1 or 2)"),
                        ));
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(corrupt(path, format!("cannot read: {e}"))),
        }
        let journal = journal_path(path);
        let (good_len, journal_records) = match std::fs::read(&journal) {
            Ok(bytes) => replay(&journal, &bytes, &mut records)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(corrupt(&journal, format!("cannot read: {e}"))),
        };
        Ok((
            Self {
                snapshot: path.to_path_buf(),
                journal,
                file: None,
                good_len,
                journal_records,
                snapshot_records,
            },
            records,
        ))
    }

    /// The journal file.
    pub(super) fn journal(&self) -> &Path {
        &self.journal
    }

    /// Appends `lines` (each ending in a newline) and fsyncs. On failure the journal is cut
    /// back to its last good line, so a half-written change never sits before later ones.
    pub(super) fn append(&mut self, lines: &[u8], count: usize) -> Result<()> {
        let result = self.try_append(lines);
        match result {
            Ok(()) => {
                self.good_len += lines.len() as u64;
                self.journal_records += count;
                Ok(())
            }
            Err(e) => {
                if let Some(f) = &self.file
                    && f.set_len(self.good_len)
                        .and_then(|()| f.sync_data())
                        .is_err()
                {
                    // Opened again (and cut) before the next append.
                    self.file = None;
                }
                Err(write_err(&self.journal, e))
            }
        }
    }

    fn try_append(&mut self, lines: &[u8]) -> std::io::Result<()> {
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.journal)?;
                // A torn line left by a crash, or by a failed append we could not cut back.
                f.set_len(self.good_len)?;
                self.file.insert(f)
            }
        };
        file.write_all(lines)?;
        file.sync_data()
    }

    /// True when the journal has outgrown the snapshot enough to rewrite it.
    pub(super) fn wants_compaction(&self) -> bool {
        self.journal_records > MIN_COMPACTION.max(2 * self.snapshot_records)
    }

    /// Rewrites the snapshot from `records` and empties the journal. A temporary file left by
    /// a failure is removed; the journal is kept until the new snapshot is durable.
    pub(super) fn compact(&mut self, records: &Records) -> Result<()> {
        let count = records.registrations.len()
            + records.discovered.len()
            + records.cursors.len()
            + records.finished.len();
        write_atomically(&self.snapshot, |w| {
            serde_json::to_writer(w, &SnapshotOut(records)).map_err(std::io::Error::from)
        })?;
        self.snapshot_records = count;
        // The snapshot holds everything now; an emptying that fails only leaves changes that
        // replay to the same records.
        let f = match self.file.take() {
            Some(f) => f,
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.journal)
                .map_err(|e| write_err(&self.journal, e))?,
        };
        f.set_len(0)
            .and_then(|()| f.sync_data())
            .map_err(|e| write_err(&self.journal, e))?;
        self.file = Some(f);
        self.good_len = 0;
        self.journal_records = 0;
        Ok(())
    }
}

/// `state.json` → `state.json.journal`.
fn journal_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".journal");
    path.with_file_name(name)
}

/// The temporary file a snapshot is written to before it is renamed over `path`.
pub(super) fn temporary_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or("state".into(), |n| n.to_string_lossy());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes a temporary file with `body` (through a buffer), fsyncs it, renames it over `path`
/// and fsyncs the directory. On failure the temporary file is removed and `path` is untouched.
fn write_atomically(
    path: &Path,
    body: impl FnOnce(&mut std::io::BufWriter<File>) -> std::io::Result<()>,
) -> Result<()> {
    let tmp = temporary_path(path);
    let write = || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::with_capacity(WRITE_BUFFER, File::create(&tmp)?);
        body(&mut w)?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(&tmp, e));
    }
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(path, e));
    }
    // The rename is durable only once the directory entry is.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_err(dir, e))
}

/// Applies every complete line of a journal; returns the length up to the last complete line
/// and the number of changes.
fn replay(file: &Path, bytes: &[u8], records: &mut Records) -> Result<(u64, usize)> {
    let mut good = 0usize;
    let mut count = 0;
    for (index, line) in bytes.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(body) = line.strip_suffix(b"\n") else {
            // The last line, torn by a crash before its fsync returned: never acknowledged.
            break;
        };
        let at = |problem: String| corrupt(file, format!("line {}: {problem}", index + 1));
        let op: Op = serde_json::from_slice(body).map_err(|e| at(e.to_string()))?;
        records.apply(op).map_err(|e| at(e.to_string()))?;
        good += line.len();
        count += 1;
    }
    Ok((good as u64, count))
}

/// One change as a journal line.
pub(super) fn encode(op: &Op, out: &mut Vec<u8>) {
    // Serializing plain structs of strings and numbers cannot fail.
    if serde_json::to_writer(&mut *out, op).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> JobRef {
        JobRef {
            cloud_service: "evs".into(),
            cloud_region: "r".into(),
            project_id: "p".into(),
            job_id: id.into(),
        }
    }

    fn line(op: &Op) -> Vec<u8> {
        let mut out = Vec::new();
        encode(op, &mut out);
        out
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_cut_before_the_next_append() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut bytes = line(&Op::Register(job("a")));
        let torn = line(&Op::Register(job("b")));
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(journal_path(&path), &bytes).expect("write");
        let (mut files, records) = Files::open(&path).expect("a torn tail is not corruption");
        assert_eq!(records.registrations.len(), 1);
        files
            .append(&line(&Op::Register(job("c"))), 1)
            .expect("append");
        let (_, records) = Files::open(&path).expect("reopen");
        let ids: Vec<&str> = records
            .registrations
            .iter()
            .map(|j| j.job_id.as_str())
            .collect();
        assert_eq!(ids, vec!["a", "c"]);
    }

    #[test]
    fn a_corrupt_line_before_the_end_names_the_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let mut bytes = line(&Op::Register(job("a")));
        bytes.extend_from_slice(b"{\"register\":\n");
        bytes.extend_from_slice(&line(&Op::Register(job("b"))));
        std::fs::write(journal_path(&path), &bytes).expect("write");
        let e = Files::open(&path).err().expect("corrupt");
        let msg = e.to_string();
        assert!(
            msg.contains("state.json.journal") && msg.contains("line 2"),
            "{msg}"
        );
    }

    #[test]
    fn compaction_rewrites_the_snapshot_and_empties_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(
            &path,
            r#"{"version":1,"jobs":[{"cloud_service":"evs","cloud_region":"r","project_id":"p","job_id":"old"}]}"#,
        )
        .expect("v1");
        let (mut files, mut records) = Files::open(&path).expect("v1 is read");
        let op = Op::Register(job("new"));
        files.append(&line(&op), 1).expect("append");
        records.apply(op).expect("apply");
        files.compact(&records).expect("compact");
        assert_eq!(
            std::fs::read(journal_path(&path)).expect("journal").len(),
            0
        );
        let text = std::fs::read_to_string(&path).expect("snapshot");
        assert!(text.starts_with("{\"version\":2"), "{text}");
        let (_, again) = Files::open(&path).expect("reopen");
        assert_eq!(again.registrations, records.registrations);
    }
}
