//! An append-only file that never loses what it accepted.
//!
//! Bytes appended are kept in memory until an `fsync` covering them has
//! succeeded. Any write or sync error (disk full, I/O error) is returned and
//! the file is cut back to its last synced length on the next attempt, then
//! the kept bytes are written again: after a failed `fsync` Linux may have
//! dropped the dirty pages, so nothing past the last good sync is trusted.
//! The file therefore always ends on a boundary the writer chose (a whole
//! JSON line, a whole pcapng block), and nothing is lost while the process
//! lives. Writes are positional (`pwrite`), so the descriptor may be closed
//! between uses (many session captures, few descriptors).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// One append-only file.
#[derive(Debug)]
pub struct DurableFile {
    path: PathBuf,
    file: Option<File>,
    /// Length known to be on stable storage.
    synced: u64,
    /// Bytes after `synced`, written or not.
    buf: Pending,
    /// How much of `buf` has been written since the last cut.
    written: usize,
    /// An error happened: cut back to `synced` before writing again.
    cut: bool,
    /// Created by us and never synced: the directory entry needs a sync too.
    fresh: bool,
    /// Bumped whenever the file may have been cut back to `synced` (a
    /// failed write or sync) or `synced` moved: a [`Mark`] taken before no
    /// longer says which bytes a sync covers.
    epoch: u64,
}

/// What a sync started on another thread covers: the first `bytes`
/// accepted after the synced length, as of `epoch` ([`DurableFile::mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    bytes: usize,
    epoch: u64,
}

impl Mark {
    /// Bytes the sync covers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// A sync of one file handed to another thread: a descriptor to
/// `fdatasync`, the directory to sync after it (a new file's entry), and
/// what it covers.
#[derive(Debug)]
pub struct Ticket {
    pub file: File,
    pub dir: Option<PathBuf>,
    pub mark: Mark,
}

impl Ticket {
    /// `fdatasync`s the file, then its directory if the file is new (the
    /// entry must survive a crash too).
    ///
    /// # Errors
    /// A sync failed: land the ticket with [`DurableFile::sync_failed`].
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        if let Some(dir) = &self.dir {
            File::open(dir).and_then(|d| d.sync_all())?;
        }
        Ok(())
    }
}

/// Chunks of the pending bytes hold up to this much, unless one append is
/// larger.
const CHUNK: usize = 256 << 10;

/// The capacity a quiet file's emptied chunk may keep.
const KEEP_IDLE: usize = 16 << 10;

/// The bytes accepted and not yet synced, in chunks: dropping the synced
/// front (after a commit that ran while more came) frees chunks instead of
/// moving everything behind it, which after a long wait for the disk was a
/// copy of megabytes on the writer's CPU. A chunk starts with an append
/// (the journal's appends are whole lines).
#[derive(Debug, Default)]
struct Pending {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of the first chunk already dropped.
    head: usize,
    len: usize,
}

impl Pending {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn extend(&mut self, bytes: &[u8]) {
        match self.chunks.back_mut() {
            Some(c) if c.len() + bytes.len() <= CHUNK || c.is_empty() => c.extend_from_slice(bytes),
            Some(_) => {
                // The file filled a chunk: it is a busy one, so the next
                // chunk gets its full size at once. Grown by doubling, each
                // byte was copied about once more on the way (3 % of the
                // writer's profile at 500k records/s). A file's first chunk
                // still grows from what it needs, and `drop_front` frees a
                // large chunk once the file is quiet again.
                let mut c = Vec::with_capacity(CHUNK.max(bytes.len()));
                c.extend_from_slice(bytes);
                self.chunks.push_back(c);
            }
            None => self.chunks.push_back(bytes.to_vec()),
        }
        self.len += bytes.len();
    }

    /// The bytes from `at` on, at most `max`, as one slice: up to the end
    /// of the chunk `at` is in.
    fn run(&self, at: usize, max: usize) -> &[u8] {
        let mut off = at + self.head;
        for c in &self.chunks {
            if off < c.len() {
                return &c[off..c.len().min(off.saturating_add(max))];
            }
            off -= c.len();
        }
        &[]
    }

    /// Drops the first `n` bytes.
    fn drop_front(&mut self, n: usize) {
        let busy = n >= CHUNK;
        let mut n = n.min(self.len);
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else { break };
            let left = front.len() - self.head;
            if left == 0 && self.chunks.len() == 1 {
                break;
            }
            if n < left {
                self.head += n;
                break;
            }
            n -= left;
            self.head = 0;
            // The last chunk is kept for the next appends (as a Vec keeps
            // its capacity); the others are freed. A large one is kept only
            // while the file is busy (a commit of a chunk or more, or one
            // that filled a quarter of it): one session's capture that once
            // filled a chunk (the disk stalled) must not hold 256 KiB for
            // the rest of its life, with thousands of sessions open; but a
            // busy session's capture, committed every 250 ms, would
            // otherwise grow its buffer again from nothing after each
            // commit (five times the writer's page faults at 20k req/s).
            if self.chunks.len() == 1 {
                let c = &self.chunks[0];
                if busy || c.capacity() <= KEEP_IDLE || c.len() * 4 >= c.capacity() {
                    self.chunks[0].clear();
                } else {
                    self.chunks[0] = Vec::new();
                }
            } else {
                self.chunks.pop_front();
            }
        }
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len);
        let mut at = 0;
        while at < self.len {
            let r = self.run(at, self.len - at);
            v.extend_from_slice(r);
            at += r.len();
        }
        v
    }
}

impl DurableFile {
    /// Opens `path` for appending at its current end (created if missing).
    ///
    /// # Errors
    /// The file cannot be opened or its length read.
    pub fn open(path: &Path) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
        let synced = file.metadata()?.len();
        Ok(Self {
            path: path.to_path_buf(),
            file: Some(file),
            synced,
            buf: Pending::default(),
            written: 0,
            cut: false,
            fresh: !existed,
            epoch: 0,
        })
    }

    /// A file that will be created at `path` on the first flush; nothing is
    /// touched now (so creating it cannot fail while the disk is full).
    pub fn lazy(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            synced: 0,
            buf: Pending::default(),
            written: 0,
            cut: false,
            fresh: true,
            epoch: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts `bytes` (in memory until synced).
    pub fn append(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
    }

    /// Bytes accepted and not yet synced.
    pub fn unsynced(&self) -> usize {
        self.buf.len()
    }

    /// Bytes accepted and not yet written.
    pub fn unwritten(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Length of the file once everything accepted is written.
    pub fn len(&self) -> u64 {
        self.synced + self.buf.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn handle(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let f = OpenOptions::new().write(true).create(true).truncate(false).open(&self.path)?;
            self.file = Some(f);
        }
        self.file.as_ref().ok_or_else(|| io::Error::other("file not open"))
    }

    /// Writes what was accepted (no sync).
    ///
    /// # Errors
    /// The write failed; the bytes stay accepted and are written again later.
    pub fn flush(&mut self) -> io::Result<()> {
        self.flush_upto(usize::MAX).map(|_| ())
    }

    /// Like [`DurableFile::flush`], but writes at most `max` bytes; whether
    /// everything accepted is now written.
    ///
    /// # Errors
    /// The write failed; the bytes stay accepted and are written again later.
    pub fn flush_upto(&mut self, max: usize) -> io::Result<bool> {
        if self.written == self.buf.len() && !self.cut {
            return Ok(true);
        }
        let r = self.flush_inner(max.max(1));
        if r.is_err() {
            self.written = 0;
            self.epoch += 1;
            // Cut a partly written record off at once (shrinking works on a
            // full disk), so the file ends on a record boundary; if even
            // that fails, the next attempt cuts first.
            let synced = self.synced;
            self.cut = self.file.as_ref().is_none_or(|f| f.set_len(synced).is_err());
        }
        r.map(|()| self.written == self.buf.len())
    }

    /// Like [`DurableFile::flush_upto`], for a file of lines: a piece that
    /// does not reach the end stops after its last `\n`, so a reader of the
    /// live file sees whole lines (a piece without one is written whole).
    ///
    /// # Errors
    /// As [`DurableFile::flush_upto`].
    pub fn flush_lines_upto(&mut self, max: usize) -> io::Result<bool> {
        let start = if self.cut { 0 } else { self.written };
        // One chunk at most: chunks start with an append (a whole line).
        let run = self.buf.run(start, max.max(1));
        let piece = if start + run.len() < self.buf.len() {
            run.iter().rposition(|&b| b == b'\n').map_or(run.len(), |i| i + 1)
        } else {
            max
        };
        self.flush_upto(piece)
    }

    fn flush_inner(&mut self, max: usize) -> io::Result<()> {
        let synced = self.synced;
        if self.cut {
            self.handle()?.set_len(synced)?;
            self.cut = false;
            self.written = 0;
        }
        let at = synced + self.written as u64;
        self.handle()?;
        let end = self.buf.len().min(self.written.saturating_add(max));
        let (mut from, mut at) = (self.written, at);
        if let Some(file) = &self.file {
            while from < end {
                let run = self.buf.run(from, end - from);
                file.write_all_at(run, at)?;
                from += run.len();
                at += run.len() as u64;
            }
        }
        self.written = end;
        Ok(())
    }

    /// Writes and syncs everything accepted, the directory entry of a new
    /// file included: a [`Ticket`] made and landed here.
    ///
    /// # Errors
    /// The write or a sync failed; the bytes stay accepted.
    pub fn sync(&mut self) -> io::Result<()> {
        let Some(t) = self.ticket()? else { return Ok(()) };
        match t.sync() {
            Ok(()) => {
                self.synced_through(t.mark);
                Ok(())
            }
            Err(e) => {
                self.sync_failed();
                Err(e)
            }
        }
    }

    /// Writes what was accepted, for a sync of the whole file system the
    /// caller makes ([`dataplane::io::syncfs`], one call for many files).
    /// Returns whether the file needs that sync (bytes written, or a new
    /// directory entry); take a [`DurableFile::mark`] now and, once that
    /// sync succeeded, call [`DurableFile::synced_through`] with it.
    ///
    /// # Errors
    /// The write failed; the bytes stay accepted.
    pub fn write_for_syncfs(&mut self) -> io::Result<bool> {
        if self.buf.is_empty() && !self.cut {
            return Ok(self.fresh && self.file.is_some());
        }
        self.flush()?;
        Ok(true)
    }

    /// The caller's file-system sync failed: nothing since the last good
    /// sync is known to be on disk, so it is all written again (from the
    /// last synced offset) before the next sync.
    pub fn sync_failed(&mut self) {
        if !self.buf.is_empty() {
            self.cut = true;
            self.written = 0;
            self.epoch += 1;
        }
    }

    /// What a sync made now would cover: everything accepted and written
    /// (call after a flush). For a sync another thread makes while this
    /// file takes more bytes; [`DurableFile::synced_through`] when it
    /// succeeded.
    pub fn mark(&self) -> Mark {
        Mark { bytes: if self.cut { 0 } else { self.written }, epoch: self.epoch }
    }

    /// Writes everything accepted and hands out a sync of it for another
    /// thread; `None` when there is nothing to sync.
    ///
    /// # Errors
    /// The write failed, or the descriptor could not be duplicated; the
    /// bytes stay accepted.
    pub fn ticket(&mut self) -> io::Result<Option<Ticket>> {
        if self.buf.is_empty() && !self.cut && !(self.fresh && self.file.is_some()) {
            return Ok(None);
        }
        self.flush()?;
        let file = self.handle()?.try_clone()?;
        let dir = if self.fresh { self.path.parent().map(Path::to_path_buf) } else { None };
        Ok(Some(Ticket { file, dir, mark: self.mark() }))
    }

    /// A sync started at `mark` succeeded (the file's data, and its
    /// directory entry: the ticket's `dir`, or a file-system sync): those
    /// bytes are durable, whatever was accepted or written since. Ignored
    /// when the file was cut since the mark: then everything unsynced is
    /// written again and synced later.
    pub fn synced_through(&mut self, mark: Mark) {
        if mark.epoch != self.epoch || self.cut {
            return;
        }
        let n = mark.bytes.min(self.written);
        self.buf.drop_front(n);
        self.synced += n as u64;
        self.written -= n;
        // A mark taken before counted from the old synced length.
        self.epoch += 1;
        // A file not created yet had no directory entry to sync.
        if self.file.is_some() {
            self.fresh = false;
        }
    }

    /// The accepted, unsynced bytes (tests).
    #[cfg(test)]
    pub fn buf_for_test(&self) -> Vec<u8> {
        self.buf.to_vec()
    }

    /// Closes the descriptor if nothing is pending (reopened on demand).
    pub fn release(&mut self) {
        if self.buf.is_empty() && !self.cut {
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_durable_file_appends_and_recovers_from_errors() {
        let dir = crate::audit::testdir("durable");
        let path = dir.join("f");
        let mut f = DurableFile::lazy(&path);
        f.append(b"one\n");
        f.sync().unwrap();
        f.append(b"two\n");
        assert_eq!((f.unwritten(), f.unsynced()), (4, 4));
        f.flush().unwrap();
        assert_eq!((f.unwritten(), f.unsynced()), (0, 4), "written, not yet synced");
        // Simulate a failed sync: the unsynced tail is cut and rewritten.
        f.cut = true;
        f.written = 0;
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all_at(b"garbage", 8).unwrap();
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
        f.release();
        f.append(b"three\n");
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
        let g = DurableFile::open(&path).unwrap();
        assert_eq!(g.len(), 14);
    }

    #[test]
    fn a_sync_elsewhere_covers_its_mark_and_no_more() {
        let dir = crate::audit::testdir("durable-mark");
        let path = dir.join("f");
        let mut f = DurableFile::lazy(&path);
        f.append(b"one\n");
        let t = f.ticket().unwrap().expect("bytes to sync");
        assert!(t.dir.is_some(), "a new file's directory entry is synced too");
        // More bytes come, and are written, while that sync runs.
        f.append(b"two\n");
        f.flush().unwrap();
        t.file.sync_data().unwrap();
        f.synced_through(t.mark);
        assert_eq!((f.unsynced(), f.unwritten()), (4, 0), "only the first line is durable");
        let t = f.ticket().unwrap().expect("the second line");
        assert!(t.dir.is_none(), "the entry was synced with the first");
        assert_eq!(t.mark.bytes(), 4);
        // A write failure (or failed sync) cuts the file back to the synced
        // length while a sync runs: that sync covers nothing any more.
        f.sync_failed();
        f.synced_through(t.mark);
        assert_eq!(f.unsynced(), 4);
        f.append(b"three\n");
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\nthree\n");
        assert!(f.ticket().unwrap().is_none(), "nothing left to sync");
    }

    #[test]
    fn pending_bytes_span_chunks_and_drop_from_the_front() {
        let dir = crate::audit::testdir("durable-chunks");
        let path = dir.join("f");
        let mut f = DurableFile::lazy(&path);
        // 2,000 lines of 300 bytes: three chunks and more.
        let line = |k: usize| format!("{k:06} {}\n", "x".repeat(292));
        let mut all = String::new();
        f.append(line(0).as_bytes());
        all.push_str(&line(0));
        // A file's first chunk holds what it needs, not a chunk's worth.
        assert!(f.buf.chunks[0].capacity() < 4096, "{}", f.buf.chunks[0].capacity());
        for k in 1..2000 {
            f.append(line(k).as_bytes());
            all.push_str(&line(k));
        }
        assert!(f.buf.chunks.len() >= 3, "{} chunks", f.buf.chunks.len());
        // Once one is full, the next ones get their whole size at once.
        assert!(f.buf.chunks.iter().skip(1).all(|c| c.capacity() == CHUNK));
        assert_eq!(f.buf_for_test(), all.as_bytes());
        // Pieces of lines: every one ends on a newline, across chunks.
        while !f.flush_lines_upto(64 << 10).unwrap() {
            assert!(std::fs::read(&path).unwrap().ends_with(b"\n"));
        }
        assert_eq!(std::fs::read(&path).unwrap(), all.as_bytes());
        // A commit covers these; 500 more lines come meanwhile.
        let t = f.ticket().unwrap().unwrap();
        for k in 2000..2500 {
            f.append(line(k).as_bytes());
            all.push_str(&line(k));
        }
        f.flush().unwrap();
        t.file.sync_data().unwrap();
        f.synced_through(t.mark);
        assert_eq!(f.unsynced(), 500 * 300);
        assert_eq!(f.buf.chunks.len(), 1, "the synced chunks are freed");
        assert_eq!(f.buf_for_test(), &all.as_bytes()[2000 * 300..]);
        // Dropping part of a chunk, then a cut and a rewrite from there.
        let t = f.ticket().unwrap().unwrap();
        f.synced_through(Mark { bytes: 100 * 300, epoch: t.mark.epoch });
        assert_eq!(f.buf_for_test(), &all.as_bytes()[2100 * 300..]);
        // The failed sync's pages may be gone: the file ends where the last
        // good sync left it, and the rest is written again from there.
        f.sync_failed();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(2100 * 300).unwrap();
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), all.as_bytes());
        assert_eq!(f.unsynced(), 0);
        // That commit filled more than a quarter of its chunk: the chunk
        // is kept for the next appends.
        assert_eq!(f.buf.chunks.len(), 1);
        assert_eq!(f.buf.chunks[0].capacity(), CHUNK);
        f.append(b"last\n");
        assert_eq!(f.buf.chunks.len(), 1, "the kept chunk takes the next appends");
        f.sync().unwrap();
        assert!(std::fs::read(&path).unwrap().ends_with(b"x\nlast\n"));
        // That commit was small: the file is quiet again, and its emptied
        // chunk does not keep a chunk's capacity.
        assert!(f.buf.chunks.iter().all(|c| c.capacity() <= KEEP_IDLE), "a quiet file keeps a large chunk");
    }

    #[test]
    fn a_busy_file_keeps_its_buffer_across_commits() {
        let dir = crate::audit::testdir("durable-busy");
        let mut f = DurableFile::lazy(&dir.join("f"));
        let block = [7u8; 300];
        // A busy capture: 200 blocks (60 KB) a commit, a few commits.
        let mut caps = Vec::new();
        for _ in 0..4 {
            for _ in 0..200 {
                f.append(&block);
            }
            f.sync().unwrap();
            assert_eq!(f.unsynced(), 0);
            // What the next commit's appends start from.
            caps.push(f.buf.chunks.iter().map(Vec::capacity).sum::<usize>());
        }
        assert!(caps[0] >= 200 * 300, "{caps:?}");
        assert!(caps.iter().all(|&c| c == caps[0]), "the buffer was given back after a commit: {caps:?}");
        // Then quiet: a small commit gives the buffer back.
        f.append(&block);
        f.sync().unwrap();
        assert!(f.buf.chunks.iter().all(|c| c.capacity() <= KEEP_IDLE));
        assert_eq!(std::fs::metadata(dir.join("f")).unwrap().len(), 801 * 300);
    }

    #[test]
    fn audit_durable_file_writes_in_pieces() {
        let dir = crate::audit::testdir("durable-pieces");
        let path = dir.join("f");
        let mut f = DurableFile::lazy(&path);
        f.append(b"0123456789");
        assert!(!f.flush_upto(4).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"0123");
        assert!(!f.flush_upto(4).unwrap());
        assert!(f.flush_upto(4).unwrap());
        assert_eq!(f.unwritten(), 0);
        assert!(f.flush_upto(4).unwrap(), "nothing left to write");
        // A cut (after a failed sync) rewrites from the synced length, in pieces too.
        f.sync().unwrap();
        f.append(b"abcdef");
        assert!(f.flush_upto(100).unwrap());
        f.cut = true;
        f.written = 0;
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all_at(b"garbage", 16).unwrap();
        assert!(!f.flush_upto(3).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abc");
        assert!(f.flush_upto(3).unwrap());
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdef");
        // Lines: a piece ends after its last newline.
        f.append(b"aa\nbbbb\ncc\n");
        assert!(!f.flush_lines_upto(6).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdefaa\n");
        assert!(!f.flush_lines_upto(6).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdefaa\nbbbb\n");
        assert!(f.flush_lines_upto(6).unwrap());
        // A line longer than the piece is written in pieces all the same.
        f.append(b"0123456789\n");
        assert!(!f.flush_lines_upto(4).unwrap());
        assert!(!f.flush_lines_upto(4).unwrap());
        assert!(f.flush_lines_upto(4).unwrap());
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"0123456789abcdefaa\nbbbb\ncc\n0123456789\n");
    }
}
