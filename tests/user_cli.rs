//! `accessgate user`: what two admins editing the secrets file at once see.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const GATE: &str = env!("CARGO_BIN_EXE_accessgate");

fn user(secrets: &Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(GATE)
        .arg("user")
        .arg("--secrets")
        .arg(secrets)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("accessgate");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "user {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("accessgate-user-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `passwd` waiting for its password does not undo a change another
/// admin saved meanwhile (found by a review: it saved the file as it had
/// loaded it before the prompt, re-enabling a user just disabled).
#[test]
fn a_change_saved_while_passwd_waits_for_the_password_is_kept() {
    let d = dir("passwd");
    let secrets = d.join("secrets.toml");
    for name in ["alice", "bob"] {
        user(&secrets, &["add", name, "--role", "operator", "--password-stdin", "--json"], "correct horse battery\n");
    }
    let mut passwd = Command::new(GATE)
        .arg("user")
        .arg("--secrets")
        .arg(&secrets)
        .args(["passwd", "alice", "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("accessgate");
    // It has loaded the file and waits on standard input.
    std::thread::sleep(Duration::from_millis(500));
    user(&secrets, &["disable", "bob"], "");
    passwd.stdin.take().unwrap().write_all(b"another long password\n").unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_str(&user(&secrets, &["list", "--json"], "")).unwrap();
    let bob = list.as_array().unwrap().iter().find(|u| u["user"] == "bob").unwrap();
    assert_eq!(bob["disabled"], true, "bob re-enabled by alice's passwd: {list}");
    std::fs::remove_dir_all(&d).unwrap();
}
