//! Watches a config file for changes (inotify on its directory, so editors
//! that write a new file and rename it over the old one are seen too).
//! Polled without blocking from the control thread's loop.
//!
//! Only a finished file counts: a write closed (`CLOSE_WRITE`) or a file
//! renamed into place (`MOVED_TO`), never a file created and still being
//! written. A config reached through a symlink is watched at both ends:
//! the link (swapped by `ln -sfn`, recreated by `rm` and `ln -s`, or a
//! ConfigMap update) and the file it resolves to (edited in place or
//! renamed over), which is resolved again after every event: a path that
//! now resolves to another file is a change (`CREATE` is watched for that
//! alone; a symlink is never half written).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};

/// A watch on one file.
pub struct FileWatch {
    inotify: Inotify,
    path: PathBuf,
    /// The watched (directory, name) pairs: the path itself, and the file
    /// it resolves to when that is elsewhere.
    names: Vec<(WatchDescriptor, OsString)>,
    /// What `path` resolved to when last looked.
    target: Option<PathBuf>,
    buf: Vec<u8>,
}

impl FileWatch {
    /// Watches `path`.
    ///
    /// # Errors
    /// inotify is unavailable or the directory cannot be watched.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let inotify = Inotify::init()?;
        let mut w = Self { inotify, path: path.to_path_buf(), names: Vec::new(), target: None, buf: vec![0; 4096] };
        w.watch(path)?;
        w.follow();
        Ok(w)
    }

    fn watch(&mut self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let wd = self.inotify.watches().add(dir, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE)?;
        if !self.names.iter().any(|(w, n)| *w == wd && *n == name) {
            self.names.push((wd, name));
        }
        Ok(())
    }

    /// Resolves the path again; a new target is watched too. Returns
    /// whether it is a symlink that now resolves to a file, another than
    /// before (not when it resolves to nothing: a link removed to be made
    /// again; and never for a plain file, which may still be being
    /// written: `CLOSE_WRITE` says when it is done).
    fn follow(&mut self) -> bool {
        let target = std::fs::canonicalize(&self.path).ok();
        if target == self.target {
            return false;
        }
        // The path's own entry stays; the old target's goes.
        self.names.truncate(1);
        if let Some(t) = &target {
            if let Err(e) = self.watch(&t.clone()) {
                log::warn!("config {}: cannot watch {}: {e} (reload with SIGHUP)", self.path.display(), t.display());
            }
        }
        self.target = target;
        self.target.is_some() && std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.file_type().is_symlink())
    }

    /// Whether the file changed since the last call (never blocks).
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        let mut seen = false;
        while let Ok(events) = self.inotify.read_events(&mut self.buf) {
            let mut any = false;
            for e in events {
                any = true;
                // A created file is still being written: only `follow`
                // judges a CREATE (a new link target).
                if e.mask.contains(EventMask::CREATE) {
                    continue;
                }
                changed |= e.name.is_some_and(|n| self.names.iter().any(|(wd, name)| *wd == e.wd && name == n));
            }
            seen |= any;
            if !any {
                break;
            }
        }
        // A link swapped to another file is a change even when the event
        // named something else (a ConfigMap swaps a link one level up).
        if seen {
            changed |= self.follow();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_writes_and_renames_of_the_file_only() {
        let dir = crate::audit::testdir("watch");
        let path = dir.join("policy.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path).unwrap();
        assert!(!w.changed());
        std::fs::write(dir.join("other.toml"), "x").unwrap();
        assert!(!w.changed(), "another file in the directory");
        std::fs::write(&path, "b").unwrap();
        assert!(w.changed());
        assert!(!w.changed());
        std::fs::write(dir.join("policy.toml.tmp"), "c").unwrap();
        std::fs::rename(dir.join("policy.toml.tmp"), &path).unwrap();
        assert!(w.changed(), "an editor's write-and-rename");
    }

    /// A file created and still being written is not a change yet (found by
    /// a review: CREATE was watched, and the gate published a config with
    /// 8 of its 9 rules, then the whole one 300 ms later).
    #[test]
    fn a_file_still_being_written_is_not_reported() {
        use std::io::Write as _;
        let dir = crate::audit::testdir("watch-create");
        let path = dir.join("gate.toml");
        std::fs::write(&path, "a = 1\n").unwrap();
        let mut w = FileWatch::new(&path).unwrap();
        std::fs::rename(&path, dir.join("gate.toml~")).unwrap();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"[gate]\n").unwrap();
        assert!(!w.changed(), "reported while half written");
        f.write_all(b"rest = 1\n").unwrap();
        drop(f);
        assert!(w.changed(), "the close is seen");
    }

    /// A link removed and made again to another file (`rm` and `ln -s`,
    /// busybox's `ln -sf`) is a change, seen by its CREATE alone (found by a
    /// review: without CREATE in the mask it went unseen).
    #[test]
    fn a_link_made_again_in_place_is_seen() {
        let dir = crate::audit::testdir("watch-relink");
        let (a, b, link) = (dir.join("a.toml"), dir.join("b.toml"), dir.join("gate.toml"));
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let mut w = FileWatch::new(&link).unwrap();
        assert!(!w.changed());
        std::fs::remove_file(&link).unwrap();
        assert!(!w.changed(), "gone: nothing to reload yet");
        std::os::unix::fs::symlink(&b, &link).unwrap();
        assert!(w.changed(), "the config now resolves to b.toml");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&a, &link).unwrap();
        assert!(w.changed(), "made again with no look in between");
    }

    /// A plain config removed and written again is a change only when the
    /// writing is done, also with other events in the directory meanwhile
    /// (found by a review: `follow` took the new file for a new target).
    #[test]
    fn a_plain_file_written_again_is_seen_when_done() {
        use std::io::Write as _;
        let dir = crate::audit::testdir("watch-rewrite");
        let path = dir.join("gate.toml");
        std::fs::write(&path, "a").unwrap();
        let mut w = FileWatch::new(&path).unwrap();
        assert!(!w.changed());
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.join(".gate.toml.swp"), "x").unwrap();
        assert!(!w.changed());
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"[gate]\n").unwrap();
        assert!(!w.changed(), "still being written");
        drop(f);
        assert!(w.changed(), "written");
    }

    /// A config reached through a symlink is re-read when the file it
    /// points to is edited in place or renamed over, and when the link is
    /// swapped (found by a review: only the link's own name was watched, so
    /// none of these was seen).
    #[test]
    fn sees_edits_of_a_symlinked_config_and_link_swaps() {
        let dir = crate::audit::testdir("watch-link");
        let (etc, real, next) = (dir.join("etc"), dir.join("real"), dir.join("next"));
        for d in [&etc, &real, &next] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(real.join("gate.toml"), "a").unwrap();
        let link = etc.join("gate.toml");
        std::os::unix::fs::symlink(real.join("gate.toml"), &link).unwrap();
        let mut w = FileWatch::new(&link).unwrap();
        assert!(!w.changed());
        std::fs::write(real.join("gate.toml"), "b").unwrap();
        assert!(w.changed(), "the target edited in place");
        std::fs::write(real.join("gate.toml.tmp"), "c").unwrap();
        std::fs::rename(real.join("gate.toml.tmp"), real.join("gate.toml")).unwrap();
        assert!(w.changed(), "the target renamed over");
        std::fs::write(next.join("gate.toml"), "d").unwrap();
        std::os::unix::fs::symlink(next.join("gate.toml"), etc.join("gate.toml.new")).unwrap();
        std::fs::rename(etc.join("gate.toml.new"), &link).unwrap();
        assert!(w.changed(), "the link swapped");
        std::fs::write(next.join("gate.toml"), "e").unwrap();
        assert!(w.changed(), "the new target edited");
        std::fs::write(real.join("gate.toml"), "f").unwrap();
        assert!(!w.changed(), "the old target is not the config any more");
    }
}
