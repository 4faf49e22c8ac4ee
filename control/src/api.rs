//! The management socket: a Unix stream socket, one command per connection.
//!
//! ```text
//! stats   -> one JSON object of counters summed over cores
//! reload  -> "ok generation N" or "error" followed by every config error
//! ```
//! The socket is polled non-blocking from the control thread's loop, so a
//! slow client cannot stall it for more than its read timeout.

use std::io::Write;
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
    /// Binds `path` (a stale socket file is replaced). The socket is 0600
    /// and a directory made for it 0700, whatever the umask: its commands
    /// (revoke, reload) are the operator's. It is bound in a private
    /// directory beside `path`, made 0600 there and renamed into place, so
    /// it is never reachable with the umask's mode.
    ///
    /// # Errors
    /// The directory is missing or not writable.
    pub fn bind(path: &Path) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        }
        // Short: the staged path must fit a socket address (108 bytes) as
        // well as `path` does.
        let private = dir.join(format!(".{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&private);
        std::fs::DirBuilder::new().mode(0o700).create(&private)?;
        let bound = (|| {
            let staged = private.join("s");
            let listener = UnixListener::bind(&staged)?;
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            let _ = std::fs::remove_file(path);
            std::fs::rename(&staged, path)?;
            Ok::<_, std::io::Error>(listener)
        })();
        let _ = std::fs::remove_dir_all(&private);
        let listener = bound?;
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
    let line = read_command(&stream, Duration::from_millis(500))?;
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
            if control.has_user(user) == Some(false) {
                return writeln!(out, "error\nno user {user:?} on this gate (names are case-sensitive)");
            }
            match control.revoke_user(user) {
                Some(n) => writeln!(out, "ok revoked {n} ticket(s) of {user}"),
                None => writeln!(out, "error\nthis gate has no authenticator"),
            }
        }
        other => writeln!(out, "error\nunknown command {other:?} (expected stats, reload or revoke USER)"),
    }
}

use std::io::Read as _;

/// The first line a client sends (at most 256 bytes), read within `limit`
/// in all: a client that trickles its bytes cannot hold the control thread
/// longer than that.
fn read_command(stream: &UnixStream, limit: Duration) -> std::io::Result<String> {
    let deadline = std::time::Instant::now() + limit;
    let mut line = Vec::with_capacity(64);
    let mut byte = [0u8; 64];
    let mut reader = stream;
    while line.len() < 256 && !line.contains(&b'\n') {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no command within the read timeout"));
        }
        stream.set_read_timeout(Some(left))?;
        let n = reader.read(&mut byte[..(256 - line.len()).min(64)])?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&byte[..n]);
    }
    let end = line.iter().position(|&b| b == b'\n').map_or(line.len(), |i| i + 1);
    String::from_utf8(line[..end].to_vec()).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Authenticator, User, UserDb};
    use std::sync::Arc;
    use std::time::Instant;

    /// A control thread on the lab's config in a directory of its own, and
    /// its ctl socket there (the directory goes with the last value).
    fn lab_control(test: &str) -> (Control, Api, PathBuf, crate::audit::TestDir) {
        let dir = crate::audit::testdir(test);
        let path = dir.join("lab.toml");
        std::fs::write(&path, include_str!("../../config/lab.toml")).unwrap();
        let config = crate::config::load(&path).unwrap();
        let sock = dir.join("ctl.sock");
        (Control::new(Some(path), &config), Api::bind(&sock).unwrap(), sock, dir)
    }

    /// A client that sends its command a byte at a time, each within the
    /// read timeout, cannot hold the control thread (signals, reloads,
    /// session events, the audit's denied flows) past the timeout for the
    /// whole command (found by a review: the 500 ms bounded each read).
    /// Only the gate's own user reaches the socket, whatever the umask
    /// (found by a review: with umask 000 any local user could revoke,
    /// reload and read the counters).
    #[test]
    fn the_socket_and_a_directory_made_for_it_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::audit::testdir("api-mode");
        let sock = dir.join("run").join("ctl.sock");
        // Under the usual umask 022 both would be 0755 without the chmod.
        let _api = Api::bind(&sock).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&sock), mode(&dir.join("run"))), (0o600, 0o700));
        let left: Vec<_> = std::fs::read_dir(dir.join("run")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["ctl.sock"], "the private directory it was bound in is gone");
    }

    #[test]
    fn a_trickling_client_cannot_hold_the_control_thread_past_the_read_timeout() {
        let (mut control, api, sock, _dir) = lab_control("api-slow");
        let client = std::thread::spawn(move || {
            let mut s = UnixStream::connect(&sock).unwrap();
            for b in b"stats\n" {
                std::thread::sleep(Duration::from_millis(400));
                let _ = s.write_all(&[*b]);
            }
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
        });
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        api.serve_pending(&mut control);
        let held = t.elapsed();
        client.join().unwrap();
        assert!(held < Duration::from_millis(1000), "the control thread was held {held:?}");
    }

    /// `ctl revoke USER` of a name the gate does not know (a typo, the
    /// wrong case) is an error, not "ok" while the intended user's sessions
    /// go on, and publishes nothing.
    #[test]
    fn revoking_an_unknown_user_is_an_error() {
        let (mut control, api, sock, _dir) = lab_control("api-revoke");
        let mut db = UserDb::new();
        db.add(User::new("alice", &["operator".to_string()])).unwrap();
        control.set_authenticator(Arc::new(Authenticator::new(db)), None);
        let generation = control.snapshot().generation;
        let ask = |control: &mut Control, command: &'static str| {
            let sock = sock.clone();
            let client = std::thread::spawn(move || request(&sock, command).unwrap());
            while !client.is_finished() {
                api.serve_pending(control);
                std::thread::sleep(Duration::from_millis(5));
            }
            client.join().unwrap()
        };
        let answer = ask(&mut control, "revoke Alice");
        assert!(answer.starts_with("error\nno user \"Alice\""), "answer: {answer:?}");
        assert_eq!(control.snapshot().generation, generation, "nothing to publish");
        let answer = ask(&mut control, "revoke alice");
        assert!(answer.starts_with("ok revoked 0 ticket(s) of alice"), "answer: {answer:?}");
        assert!(control.snapshot().generation > generation, "a revocation is published");
    }
}
