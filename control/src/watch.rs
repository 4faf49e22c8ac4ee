//! Watches a config file for changes (inotify on its directory, so editors
//! that write a new file and rename it over the old one are seen too).
//! Polled without blocking from the control thread's loop.

use std::ffi::OsString;
use std::path::Path;

use inotify::{Inotify, WatchMask};

/// A watch on one file.
pub struct FileWatch {
    inotify: Inotify,
    name: OsString,
    buf: Vec<u8>,
}

impl FileWatch {
    /// Watches `path`.
    ///
    /// # Errors
    /// inotify is unavailable or the directory cannot be watched.
    pub fn new(path: &Path) -> std::io::Result<Self> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(OsString::from).unwrap_or_default();
        let inotify = Inotify::init()?;
        inotify.watches().add(dir, WatchMask::CLOSE_WRITE | WatchMask::MOVED_TO | WatchMask::CREATE)?;
        Ok(Self { inotify, name, buf: vec![0; 4096] })
    }

    /// Whether the file changed since the last call (never blocks).
    pub fn changed(&mut self) -> bool {
        let mut changed = false;
        while let Ok(events) = self.inotify.read_events(&mut self.buf) {
            let mut any = false;
            for e in events {
                any = true;
                changed |= e.name.is_some_and(|n| n == self.name.as_os_str());
            }
            if !any {
                break;
            }
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
