//! The shipper's overflow: lines that do not fit in memory, kept in order on disk.
//!
//! The spool is a queue of chunks, each a json-lines file of [`Line`]s (or, when the disk
//! refuses a write, an in-memory list, so a full disk still loses nothing). Pushers append
//! to the newest file; the sender takes the oldest chunk once everything older is delivered.
//! While any chunk exists, or is being read back, new lines must go to the spool too:
//! otherwise a line could overtake the spooled ones.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Level;

/// One console line as the shipper keeps it until it is sealed into an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Line {
    #[serde(rename = "l")]
    pub level: Level,
    /// When the line was captured (ms since the epoch).
    #[serde(rename = "t")]
    pub ms: i64,
    #[serde(rename = "m")]
    pub text: String,
    /// Whether the line ends here (a `\n` follows it in the event text).
    #[serde(rename = "e")]
    pub eol: bool,
}

impl Line {
    /// Bytes this line adds to an event's text; the unit of the memory limit.
    pub fn cost(&self) -> usize {
        self.text.len() + usize::from(self.eol)
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum SpoolError {
    #[error("cannot create the spool folder {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot write the spool file {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("cannot read the spool file {0}: {1}")]
    Read(PathBuf, std::io::Error),
}

pub(crate) enum Chunk {
    File { path: PathBuf, lines: usize },
    Memory(Vec<Line>),
}

struct Writer {
    file: File,
    path: PathBuf,
    len: u64,
    lines: usize,
}

pub(crate) struct Spool {
    dir: PathBuf,
    /// Unique per shipper, so shippers can share a folder.
    prefix: String,
    next_seq: u64,
    segment_bytes: u64,
    chunks: VecDeque<Chunk>,
    writer: Option<Writer>,
    /// Chunks the sender has taken but not yet queued as events.
    loading: usize,
    /// The disk failed once already (warn only once per shipper).
    warned: bool,
}

impl Spool {
    pub fn new(dir: PathBuf, prefix: String, segment_bytes: u64) -> Spool {
        Spool {
            dir,
            prefix,
            next_seq: 0,
            segment_bytes,
            chunks: VecDeque::new(),
            writer: None,
            loading: 0,
            warned: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// True while new lines must be appended here rather than kept in memory.
    pub fn active(&self) -> bool {
        self.writer.is_some() || !self.chunks.is_empty() || self.loading > 0
    }

    /// Appends lines at the end of the spool. Never loses them: if the disk fails they are
    /// kept in memory, still behind everything spooled before.
    pub fn append(&mut self, lines: Vec<Line>) {
        if lines.is_empty() {
            return;
        }
        let mut buf = Vec::new();
        for line in &lines {
            // Serialising plain strings and numbers into a Vec cannot fail.
            if serde_json::to_writer(&mut buf, line).is_ok() {
                buf.push(b'\n');
            }
        }
        match self.write(&buf) {
            Ok(()) => {
                if let Some(w) = self.writer.as_mut() {
                    w.lines += lines.len();
                    if w.len >= self.segment_bytes {
                        self.close_writer();
                    }
                }
            }
            Err(e) => {
                if !self.warned {
                    tracing::warn!("{e}; keeping console lines in memory instead");
                    self.warned = true;
                }
                self.close_writer();
                match self.chunks.back_mut() {
                    Some(Chunk::Memory(held)) => held.extend(lines),
                    _ => self.chunks.push_back(Chunk::Memory(lines)),
                }
            }
        }
    }

    fn write(&mut self, buf: &[u8]) -> Result<(), SpoolError> {
        if self.writer.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|e| SpoolError::Dir(self.dir.clone(), e))?;
            let path = self
                .dir
                .join(format!("{}-{:06}.jsonl", self.prefix, self.next_seq));
            self.next_seq += 1;
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .map_err(|e| SpoolError::Write(path.clone(), e))?;
            self.writer = Some(Writer {
                file,
                path,
                len: 0,
                lines: 0,
            });
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        if let Err(e) = w.file.write_all(buf) {
            // Cut off a partly written record so the file stays readable.
            let _ = w.file.set_len(w.len);
            return Err(SpoolError::Write(w.path.clone(), e));
        }
        w.len += buf.len() as u64;
        Ok(())
    }

    fn close_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            if w.lines == 0 {
                let _ = std::fs::remove_file(&w.path);
            } else {
                self.chunks.push_back(Chunk::File {
                    path: w.path,
                    lines: w.lines,
                });
            }
        }
    }

    /// The oldest chunk, for the sender; the spool stays active until [`Spool::loaded`].
    pub fn take(&mut self) -> Option<Chunk> {
        if self.chunks.is_empty() {
            self.close_writer();
        }
        let chunk = self.chunks.pop_front()?;
        self.loading += 1;
        Some(chunk)
    }

    /// The sender has queued the lines of a chunk it took.
    pub fn loaded(&mut self) {
        self.loading = self.loading.saturating_sub(1);
    }

    /// Everything left, oldest first (at the end of the shipper's life).
    pub fn drain(&mut self) -> Vec<Chunk> {
        self.close_writer();
        self.chunks.drain(..).collect()
    }
}

/// The lines of a spool file. A record that cannot be parsed (a torn write) is skipped.
pub(crate) fn read_lines(path: &Path) -> Result<Vec<Line>, SpoolError> {
    let bytes = std::fs::read(path).map_err(|e| SpoolError::Read(path.to_path_buf(), e))?;
    let mut lines = Vec::new();
    for record in bytes.split(|&b| b == b'\n').filter(|r| !r.is_empty()) {
        match serde_json::from_slice::<Line>(record) {
            Ok(line) => lines.push(line),
            Err(e) => tracing::warn!("skipping a damaged record in {}: {e}", path.display()),
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(i: usize) -> Line {
        Line {
            level: Level::Debug,
            ms: i as i64,
            text: format!("line {i}"),
            eol: true,
        }
    }

    #[test]
    fn chunks_come_back_in_order_and_rotate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spool = Spool::new(dir.path().join("s"), "p".into(), 100);
        assert!(!spool.active());
        for i in 0..20 {
            spool.append(vec![line(i)]);
        }
        assert!(spool.active());
        let mut seen = Vec::new();
        while let Some(chunk) = spool.take() {
            match chunk {
                Chunk::File { path, lines } => {
                    let read = read_lines(&path).expect("read");
                    assert_eq!(read.len(), lines);
                    seen.extend(read.into_iter().map(|l| l.ms));
                    std::fs::remove_file(path).expect("remove");
                }
                Chunk::Memory(_) => panic!("the disk works"),
            }
            spool.loaded();
        }
        assert!(!spool.active());
        assert_eq!(seen, (0..20).collect::<Vec<i64>>());
    }

    #[test]
    fn a_failing_disk_keeps_lines_in_memory_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A file where the folder should be: creating the folder fails.
        let blocked = dir.path().join("blocked");
        std::fs::write(&blocked, b"").expect("write");
        let mut spool = Spool::new(blocked, "p".into(), 100);
        spool.append(vec![line(0)]);
        spool.append(vec![line(1)]);
        let Some(Chunk::Memory(held)) = spool.take() else {
            panic!("expected the lines in memory");
        };
        assert_eq!(held.iter().map(|l| l.ms).collect::<Vec<_>>(), vec![0, 1]);
    }
}
