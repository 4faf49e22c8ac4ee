//! `accessgate user add|list|disable|enable|reset-totp|passwd|add-cert`:
//! manage the secrets file (users, roles, argon2id password hashes, TOTP
//! secrets, client-certificate fingerprints).
//!
//! Passwords are asked twice without echo (or read from one line of stdin
//! with `--password-stdin`) and never printed. Enrolling a TOTP secret prints
//! it once, as an `otpauth://` URI and a QR code to scan, or as JSON with
//! `--json`. `list` never prints a secret. Every change is saved atomically
//! with mode 0600, under an exclusive lock on `SECRETS.lock` taken after
//! any password prompt, on the file as it is then: two admins' commands do
//! not undo each other's changes.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use control::identity::password;
use control::identity::totp::{self, Secret};
use control::identity::users::{self, User, UserDb, UserDbError, DEFAULT_SECRETS};
use dataplane::wire::hello::MAX_PASSWORD_LEN;
use qrcode::render::unicode::Dense1x2;
use qrcode::QrCode;

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Manage users in the secrets file.
#[derive(Args, Debug)]
pub struct UserArgs {
    /// The secrets file (password hashes and TOTP secrets; mode 0600).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_SECRETS)]
    secrets: PathBuf,
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Add a user: set a password, enroll a TOTP secret and show its QR code.
    Add {
        /// The user name (lowercase letters, digits, '.', '_', '-').
        name: String,
        /// A role the user has (repeat for several).
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// Read the password from one line of standard input instead of
        /// prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Print {"user", "totp_secret", "otpauth_uri"} as JSON instead of
        /// the QR code.
        #[arg(long)]
        json: bool,
    },
    /// List users: name, roles, status, whether a TOTP is enrolled.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Disable a user: logins and tickets are refused.
    Disable {
        /// The user name.
        name: String,
    },
    /// Enable a disabled user.
    Enable {
        /// The user name.
        name: String,
    },
    /// Give a user a new TOTP secret (the old one stops working).
    ResetTotp {
        /// The user name.
        name: String,
        /// Print the new secret as JSON instead of the QR code.
        #[arg(long)]
        json: bool,
    },
    /// Enroll a client certificate: with it (signed by the gate's
    /// --client-ca) the user logs in with the certificate + TOTP, no
    /// password (`accessgate login --cert --key`).
    AddCert {
        /// The user name.
        name: String,
        /// The certificate (PEM; the first one in the file).
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// Set a user's password.
    Passwd {
        /// The user name.
        name: String,
        /// Read the password from one line of standard input instead of
        /// prompting.
        #[arg(long)]
        password_stdin: bool,
    },
}

/// Runs `accessgate user ...`.
pub fn user(args: &UserArgs) -> ExitCode {
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("accessgate user: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &UserArgs) -> Result<(), String> {
    let path = args.secrets.as_path();
    match &args.command {
        UserCommand::Add { name, roles, password_stdin, json } => add(path, name, roles, *password_stdin, *json),
        UserCommand::List { json } => list(path, *json),
        UserCommand::Disable { name } => set_disabled(path, name, true),
        UserCommand::Enable { name } => set_disabled(path, name, false),
        UserCommand::ResetTotp { name, json } => reset_totp(path, name, *json),
        UserCommand::Passwd { name, password_stdin } => passwd(path, name, *password_stdin),
        UserCommand::AddCert { name, cert } => add_cert(path, name, cert),
    }
}

fn add_cert(path: &Path, name: &str, cert: &Path) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .ok_or_else(|| format!("{}: no PEM certificate in it", cert.display()))?
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let fp = users::cert_fingerprint(&der);
    let added = change(path, Missing::Refuse, |db| {
        let user = db.require_mut(name).map_err(|e| e.to_string())?;
        let new = !user.cert_fingerprints.contains(&fp);
        if new {
            user.cert_fingerprints.push(fp.clone());
        }
        Ok(new)
    })?;
    if added {
        println!("user {name:?}: certificate {fp} enrolled (reload the gate to use it)");
    } else {
        println!("user {name:?} already has certificate {fp}");
    }
    Ok(())
}

/// What [`change`] does when the secrets file does not exist.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Missing {
    /// Start an empty one (`add`).
    Create,
    /// Refuse, saying how to start one.
    Refuse,
}

/// Applies `apply` to the secrets file as it is now and saves it, under an
/// exclusive lock on `PATH.lock` held from the load to the save: a change
/// another `user` command saved meanwhile (while this one waited for a
/// password, say) is kept, not undone. Nothing is saved when `apply`
/// fails.
fn change<T>(path: &Path, missing: Missing, apply: impl FnOnce(&mut UserDb) -> Result<T, String>) -> Result<T, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut lock_path = path.as_os_str().to_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("{}: cannot lock: {e}", lock_path.display()))?;
    let mut db = match missing {
        Missing::Create => UserDb::load_or_empty(path).map_err(|e| e.to_string())?,
        Missing::Refuse => load(path)?,
    };
    let out = apply(&mut db)?;
    db.save(path).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Loads an existing secrets file, saying how to start one if missing.
fn load(path: &Path) -> Result<UserDb, String> {
    match UserDb::load(path) {
        Err(UserDbError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Err(format!(
            "{} does not exist (create it with: accessgate user add NAME --role ROLE --secrets {})",
            path.display(),
            path.display()
        )),
        other => other.map_err(|e| e.to_string()),
    }
}

fn add(path: &Path, name: &str, roles: &[String], password_stdin: bool, json: bool) -> Result<(), String> {
    users::check_name(name).map_err(|why| format!("bad user name {name:?}: {why}"))?;
    let mut unique: Vec<String> = Vec::new();
    for role in roles {
        users::check_role(role).map_err(|why| format!("bad role name {role:?}: {why}"))?;
        if !unique.contains(role) {
            unique.push(role.clone());
        }
    }
    let exists = |db: &UserDb| {
        db.get(name).map_or(Ok(()), |_| {
            Err(format!(
                "user {name:?} already exists in {} (change it with passwd, reset-totp, enable or disable)",
                path.display()
            ))
        })
    };
    // Before the prompt, to fail early; again under the lock.
    exists(&UserDb::load_or_empty(path).map_err(|e| e.to_string())?)?;
    let phc = new_password_hash(name, password_stdin)?;
    let secret = Secret::generate().map_err(|e| format!("cannot generate a TOTP secret: {e}"))?;
    let mut user = User::new(name, &unique);
    user.password = Some(phc);
    user.totp = Some(secret.clone());
    change(path, Missing::Create, |db| {
        exists(db)?;
        db.add(user).map_err(|e| e.to_string())
    })?;
    if !json {
        println!("user {name:?} added to {} with roles {}", path.display(), unique.join(", "));
    }
    enrollment(name, &secret, json)
}

fn list(path: &Path, json: bool) -> Result<(), String> {
    let db = load(path)?;
    if json {
        let users: Vec<serde_json::Value> = db
            .iter()
            .map(|u| {
                serde_json::json!({
                    "user": u.name,
                    "roles": u.roles,
                    "disabled": u.disabled,
                    "totp": u.totp.is_some(),
                    "password": u.password.is_some(),
                    "cert_fingerprints": u.cert_fingerprints.len(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(users));
        return Ok(());
    }
    if db.is_empty() {
        println!("no users in {}", path.display());
        return Ok(());
    }
    let width = db.iter().map(|u| u.name.len()).max().unwrap_or(4).max(4);
    let roles_width = db.iter().map(|u| u.roles.join(",").len()).max().unwrap_or(5).max(5);
    println!("{:width$}  {:roles_width$}  {:8}  TOTP", "NAME", "ROLES", "STATUS");
    for u in db.iter() {
        println!(
            "{:width$}  {:roles_width$}  {:8}  {}",
            u.name,
            u.roles.join(","),
            if u.disabled { "disabled" } else { "enabled" },
            if u.totp.is_some() { "yes" } else { "no" },
        );
    }
    Ok(())
}

fn set_disabled(path: &Path, name: &str, disabled: bool) -> Result<(), String> {
    let word = if disabled { "disabled" } else { "enabled" };
    let changed = change(path, Missing::Refuse, |db| {
        let user = db.require_mut(name).map_err(|e| e.to_string())?;
        Ok(std::mem::replace(&mut user.disabled, disabled) != disabled)
    })?;
    if changed {
        println!("user {name:?} {word}");
    } else {
        println!("user {name:?} is already {word}");
    }
    Ok(())
}

fn reset_totp(path: &Path, name: &str, json: bool) -> Result<(), String> {
    let secret = Secret::generate().map_err(|e| format!("cannot generate a TOTP secret: {e}"))?;
    change(path, Missing::Refuse, |db| {
        db.require_mut(name).map_err(|e| e.to_string())?.totp = Some(secret.clone());
        Ok(())
    })?;
    if !json {
        println!("user {name:?} has a new TOTP secret; the old one no longer works");
    }
    enrollment(name, &secret, json)
}

fn passwd(path: &Path, name: &str, password_stdin: bool) -> Result<(), String> {
    // Fail on an unknown name before asking for a password.
    load(path)?.require(name).map_err(|e| e.to_string())?;
    let phc = new_password_hash(name, password_stdin)?;
    change(path, Missing::Refuse, |db| {
        db.require_mut(name).map_err(|e| e.to_string())?.password = Some(phc);
        Ok(())
    })?;
    println!("password of user {name:?} changed");
    Ok(())
}

/// Reads a new password (prompt twice, or one stdin line), checks it and
/// returns its argon2id hash.
fn new_password_hash(name: &str, from_stdin: bool) -> Result<String, String> {
    let password = if from_stdin {
        let mut line = String::new();
        let n = io::stdin().lock().read_line(&mut line).map_err(|e| format!("cannot read standard input: {e}"))?;
        if n == 0 {
            return Err("no password on standard input".into());
        }
        let trimmed = line.strip_suffix('\n').unwrap_or(&line);
        trimmed.strip_suffix('\r').unwrap_or(trimmed).to_string()
    } else {
        let no_tty = |e: io::Error| format!("cannot prompt for a password ({e}); use --password-stdin");
        let first = rpassword::prompt_password(format!("new password for {name}: ")).map_err(no_tty)?;
        check_password(&first)?;
        let second = rpassword::prompt_password("again: ").map_err(no_tty)?;
        if first != second {
            return Err("the passwords do not match".into());
        }
        first
    };
    check_password(&password)?;
    password::hash(password.as_bytes()).map_err(|e| e.to_string())
}

fn check_password(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("the password has {chars} characters; at least {MIN_PASSWORD_CHARS} are needed"));
    }
    if password.len() > MAX_PASSWORD_LEN {
        return Err(format!(
            "the password is {} bytes; at most {MAX_PASSWORD_LEN} fit in the access hello",
            password.len()
        ));
    }
    Ok(())
}

/// Shows a new TOTP secret once: QR code and URI, or JSON.
fn enrollment(name: &str, secret: &Secret, json: bool) -> Result<(), String> {
    let uri = totp::otpauth_uri(name, secret);
    if json {
        let out = serde_json::json!({
            "user": name,
            "totp_secret": secret.to_base32(),
            "otpauth_uri": uri,
        });
        println!("{out}");
        return Ok(());
    }
    let code = QrCode::new(uri.as_bytes()).map_err(|e| format!("cannot draw the QR code: {e}"))?;
    // Inverted, so the code reads on a dark terminal background.
    let image = code.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build();
    println!("\nScan this with an authenticator app (TOTP, SHA-1, 6 digits, 30 s):\n");
    println!("{image}\n");
    println!("or enter it by hand: {uri}");
    println!("secret (base32): {}", secret.to_base32());
    println!("\nThis is the only time the secret is shown.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules() {
        assert!(check_password("short").unwrap_err().contains("at least 12"));
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password("ééééééééééé").is_err(), "11 characters, 22 bytes");
        assert!(check_password(&"x".repeat(257)).unwrap_err().contains("at most 256"));
    }

    #[test]
    fn args_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            user: UserArgs,
        }
        let cli =
            Cli::try_parse_from(["x", "add", "alice", "--role", "operator", "--role", "engineer", "--json"]).unwrap();
        assert_eq!(cli.user.secrets, PathBuf::from(DEFAULT_SECRETS));
        let UserCommand::Add { roles, json, .. } = cli.user.command else { panic!() };
        assert_eq!(roles, ["operator", "engineer"]);
        assert!(json);
        assert!(Cli::try_parse_from(["x", "add", "alice"]).is_err(), "a role is required");
        let cli = Cli::try_parse_from(["x", "list", "--secrets", "/tmp/s.toml"]).unwrap();
        assert_eq!(cli.user.secrets, PathBuf::from("/tmp/s.toml"));
    }
}
