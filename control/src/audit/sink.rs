//! Control-side events for the audit writer: authentication results, denied
//! flows, policy reloads and control-side anomalies.
//!
//! [`AuditSink`] is cheap to clone and safe to use from any thread (the auth
//! worker, the control thread): it posts on a bounded channel the writer
//! drains. A post that does not fit, or that is made while the writer is
//! unhealthy, is refused with [`AuditUnavailable`] so the caller can refuse
//! the session it is about: an event is either accepted (and then written)
//! or the caller knows it was not.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Sender, TrySendError};
use dataplane::auth::{AuthRequest, AuthVerdict, Credentials, Purpose};
use dataplane::io::Doorbell;

/// Control-side events one writer channel holds.
pub const SINK_CAPACITY: usize = 4096;

/// The audit trail cannot take the event (writer failing or saturated).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditUnavailable;

impl std::fmt::Display for AuditUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the audit trail cannot record events right now")
    }
}

impl std::error::Error for AuditUnavailable {}

/// One authentication attempt and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEvent {
    pub session: u64,
    /// The user name claimed or proven (empty for an unknown ticket).
    pub user: String,
    pub source: IpAddr,
    pub endpoint: SocketAddrV4,
    /// `password`, `ticket`, with `+cert` when a client certificate was shown.
    pub method: String,
    /// `login`, `resolve` or `connect`.
    pub purpose: String,
    /// Asset and service for `resolve`/`connect`.
    pub asset: Option<String>,
    pub service: Option<String>,
    pub success: bool,
    /// Why it was refused (`Reason::as_str()`).
    pub reason: Option<String>,
    pub roles: Vec<String>,
    /// The ticket used or issued (its log id, never the ticket).
    pub ticket_id: Option<String>,
    pub expires_unix: Option<u64>,
}

impl AuthEvent {
    /// What the request says (before deciding: `decide` consumes it).
    pub fn request(req: &AuthRequest) -> Self {
        // "cert": an empty password, the client certificate is the first
        // factor; "password+cert": a password on a session that also
        // presented a certificate.
        let cert = req.client_cert.is_some();
        let (user, method) = match &req.credentials {
            Credentials::Password { user, password, .. } if password.is_empty() && cert => (user.clone(), "cert"),
            Credentials::Password { user, .. } => (user.clone(), if cert { "password+cert" } else { "password" }),
            Credentials::Ticket(_) => (String::new(), if cert { "ticket+cert" } else { "ticket" }),
        };
        let (purpose, asset, service) = match &req.purpose {
            Purpose::Login => ("login", None, None),
            Purpose::Resolve { asset, service } => ("resolve", Some(asset.clone()), Some(service.clone())),
            Purpose::Connect { asset, service } => ("connect", Some(asset.clone()), Some(service.clone())),
        };
        Self {
            session: req.session,
            user,
            source: IpAddr::V4(req.source),
            endpoint: req.endpoint,
            method: method.into(),
            purpose: purpose.into(),
            asset,
            service,
            success: false,
            reason: None,
            roles: Vec::new(),
            ticket_id: None,
            expires_unix: None,
        }
    }

    /// Completes the event with the verdict.
    pub fn verdict(mut self, verdict: &AuthVerdict) -> Self {
        match verdict {
            AuthVerdict::Accept { grant, .. } => {
                self.success = true;
                self.user.clone_from(&grant.user);
                self.roles.clone_from(&grant.roles);
                self.ticket_id.clone_from(&grant.ticket_id);
                self.expires_unix = Some(grant.expires_unix);
            }
            AuthVerdict::Refuse { reason, .. } => {
                self.success = false;
                self.reason = Some(reason.as_str().to_string());
            }
        }
        self
    }
}

/// Denied traffic from `source` to `destination` for one reason, summed
/// over an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedFlow {
    pub source: IpAddr,
    pub destination: IpAddr,
    /// Destination port (TCP/UDP), if any.
    pub port: Option<u16>,
    pub reason: String,
    pub count: u64,
    /// Length of the interval in seconds.
    pub interval_s: u64,
}

/// A policy (config) reload attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyReload {
    /// The generation now in force (unchanged when refused).
    pub generation: u64,
    pub file: String,
    /// SHA-256 of the file read, hex.
    pub digest: Option<String>,
    /// Empty when the reload was accepted.
    pub errors: Vec<String>,
}

/// What the sink carries to the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlEvent {
    Auth(AuthEvent),
    DeniedFlow(DeniedFlow),
    PolicyReload(PolicyReload),
    Anomaly { kind: String, detail: String },
}

/// Posts control-side events to the audit writer (clone freely).
#[derive(Clone)]
pub struct AuditSink {
    tx: Sender<(u64, ControlEvent)>,
    healthy: Arc<AtomicBool>,
    /// Wakes the writer from its wait (one `write` to an eventfd).
    bell: Arc<Doorbell>,
}

impl AuditSink {
    pub(crate) fn new(tx: Sender<(u64, ControlEvent)>, healthy: Arc<AtomicBool>, bell: Arc<Doorbell>) -> Self {
        Self { tx, healthy, bell }
    }

    /// Whether the writer is writing (false while the disk is full, ...).
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Posts any event, stamped now.
    ///
    /// # Errors
    /// The channel is full or the writer is gone.
    pub fn post(&self, event: ControlEvent) -> Result<(), AuditUnavailable> {
        self.tx.try_send((dataplane::audit::unix_micros(), event)).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Disconnected(_) => AuditUnavailable,
        })?;
        self.bell.ring();
        Ok(())
    }

    /// Records an authentication success or failure. Accept a session only
    /// if this returned `Ok` and [`AuditSink::healthy`] is true; otherwise
    /// refuse it with `audit_unavailable`.
    ///
    /// # Errors
    /// The event was not accepted (channel full or writer gone). While the
    /// writer is unhealthy events are still accepted (held, written later).
    pub fn auth(&self, event: AuthEvent) -> Result<(), AuditUnavailable> {
        self.post(ControlEvent::Auth(event))
    }

    /// Records denied flows aggregated over an interval.
    ///
    /// # Errors
    /// The event was not accepted.
    pub fn denied_flow(&self, flow: DeniedFlow) -> Result<(), AuditUnavailable> {
        self.post(ControlEvent::DeniedFlow(flow))
    }

    /// Records a reload: `errors` empty if it was accepted.
    ///
    /// # Errors
    /// The event was not accepted.
    pub fn policy_reload(
        &self,
        generation: u64,
        file: &Path,
        digest: Option<String>,
        errors: Vec<String>,
    ) -> Result<(), AuditUnavailable> {
        self.post(ControlEvent::PolicyReload(PolicyReload {
            generation,
            file: file.display().to_string(),
            digest,
            errors,
        }))
    }

    /// Records a control-side anomaly.
    ///
    /// # Errors
    /// The event was not accepted.
    pub fn anomaly(&self, kind: &str, detail: &str) -> Result<(), AuditUnavailable> {
        self.post(ControlEvent::Anomaly { kind: kind.into(), detail: detail.into() })
    }
}

/// SHA-256 of a file, hex (for [`AuditSink::policy_reload`]).
///
/// # Errors
/// The file cannot be read.
pub fn file_digest(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    Ok(super::chain::hex(&Sha256::digest(std::fs::read(path)?)))
}

/// Sums denied flows per (source, destination, port, reason) and posts them
/// once per interval (at most `max_keys` distinct flows; the rest are
/// summed under source and destination `0.0.0.0`, reason `other_flows`).
pub struct DeniedFlows {
    interval: Duration,
    started: Instant,
    max_keys: usize,
    table: HashMap<(IpAddr, IpAddr, Option<u16>, String), u64>,
}

impl DeniedFlows {
    pub fn new(interval: Duration, max_keys: usize) -> Self {
        Self { interval, started: Instant::now(), max_keys, table: HashMap::new() }
    }

    /// Counts `n` denied packets or connections.
    pub fn add(&mut self, source: IpAddr, destination: IpAddr, port: Option<u16>, reason: &str, n: u64) {
        let key = (source, destination, port, reason.to_string());
        if self.table.len() >= self.max_keys && !self.table.contains_key(&key) {
            let any = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);
            *self.table.entry((any, any, None, "other_flows".into())).or_default() += n;
            return;
        }
        *self.table.entry(key).or_default() += n;
    }

    /// Posts the sums if the interval is over (or `force`); returns how many
    /// flows were posted. Sums that could not be posted are kept.
    pub fn flush(&mut self, sink: &AuditSink, now: Instant, force: bool) -> usize {
        if !force && now.duration_since(self.started) < self.interval {
            return 0;
        }
        let interval_s = now.duration_since(self.started).as_secs().max(1);
        let mut posted = 0;
        let mut keys: Vec<_> = self.table.keys().cloned().collect();
        keys.sort();
        for key in keys {
            let count = self.table[&key];
            let (source, destination, port, reason) = key.clone();
            let flow = DeniedFlow { source, destination, port, reason, count, interval_s };
            if sink.denied_flow(flow).is_err() {
                break;
            }
            self.table.remove(&key);
            posted += 1;
        }
        if self.table.is_empty() {
            self.started = now;
        }
        posted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, SocketAddrV4};

    #[test]
    fn auth_method_names_the_first_factor_and_a_presented_certificate() {
        let method = |credentials: Credentials, cert: bool| {
            let req = AuthRequest {
                core: 0,
                session: 1,
                source: Ipv4Addr::new(198, 18, 0, 2),
                endpoint: SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 443),
                credentials,
                purpose: Purpose::Login,
                client_cert: cert.then(|| b"der".to_vec()),
            };
            AuthEvent::request(&req).method
        };
        let password =
            |pw: &[u8]| Credentials::Password { user: "alice".into(), password: pw.to_vec(), totp: "1".into() };
        assert_eq!(method(password(b"pw"), false), "password");
        assert_eq!(method(password(b"pw"), true), "password+cert");
        assert_eq!(method(password(b""), true), "cert");
        assert_eq!(method(password(b""), false), "password");
        assert_eq!(method(Credentials::Ticket([0; 32]), false), "ticket");
        assert_eq!(method(Credentials::Ticket([0; 32]), true), "ticket+cert");
    }
}
