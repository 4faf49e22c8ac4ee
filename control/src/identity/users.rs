//! The secrets file: users, their roles, password hashes and TOTP secrets.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! roles = ["operator"]
//! password = "$argon2id$v=19$m=19456,t=2,p=1$..."   # PHC string
//! totp = "JBSWY3DPEHPK3PXP"                          # base32, RFC 4648, no padding
//! disabled = false                                    # optional
//! cert_fingerprints = []                              # optional, "sha256:<64 hex>"
//! ```
//!
//! It is separate from the policy (which is reviewed in git) and must be
//! mode 0600 or stricter: [`UserDb::load`] refuses a file that the group or
//! others can read or write. Loading collects every error with
//! `file:line:column`. [`UserDb::save`] writes atomically (a temporary file
//! in the same directory, mode 0600, fsync, rename, fsync the directory).
//! Two `accessgate user` commands run at once may lose one's change (no
//! file lock); the file is never torn.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::password;
use super::totp::Secret;

/// Where the gate and `accessgate user` look by default.
pub const DEFAULT_SECRETS: &str = "/etc/accessgate/secrets.toml";
/// Longest user name (the hello's limit).
pub const MAX_NAME_LEN: usize = dataplane::wire::hello::MAX_USER_LEN;
/// Longest role name.
pub const MAX_ROLE_LEN: usize = 32;

/// One user.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub roles: Vec<String>,
    /// argon2id PHC string; `None` for a certificate-only user.
    pub password: Option<String>,
    /// `None` until enrolled: such a user cannot log in.
    pub totp: Option<Secret>,
    pub disabled: bool,
    /// `sha256:<64 lowercase hex>` of client certificates.
    pub cert_fingerprints: Vec<String>,
}

impl User {
    /// A user with roles and nothing else yet.
    pub fn new(name: &str, roles: &[String]) -> Self {
        Self {
            name: name.to_string(),
            roles: roles.to_vec(),
            password: None,
            totp: None,
            disabled: false,
            cert_fingerprints: Vec::new(),
        }
    }
}

/// Secrets stay out of logs.
impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("totp", &self.totp.as_ref().map(|_| "<redacted>"))
            .field("disabled", &self.disabled)
            .field("cert_fingerprints", &self.cert_fingerprints)
            .finish()
    }
}

/// One problem in the secrets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every error list, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileErrors(pub Vec<FileError>);

impl fmt::Display for FileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// What went wrong with the user database.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{file} is mode {mode:04o}: it holds password hashes and TOTP secrets; run chmod 600 {file}")]
    Permissions { file: String, mode: u32 },
    #[error("{0}")]
    Invalid(FileErrors),
    #[error("no user {name:?}{hint}")]
    UnknownUser { name: String, hint: String },
    #[error("user {0:?} already exists")]
    DuplicateUser(String),
    #[error("bad user name {name:?}: {why}")]
    BadName { name: String, why: String },
    #[error("bad role name {role:?}: {why}")]
    BadRole { role: String, why: String },
    #[error("cannot write the secrets file: {0}")]
    Serialize(String),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> UserDbError + '_ {
    move |source| UserDbError::Io { path: path.display().to_string(), source }
}

/// Checks a user name: 1..=64 of `a-z 0-9 . _ -`, starting with a letter.
///
/// # Errors
/// What is wrong with it.
pub fn check_name(name: &str) -> Result<(), String> {
    check_word(name, MAX_NAME_LEN, b"._-")
}

/// Checks a role name: 1..=32 of `a-z 0-9 _ -`, starting with a letter.
///
/// # Errors
/// What is wrong with it.
pub fn check_role(role: &str) -> Result<(), String> {
    check_word(role, MAX_ROLE_LEN, b"_-")
}

fn check_word(word: &str, max: usize, punct: &[u8]) -> Result<(), String> {
    let allowed = || {
        let p: Vec<String> = punct.iter().map(|&b| format!("'{}'", char::from(b))).collect();
        format!("lowercase letters, digits and {}, starting with a letter", p.join(" "))
    };
    if word.is_empty() || word.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    if !word.as_bytes()[0].is_ascii_lowercase() {
        return Err(format!("use {}", allowed()));
    }
    let ok = |c: char| c.is_ascii() && (c.is_ascii_lowercase() || c.is_ascii_digit() || punct.contains(&(c as u8)));
    if let Some(c) = word.chars().find(|&c| !ok(c)) {
        return Err(format!("{c:?} is not allowed; use {}", allowed()));
    }
    Ok(())
}

/// The fingerprint of a certificate as the secrets file writes it:
/// `sha256:` and the lowercase hex SHA-256 of its DER.
pub fn cert_fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!("sha256:{}", crate::audit::chain::hex(&Sha256::digest(der)))
}

fn check_fingerprint(fp: &str) -> Result<(), String> {
    match fp.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(()),
        _ => Err(format!("certificate fingerprint {fp:?} is not \"sha256:\" and 64 lowercase hex digits")),
    }
}

/// The closest name within edit distance 2, for "did you mean" hints.
pub use crate::config::nearest;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    user: Vec<RawUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    name: Spanned<String>,
    #[serde(default)]
    roles: Vec<Spanned<String>>,
    password: Option<Spanned<String>>,
    totp: Option<Spanned<String>>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    cert_fingerprints: Vec<Spanned<String>>,
}

#[derive(Serialize)]
struct OutFile<'a> {
    user: Vec<OutUser<'a>>,
}

#[derive(Serialize)]
struct OutUser<'a> {
    name: &'a str,
    roles: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp: Option<String>,
    disabled: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cert_fingerprints: &'a [String],
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

/// The users, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    users: BTreeMap<String, User>,
}

impl UserDb {
    /// No users.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and validates the secrets file.
    ///
    /// # Errors
    /// The file cannot be read, is readable or writable by group or others,
    /// or has errors (every one is reported, with its position).
    pub fn load(path: &Path) -> Result<Self, UserDbError> {
        let mut file = File::open(path).map_err(io_err(path))?;
        // Check the file that was opened, not the path again.
        let mode = file.metadata().map_err(io_err(path))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(UserDbError::Permissions { file: path.display().to_string(), mode: mode & 0o7777 });
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(io_err(path))?;
        Self::parse(&path.display().to_string(), &text)
    }

    /// [`UserDb::load`], but a missing file is an empty database (the
    /// first `accessgate user add`).
    ///
    /// # Errors
    /// As [`UserDb::load`], except for a missing file.
    pub fn load_or_empty(path: &Path) -> Result<Self, UserDbError> {
        match Self::load(path) {
            Err(UserDbError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(Self::new()),
            other => other,
        }
    }

    /// Parses secrets-file text; `file` names it in errors.
    ///
    /// # Errors
    /// Every problem, each with `file:line:column`.
    pub fn parse(file: &str, text: &str) -> Result<Self, UserDbError> {
        let at = |offset: usize, message: String| {
            let (line, column) = line_col(text, offset);
            FileError { file: file.to_string(), line, column, message }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            UserDbError::Invalid(FileErrors(vec![at(offset, e.message().trim().to_string())]))
        })?;
        let mut errors = Vec::new();
        let mut users = BTreeMap::new();
        for u in raw.user {
            let name = u.name.get_ref();
            let mut ok = true;
            if let Err(why) = check_name(name) {
                errors.push(at(u.name.span().start, format!("user name {name:?}: {why}")));
                ok = false;
            } else if users.contains_key(name) {
                errors.push(at(u.name.span().start, format!("user {name:?} is defined twice")));
                ok = false;
            }
            let mut seen = HashSet::new();
            for r in &u.roles {
                if let Err(why) = check_role(r.get_ref()) {
                    errors.push(at(r.span().start, format!("role {:?}: {why}", r.get_ref())));
                    ok = false;
                } else if !seen.insert(r.get_ref().as_str()) {
                    errors.push(at(r.span().start, format!("role {:?} is listed twice", r.get_ref())));
                    ok = false;
                }
            }
            if let Some(p) = &u.password {
                if let Err(why) = password::check_phc(p.get_ref()) {
                    errors.push(at(p.span().start, format!("user {name:?}: {why}")));
                    ok = false;
                } else if password::is_weak(p.get_ref()) {
                    log::warn!(
                        "{file}: user {name:?}: password hash is weaker than argon2id m=19456,t=2 (run accessgate user passwd {name})"
                    );
                } else if password::is_costlier(p.get_ref()) {
                    log::warn!(
                        "{file}: user {name:?}: password hash costs more than argon2id m=19456,t=2,p=1, so a login for this name takes longer than for an unknown one and tells that it exists (run accessgate user passwd {name})"
                    );
                }
            }
            let totp = match u.totp.as_ref().map(|t| Secret::from_base32(t.get_ref())) {
                Some(Ok(s)) => Some(s),
                Some(Err(why)) => {
                    let span = u.totp.as_ref().map_or(0, |t| t.span().start);
                    errors.push(at(span, format!("user {name:?}: {why}")));
                    ok = false;
                    None
                }
                None => None,
            };
            for fp in &u.cert_fingerprints {
                if let Err(why) = check_fingerprint(fp.get_ref()) {
                    errors.push(at(fp.span().start, format!("user {name:?}: {why}")));
                    ok = false;
                }
            }
            if u.password.is_none() && u.cert_fingerprints.is_empty() {
                errors.push(at(
                    u.name.span().start,
                    format!("user {name:?} has neither a password nor a certificate fingerprint"),
                ));
                ok = false;
            }
            if ok {
                users.insert(
                    name.clone(),
                    User {
                        name: name.clone(),
                        roles: u.roles.iter().map(|r| r.get_ref().clone()).collect(),
                        password: u.password.map(Spanned::into_inner),
                        totp,
                        disabled: u.disabled,
                        cert_fingerprints: u.cert_fingerprints.into_iter().map(Spanned::into_inner).collect(),
                    },
                );
            }
        }
        if errors.is_empty() {
            Ok(Self { users })
        } else {
            errors.sort_by_key(|e| (e.line, e.column));
            Err(UserDbError::Invalid(FileErrors(errors)))
        }
    }

    /// The file text (users sorted by name).
    ///
    /// # Errors
    /// Serialization failed (it does not for valid users).
    pub fn to_toml(&self) -> Result<String, UserDbError> {
        let out = OutFile {
            user: self
                .users
                .values()
                .map(|u| OutUser {
                    name: &u.name,
                    roles: &u.roles,
                    password: u.password.as_deref(),
                    totp: u.totp.as_ref().map(Secret::to_base32),
                    disabled: u.disabled,
                    cert_fingerprints: &u.cert_fingerprints,
                })
                .collect(),
        };
        let body = toml::to_string(&out).map_err(|e| UserDbError::Serialize(e.to_string()))?;
        Ok(format!(
            "# Access Gate secrets: password hashes and TOTP secrets. Keep mode 0600.\n\
             # Managed with `accessgate user ...`; comments are not kept.\n\n{body}"
        ))
    }

    /// Writes the file atomically with mode 0600, creating its directory
    /// (mode 0700) if missing.
    ///
    /// # Errors
    /// Any I/O failure; the old file is then untouched.
    pub fn save(&self, path: &Path) -> Result<(), UserDbError> {
        let text = self.to_toml()?;
        let dir = parent_dir(path);
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err(&dir))?;
        }
        replace_file(path, text.as_bytes()).map_err(io_err(path))
    }

    /// A user by name.
    pub fn get(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// A user by name, or an error with a "did you mean" hint.
    ///
    /// # Errors
    /// No such user.
    pub fn require(&self, name: &str) -> Result<&User, UserDbError> {
        self.users.get(name).ok_or_else(|| self.unknown(name))
    }

    /// [`UserDb::require`], mutable.
    ///
    /// # Errors
    /// No such user.
    pub fn require_mut(&mut self, name: &str) -> Result<&mut User, UserDbError> {
        if !self.users.contains_key(name) {
            return Err(self.unknown(name));
        }
        self.users.get_mut(name).ok_or_else(|| UserDbError::UnknownUser { name: name.to_string(), hint: String::new() })
    }

    fn unknown(&self, name: &str) -> UserDbError {
        let hint = nearest(name, self.users.keys().map(String::as_str))
            .map(|n| format!(" (did you mean {n:?}?)"))
            .unwrap_or_default();
        UserDbError::UnknownUser { name: name.to_string(), hint }
    }

    /// Adds a user after checking its name and roles.
    ///
    /// # Errors
    /// A bad name or role, or the name is taken.
    pub fn add(&mut self, user: User) -> Result<(), UserDbError> {
        check_name(&user.name).map_err(|why| UserDbError::BadName { name: user.name.clone(), why })?;
        for r in &user.roles {
            check_role(r).map_err(|why| UserDbError::BadRole { role: r.clone(), why })?;
        }
        if self.users.contains_key(&user.name) {
            return Err(UserDbError::DuplicateUser(user.name));
        }
        self.users.insert(user.name.clone(), user);
        Ok(())
    }

    /// All users, by name.
    pub fn iter(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// How many users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Replaces `path` with `bytes` atomically: a temporary file in the same
/// directory (mode 0600, fsync), a rename over `path`, an fsync of the
/// directory (so the rename itself is durable). On failure the old file is
/// untouched and the temporary one removed.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let base = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy());
    let tmp = dir.join(format!(".{base}.tmp-{}", std::process::id()));
    if let Err(e) = write_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&dir).and_then(|d| d.sync_all())
}

/// The directory `path` is in (`.` for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A stale file of ours (same pid, earlier crash) would block create_new.
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    // The umask can only remove bits; make the mode exact regardless.
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const PHC: &str =
        "$argon2id$v=19$m=19456,t=2,p=1$jcRg9w1mvgG7BsZ5n7sV4A$9en5JbJK/WGnnIXFgcanW6wg0EaoNXUtei5YRWCzxHo";

    fn example() -> String {
        format!(
            r#"
[[user]]
name = "alice"
roles = ["operator"]
password = "{PHC}"
totp = "JBSWY3DPEHPK3PXP"
disabled = false
cert_fingerprints = []

[[user]]
name = "bob"
roles = ["engineer", "operator"]
password = "{PHC}"
disabled = true
cert_fingerprints = ["sha256:{fp}"]
"#,
            fp = "ab".repeat(32)
        )
    }

    /// A fresh directory for one test (the identity tests share it).
    pub(crate) fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("accessgate-identity-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn parses_the_documented_example() {
        let db = UserDb::parse("secrets.toml", &example()).unwrap();
        assert_eq!(db.len(), 2);
        let alice = db.get("alice").unwrap();
        assert_eq!(alice.roles, ["operator"]);
        assert_eq!(alice.totp.as_ref().unwrap().to_base32(), "JBSWY3DPEHPK3PXP");
        assert!(!alice.disabled);
        let bob = db.get("bob").unwrap();
        assert!(bob.disabled && bob.totp.is_none());
        assert_eq!(bob.cert_fingerprints.len(), 1);
        // Debug never shows secrets.
        let dbg = format!("{db:?}");
        assert!(!dbg.contains("argon2id") && !dbg.contains("JBSW"), "{dbg}");
    }

    /// The stable-toolchain twin of `fuzz/fuzz_targets/user_db.rs`: mutated
    /// copies of the documented example (bytes changed, lines cut or
    /// repeated) end in users that render back to themselves or in errors
    /// naming the file, never a panic.
    #[test]
    fn mutated_user_files_never_panic() {
        let text = example();
        let lines: Vec<&str> = text.lines().collect();
        let mut rng = dataplane::xorshift::XorShift::new(0x0123_4567_89ab_cdef);
        let (mut parsed, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut bytes = text.as_bytes().to_vec();
            match rng.below(3) {
                0 => {
                    for _ in 0..1 + rng.below(4) {
                        let i = rng.below(bytes.len());
                        bytes[i] = (rng.next_u64() % 128) as u8;
                    }
                }
                1 => bytes = lines[..rng.below(lines.len())].join("\n").into_bytes(),
                _ => {
                    let mut l = lines.clone();
                    l.insert(rng.below(l.len()), lines[rng.below(lines.len())]);
                    bytes = l.join("\n").into_bytes();
                }
            }
            let Ok(text) = std::str::from_utf8(&bytes) else { continue };
            match UserDb::parse("fuzz.toml", text) {
                Ok(db) => {
                    let out = db.to_toml().unwrap();
                    assert_eq!(UserDb::parse("fuzz.toml", &out).unwrap().to_toml().unwrap(), out, "{text}");
                    parsed += 1;
                }
                Err(e) => {
                    assert!(e.to_string().starts_with("fuzz.toml:"), "{text}\n=> {e}");
                    refused += 1;
                }
            }
        }
        assert!(parsed > 100 && refused > 100, "{parsed} parsed, {refused} refused: both should be exercised");
    }

    #[test]
    fn every_error_is_reported_with_its_position() {
        let text = format!(
            r#"[[user]]
name = "Alice"
roles = ["operator"]
password = "{PHC}"

[[user]]
name = "bob"
roles = ["Oper ator", "x"]
password = "plaintext!"
totp = "NOT-BASE32"
cert_fingerprints = ["md5:00"]

[[user]]
name = "carol"
roles = []

[[user]]
name = "dave"
password = "{PHC}"

[[user]]
name = "dave"
password = "{PHC}"
"#
        );
        let Err(UserDbError::Invalid(errs)) = UserDb::parse("secrets.toml", &text) else {
            panic!("expected errors");
        };
        let lines: Vec<String> = errs.0.iter().map(ToString::to_string).collect();
        let want = [
            ("secrets.toml:2:8:", "user name \"Alice\""),
            ("secrets.toml:8:10:", "role \"Oper ator\""),
            ("secrets.toml:9:12:", "not a PHC"),
            ("secrets.toml:10:8:", "not base32"),
            ("secrets.toml:11:22:", "sha256:"),
            ("secrets.toml:14:8:", "neither a password nor"),
            ("secrets.toml:22:8:", "defined twice"),
        ];
        assert_eq!(lines.len(), want.len(), "{lines:#?}");
        for (line, (pos, what)) in lines.iter().zip(want) {
            assert!(line.starts_with(pos) && line.contains(what), "{line}");
        }
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = UserDb::parse("s.toml", "[[user]]\nname = \"a\"\nrole = [\"x\"]\n").unwrap_err().to_string();
        assert!(err.starts_with("s.toml:3:1:"), "{err}");
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn save_is_0600_and_load_round_trips() {
        let dir = tempdir("save");
        let path = dir.join("sub/secrets.toml");
        let db = UserDb::parse("x", &example()).unwrap();
        db.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(dir.join("sub")).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        assert_eq!(UserDb::load(&path).unwrap(), db);
        // Saving again replaces it; no temporary file is left behind.
        db.save(&path).unwrap();
        let names: Vec<_> = fs::read_dir(dir.join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["secrets.toml"]);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_readable_file_is_refused_with_the_fix() {
        let dir = tempdir("mode");
        let path = dir.join("secrets.toml");
        fs::write(&path, example()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = UserDb::load(&path).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{p} is mode 0644: it holds password hashes and TOTP secrets; run chmod 600 {p}",
                p = path.display()
            )
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(UserDb::load(&path).unwrap().len(), 2);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(UserDb::load(&path).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_file_is_empty_only_when_asked() {
        let dir = tempdir("missing");
        let path = dir.join("none.toml");
        assert!(matches!(UserDb::load(&path), Err(UserDbError::Io { .. })));
        assert!(UserDb::load_or_empty(&path).unwrap().is_empty());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_roles_duplicates_and_hints() {
        let mut db = UserDb::new();
        let roles = vec!["operator".to_string()];
        db.add(User::new("alice", &roles)).unwrap();
        assert!(matches!(db.add(User::new("alice", &roles)), Err(UserDbError::DuplicateUser(_))));
        for bad in ["", "Alice", "1alice", "al ice", "al/ice", "é", &"a".repeat(65)] {
            assert!(matches!(db.add(User::new(bad, &roles)), Err(UserDbError::BadName { .. })), "{bad:?}");
        }
        for ok in ["bob", "b.o_b-2", &"a".repeat(64)] {
            db.add(User::new(ok, &roles)).unwrap();
        }
        let bad_role = vec!["op.erator".to_string()];
        assert!(matches!(db.add(User::new("carol", &bad_role)), Err(UserDbError::BadRole { .. })));
        assert_eq!(db.require("alcie").unwrap_err().to_string(), "no user \"alcie\" (did you mean \"alice\"?)");
        assert_eq!(db.require("zed").unwrap_err().to_string(), "no user \"zed\"");
        db.require_mut("alice").unwrap().disabled = true;
        assert!(db.get("alice").unwrap().disabled);
    }
}
