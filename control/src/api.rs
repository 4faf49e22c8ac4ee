//! The management socket: a Unix stream socket, one command per connection.
//!
//! ```text
//! stats   -> one JSON object of counters summed over cores
//! reload  -> "ok generation N" or "error" followed by every config error
//! ```
//! The socket is polled non-blocking from the control thread's loop, so a
//! slow client cannot stall it for more than its read timeout.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Control;

/// A bound management socket.
pub struct Api {
    listener: UnixListener,
    path: PathBuf,
}

impl Api {
    /// Binds `path` (a stale socket file is replaced).
    ///
    /// # Errors
    /// The directory is missing or not writable.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        Ok(Self { listener, path: path.to_path_buf() })
    }

    /// Answers every connection waiting right now.
    pub fn serve_pending(&self, control: &mut Control) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = answer(stream, control) {
                log::warn!("management socket: {e}");
            }
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn answer(stream: UnixStream, control: &mut Control) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut line = String::new();
    BufReader::new(&stream).take(256).read_line(&mut line)?;
    let mut out = &stream;
    match line.trim() {
        "stats" => {
            let mut map = serde_json::Map::new();
            for (k, v) in control.totals().to_pairs() {
                map.insert(k, v.into());
            }
            map.insert("reload_failures".into(), control.reload_failures().into());
            for (k, v) in control.audit_state().unwrap_or_default() {
                map.insert(k.into(), v.into());
            }
            writeln!(out, "{}", serde_json::Value::Object(map))
        }
        "reload" => match control.reload() {
            Ok(g) => writeln!(out, "ok generation {g}"),
            Err(e) => writeln!(out, "error\n{e}"),
        },
        cmd if cmd.starts_with("revoke ") => {
            let user = cmd["revoke ".len()..].trim();
            match control.revoke_user(user) {
                Some(n) => writeln!(out, "ok revoked {n} ticket(s) of {user}"),
                None => writeln!(out, "error\nthis gate has no authenticator"),
            }
        }
        other => writeln!(out, "error\nunknown command {other:?} (expected stats, reload or revoke USER)"),
    }
}

use std::io::Read as _;

/// Sends one command to a running gate and returns its answer.
///
/// # Errors
/// No gate listens on `path`.
pub fn request(path: &Path, command: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("{}: {e} (is the gate running with --ctl {}?)", path.display(), path.display()),
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    writeln!(s, "{command}")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}
