//! Access Gate's control plane: everything that touches files and the
//! outside world, none of which may run on a dp core.
//!
//! - [`config`]: the TOML config, validated with every error at once.
//! - [`Control`]: the control thread's state: publishes snapshots through
//!   `ArcSwap` (reload = parse + validate + store, a bad file keeps the old
//!   snapshot), sums the cores' counters, drains their session events into
//!   the log, and answers the management socket ([`api`]).
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod auth;
pub mod client;
pub mod config;
pub mod identity;
pub mod pki;
pub mod policy;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam::queue::ArrayQueue;
use dataplane::core::SessionEvent;
use dataplane::counters::{CoreCounters, CounterTotals};
use dataplane::snapshot::{SharedSnapshot, Snapshot};

pub use config::{Config, ConfigError, ConfigErrors};

/// Session events a core may queue before the control thread drains them.
pub const EVENT_QUEUE: usize = 4096;

/// The control thread's view of the running gate.
pub struct Control {
    path: Option<PathBuf>,
    tls_source: Option<TlsSource>,
    tls: Option<dataplane::tls::TlsConfig>,
    /// The users, and the secrets file a reload re-reads them from.
    authenticator: Option<(Arc<identity::Authenticator>, Option<PathBuf>)>,
    /// When each user's tickets were last revoked (`ctl revoke`, or removed
    /// or disabled by a reload): their sessions granted until then end.
    revoked_at: std::collections::HashMap<String, u64>,
    audit: Option<audit::AuditSink>,
    audit_queues: Vec<Arc<dataplane::audit::AuditQueue>>,
    audit_health: Option<Arc<std::sync::atomic::AtomicBool>>,
    audit_status: Option<Arc<audit::Status>>,
    shared: SharedSnapshot,
    cores: Vec<(Arc<CoreCounters>, Arc<ArrayQueue<SessionEvent>>)>,
    reload_failures: u64,
}

/// Where the gate's TLS material lives.
#[derive(Debug, Clone)]
pub struct TlsSource {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// CA for optional client certificates (mTLS).
    pub client_ca: Option<PathBuf>,
    /// Also accept TLS 1.2 (off by default).
    pub tls12: bool,
}

impl TlsSource {
    /// Reads and compiles the files.
    ///
    /// # Errors
    /// A file is missing, unreadable or does not parse; the message names it.
    pub fn load(&self) -> Result<dataplane::tls::TlsConfig, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let cert = read(&self.certificate)?;
        let key = read(&self.key)?;
        let ca = self.client_ca.as_ref().map(read).transpose()?;
        dataplane::tls::server_config(&cert, &key, ca.as_deref(), self.tls12)
            .map_err(|e| format!("{} / {}: {e}", self.certificate.display(), self.key.display()))
    }
}

/// Why a reload was refused (the running snapshot stays).
#[derive(Debug)]
pub enum ReloadError {
    /// The file has errors.
    Invalid(ConfigErrors),
    /// The file changes what the running cores were built with.
    NeedsRestart(String),
    /// The gate was started without a config file.
    NoFile,
    /// The config was published as `generation`, but the secrets file or
    /// the TLS material named in `what` was refused: the running ones stay.
    Partial { generation: u64, what: String },
}

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(e) => write!(f, "{e}"),
            Self::NeedsRestart(what) => write!(f, "{what} changed: that needs a restart (the running config is kept)"),
            Self::NoFile => write!(f, "the gate runs on an embedded config; there is no file to reload"),
            Self::Partial { generation, what } => {
                write!(f, "the config is in force as generation {generation}, but {what}")
            }
        }
    }
}

impl Control {
    /// Starts from a loaded config (generation 1).
    pub fn new(path: Option<PathBuf>, config: &Config) -> Self {
        let mut snap = config.snapshot.clone();
        snap.generation = 1;
        Self {
            path,
            tls_source: None,
            tls: None,
            authenticator: None,
            revoked_at: std::collections::HashMap::new(),
            audit: None,
            audit_queues: Vec::new(),
            audit_health: None,
            audit_status: None,
            shared: Arc::new(ArcSwap::from_pointee(snap)),
            cores: Vec::new(),
            reload_failures: 0,
        }
    }

    /// Loads the TLS certificate and key (and client CA) and puts them in
    /// force; a reload re-reads them.
    ///
    /// # Errors
    /// A file is missing or does not parse.
    pub fn set_tls(&mut self, source: TlsSource) -> Result<(), String> {
        let config = source.load()?;
        self.tls_source = Some(source);
        self.set_tls_config(config);
        Ok(())
    }

    /// Recompiles the policy's schedules before their horizon runs out
    /// (call every few seconds). Returns the new generation, if any.
    pub fn refresh_policy(&mut self, now: u64) -> Option<u64> {
        let snap = self.shared.load_full();
        if !snap.policy.needs_refresh(now) {
            return None;
        }
        let mut next = (*snap).clone();
        next.policy = Arc::new(policy::refresh(&snap.policy, now));
        next.generation = snap.generation + 1;
        let generation = next.generation;
        self.shared.store(Arc::new(next));
        log::info!("policy schedules recompiled for the days ahead: generation {generation}");
        Some(generation)
    }

    /// Records reloads (accepted or refused) in the audit trail.
    pub fn set_audit(&mut self, sink: audit::AuditSink) {
        self.audit = Some(sink);
    }

    /// Lets `stats` show the audit trail's state: the writer's health, how
    /// often the cores' queues held sessions back, and how far the disk is
    /// behind.
    pub fn watch_audit(
        &mut self,
        queues: Vec<Arc<dataplane::audit::AuditQueue>>,
        health: Arc<std::sync::atomic::AtomicBool>,
        status: Arc<audit::Status>,
    ) {
        self.audit_queues = queues;
        self.audit_health = Some(health);
        self.audit_status = Some(status);
    }

    /// The audit trail's counters for `stats`, if there is one.
    pub fn audit_state(&self) -> Option<Vec<(&'static str, u64)>> {
        use std::sync::atomic::Ordering::{Acquire, Relaxed};
        let health = self.audit_health.as_ref()?;
        let mut out = vec![
            ("audit_healthy", u64::from(health.load(Acquire))),
            ("audit_queue_full", self.audit_queues.iter().map(|q| q.full()).sum()),
            ("audit_stalls", self.audit_queues.iter().map(|q| q.stalls()).sum()),
        ];
        if let Some(s) = &self.audit_status {
            out.push(("audit_seq", s.seq.load(Relaxed)));
            out.push(("audit_synced_seq", s.synced_seq.load(Relaxed)));
            out.push(("audit_pending_bytes", s.pending_bytes.load(Relaxed)));
            out.push(("audit_forwarded", s.forwarded.load(Relaxed)));
            out.push(("audit_forward_dropped", s.forward_dropped.load(Relaxed)));
        }
        Some(out)
    }

    /// Lets reloads re-read the users from `secrets` (when given) and the
    /// management socket revoke tickets, and publishes the users' standing
    /// for the sessions to follow from now on.
    pub fn set_authenticator(&mut self, authenticator: Arc<identity::Authenticator>, secrets: Option<PathBuf>) {
        self.authenticator = Some((authenticator, secrets));
        let users = self.user_states();
        self.amend(|snap| snap.users = users);
    }

    /// Changes the snapshot in force in place, with no new generation (set
    /// up before any session depends on what changes).
    fn amend(&self, change: impl FnOnce(&mut Snapshot)) {
        let mut snap = (**self.shared.load()).clone();
        change(&mut snap);
        self.shared.store(Arc::new(snap));
    }

    /// Revokes every ticket of `user` and ends their open sessions (a new
    /// generation: each session checks its user at its next step); how many
    /// tickets (`None`: no authenticator).
    pub fn revoke_user(&mut self, user: &str) -> Option<usize> {
        let n = self.authenticator.as_ref().map(|(a, _)| a.revoke_user(user))?;
        self.revoked_at.insert(user.to_string(), identity::unix_now());
        self.republish();
        Some(n)
    }

    /// Whether `user` is a user of the gate (`None`: no authenticator).
    pub fn has_user(&self, user: &str) -> Option<bool> {
        let (auth, _) = self.authenticator.as_ref()?;
        Some(auth.users().iter().any(|u| u.name == user))
    }

    /// The enabled users' roles and revocation times, as sessions see them;
    /// `None` without an authenticator.
    fn user_states(&self) -> Option<Arc<dataplane::snapshot::UserStates>> {
        let (auth, _) = self.authenticator.as_ref()?;
        let mut states = dataplane::snapshot::UserStates::default();
        for user in auth.users().iter().filter(|u| !u.disabled) {
            let revoked_at = self.revoked_at.get(&user.name).copied().unwrap_or(0);
            states.insert(&user.name, dataplane::snapshot::UserState { roles: user.roles.clone(), revoked_at });
        }
        Some(Arc::new(states))
    }

    /// The snapshot in force again, as a new generation (the users changed).
    fn republish(&mut self) {
        let snap = (**self.shared.load()).clone();
        if let Err(e) = self.publish(snap) {
            log::error!("cannot publish the users' change: {e}");
        }
    }

    /// Puts an already built TLS configuration in force (tests, demo).
    pub fn set_tls_config(&mut self, config: dataplane::tls::TlsConfig) {
        self.tls = Some(config.clone());
        self.amend(|snap| snap.tls = Some(config));
    }

    /// The snapshot handle the cores load from.
    pub fn shared(&self) -> SharedSnapshot {
        self.shared.clone()
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.load_full()
    }

    /// Registers a core's counters and event queue; returns them for the core.
    pub fn add_core(&mut self) -> (Arc<CoreCounters>, Arc<ArrayQueue<SessionEvent>>) {
        let pair = (Arc::new(CoreCounters::default()), Arc::new(ArrayQueue::new(EVENT_QUEUE)));
        self.cores.push(pair.clone());
        pair
    }

    /// Counters summed over cores, plus the control thread's own.
    pub fn totals(&self) -> CounterTotals {
        CounterTotals::sum(self.cores.iter().map(|(c, _)| c.as_ref()))
    }

    /// Reload failures since start.
    pub fn reload_failures(&self) -> u64 {
        self.reload_failures
    }

    /// Re-reads the config file and publishes it if valid and compatible.
    ///
    /// # Errors
    /// The file is invalid or changes the structure; the old snapshot stays.
    pub fn reload(&mut self) -> Result<u64, ReloadError> {
        let Some(path) = self.path.clone() else {
            return Err(ReloadError::NoFile);
        };
        let standing = self.user_states();
        // What was refused besides the config: the answer says so, not "ok".
        let mut refused: Vec<String> = Vec::new();
        if let Some((auth, Some(secrets))) = &self.authenticator {
            match identity::UserDb::load(secrets) {
                Ok(users) => {
                    let n = users.len();
                    // Users removed or disabled: their sessions end too, even
                    // if a later reload brings them back before they step.
                    let now = identity::unix_now();
                    for old in auth.users().iter().filter(|u| !u.disabled) {
                        if users.get(&old.name).is_none_or(|u| u.disabled) {
                            self.revoked_at.insert(old.name.clone(), now);
                        }
                    }
                    let revoked = auth.set_users(users);
                    log::info!("reload: {n} user(s) from {}; {revoked} ticket(s) revoked", secrets.display());
                }
                Err(e) => {
                    log::error!("reload: users not reloaded, keeping the running ones: {e}");
                    refused.push(format!("the users were not reloaded ({e}); the running ones stay"));
                }
            }
        }
        if let Some(source) = &self.tls_source {
            match source.load() {
                Ok(c) => self.tls = Some(c),
                Err(e) => {
                    log::error!("reload: TLS material not reloaded, keeping the running certificate: {e}");
                    refused.push(format!("the TLS material was not reloaded ({e}); the running certificate stays"));
                }
            }
        }
        let result = config::load(&path).map_err(ReloadError::Invalid).and_then(|c| self.publish(c.snapshot));
        let result = match result {
            Ok(generation) if !refused.is_empty() => Err(ReloadError::Partial { generation, what: refused.join("; ") }),
            other => other,
        };
        if let Err(e) = &result {
            self.reload_failures += 1;
            log::error!("reload of {} refused: {e}", path.display());
            // The running config stays; a change of the users does not wait
            // (without one, nothing is published).
            if !matches!(e, ReloadError::Partial { .. }) && self.user_states() != standing {
                self.republish();
            }
        }
        if let Some(sink) = &self.audit {
            let generation = self.shared.load().generation;
            let errors = match &result {
                Ok(_) => Vec::new(),
                Err(ReloadError::Invalid(errs)) => errs.0.iter().map(ToString::to_string).collect(),
                Err(e) => vec![e.to_string()],
            };
            if sink.policy_reload(generation, &path, audit::file_digest(&path).ok(), errors).is_err() {
                // Not silent: the trail misses this reload, the log has it.
                log::error!(
                    "reload of {} ({}, generation {generation}): its audit record was refused (the audit writer's queue is full or the writer is gone)",
                    path.display(),
                    if result.is_ok() { "applied" } else { "refused" }
                );
            }
        }
        result
    }

    /// Publishes `snap` as the next generation if it keeps links and
    /// segments, and what the cores built their stacks with.
    ///
    /// # Errors
    /// Links or segments differ from the running ones, or the north
    /// gateway, or the login endpoint's address (its port may change).
    pub fn publish(&mut self, mut snap: Snapshot) -> Result<u64, ReloadError> {
        let old = self.shared.load();
        if snap.links != old.links {
            return Err(ReloadError::NeedsRestart("the set of interfaces".into()));
        }
        if snap.segments != old.segments || snap.north_address != old.north_address || snap.north_vlan != old.north_vlan
        {
            return Err(ReloadError::NeedsRestart("a segment or the north addressing".into()));
        }
        // The stacks route by the north gateway and answer for the login
        // address (built once, `core::build_segments`): a reload accepted
        // with new ones would be in force everywhere but there.
        if snap.north_gateway != old.north_gateway {
            return Err(ReloadError::NeedsRestart("the north gateway".into()));
        }
        if snap.login.map(|l| *l.ip()) != old.login.map(|l| *l.ip()) {
            return Err(ReloadError::NeedsRestart("the login endpoint's address".into()));
        }
        snap.generation = old.generation + 1;
        snap.tls = self.tls.clone();
        snap.users = self.user_states();
        let generation = snap.generation;
        self.shared.store(Arc::new(snap));
        log::info!("config generation {generation} published");
        Ok(generation)
    }

    /// Drains the cores' session events, handing each to `sink`.
    pub fn drain_events(&self, mut sink: impl FnMut(&SessionEvent)) -> usize {
        let mut n = 0;
        for (_, q) in &self.cores {
            while let Some(ev) = q.pop() {
                sink(&ev);
                n += 1;
            }
        }
        n
    }
}

/// The log line for a session event (no secrets: user names and reasons only).
pub fn describe(ev: &SessionEvent) -> String {
    match ev {
        SessionEvent::Accepted { id, client, endpoint } => format!("session {id:#x} accepted: {client} -> {endpoint}"),
        SessionEvent::Opened { id, user, roles, client, endpoint, asset, tls, ticket } => format!(
            "session {id:#x} open: user {user} (roles {}) {client} -> {endpoint} -> asset {asset} [{} {}]{}",
            roles.join(","),
            tls.0,
            tls.1,
            ticket.as_ref().map(|t| format!(" ticket {t}")).unwrap_or_default()
        ),
        SessionEvent::Closed { id, reason, bytes_up, bytes_down, micros, detail } => format!(
            "session {id:#x} closed: {}{} ({bytes_up} bytes up, {bytes_down} bytes down, {:.3} s)",
            reason.as_str(),
            detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default(),
            *micros as f64 / 1e6
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::{password, User, UserDb};

    /// A reload whose secrets file is refused does not answer "ok": the
    /// operator who disabled bob learns the change did not take (found by a
    /// review: the config was published and the answer was "ok generation
    /// 2" while bob stayed enabled), and it counts as a reload failure.
    #[test]
    fn a_reload_whose_users_were_refused_is_not_ok() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::audit::testdir("control-secrets-refused");
        let (cfg_path, secrets) = (dir.join("lab.toml"), dir.join("users.secrets"));
        std::fs::write(&cfg_path, include_str!("../../config/lab.toml")).unwrap();
        let users = |bob_disabled: bool| {
            let mut db = UserDb::new();
            for (name, role) in [("alice", "operator"), ("bob", "viewer")] {
                let mut u = User::new(name, &[role.to_string()]);
                u.password = Some(password::tests::cheap(b"pw"));
                u.disabled = name == "bob" && bob_disabled;
                db.add(u).unwrap();
            }
            db.save(&secrets).unwrap();
            db
        };
        let config = config::load(&cfg_path).unwrap();
        let mut control = Control::new(Some(cfg_path.clone()), &config);
        control.set_authenticator(Arc::new(identity::Authenticator::new(users(false))), Some(secrets.clone()));
        users(true);
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
        let result = control.reload();
        assert!(control.snapshot().users.as_ref().unwrap().get("bob").is_some(), "bob is still enabled");
        let e = result.expect_err("not ok");
        assert!(matches!(e, ReloadError::Partial { .. }), "{e}");
        assert!(e.to_string().contains("the users were not reloaded"), "{e}");
        assert_eq!(control.reload_failures(), 1);
    }

    /// The users' standing a reload or a revocation publishes for the open
    /// sessions: removed or disabled users are gone, and come back marked
    /// revoked (their older sessions still end); `ctl revoke` marks the
    /// user; a reload whose config is refused still publishes the users.
    #[test]
    fn reloads_and_revocations_publish_the_users_standing() {
        let dir = crate::audit::testdir("control-users");
        let (cfg_path, secrets) = (dir.join("lab.toml"), dir.join("users.secrets"));
        let lab = include_str!("../../config/lab.toml");
        std::fs::write(&cfg_path, lab).unwrap();
        let users = |disabled: &[&str]| {
            let mut db = UserDb::new();
            for (name, role) in [("alice", "operator"), ("bob", "viewer")] {
                let mut u = User::new(name, &[role.to_string()]);
                u.password = Some(password::tests::cheap(b"pw"));
                u.disabled = disabled.contains(&name);
                db.add(u).unwrap();
            }
            db.save(&secrets).unwrap();
            db
        };
        let config = config::load(&cfg_path).unwrap();
        let mut control = Control::new(Some(cfg_path.clone()), &config);
        control.set_authenticator(Arc::new(identity::Authenticator::new(users(&[]))), Some(secrets.clone()));
        let standing = |c: &Control, name: &str| c.snapshot().users.as_ref().unwrap().get(name).cloned();
        assert_eq!(standing(&control, "alice").map(|u| (u.roles, u.revoked_at)), Some((vec!["operator".into()], 0)));
        let start = identity::unix_now();
        users(&["alice"]);
        control.reload().unwrap();
        assert_eq!(standing(&control, "alice"), None, "disabled: gone");
        users(&[]);
        control.reload().unwrap();
        assert!(standing(&control, "alice").is_some_and(|u| u.revoked_at >= start), "back, marked revoked");
        assert_eq!(standing(&control, "bob").map(|u| u.revoked_at), Some(0), "bob untouched");
        let generation = control.snapshot().generation;
        assert_eq!(control.revoke_user("bob"), Some(0));
        assert!(standing(&control, "bob").is_some_and(|u| u.revoked_at >= start));
        assert_eq!(control.snapshot().generation, generation + 1, "a new generation for the sessions to see");
        // A config the reload refuses: the users' change is published anyway.
        std::fs::write(&cfg_path, format!("{lab}\n[[nonsense]]\n")).unwrap();
        users(&["bob"]);
        assert!(control.reload().is_err());
        assert_eq!(standing(&control, "bob"), None);
        assert_eq!(control.snapshot().generation, generation + 2);
        // Refused again, the users as they were: nothing is published.
        assert!(control.reload().is_err());
        assert_eq!(control.snapshot().generation, generation + 2, "a broken file is not published");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
