//! The auth worker: the control-side thread that answers the dp cores'
//! authentication requests (argon2id, TOTP, tickets, lockout), so none of
//! that slow work ever runs on a dp core.
//!
//! Authorization: the compiled policy in the snapshot decides whether the
//! user's roles may connect ([`Op::Connect`]) to the asset's service now.
//! An accepted session's `expires_unix` is the earliest of the ticket's
//! expiry, the end of the permitting rule's window, and the rule's
//! `max_session_secs`; `granted` lists the operations the policy allows
//! there now.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::sync::Parker;
use dataplane::auth::{AuthChannel, AuthRequest, AuthVerdict, Credentials, Grant, Purpose};
use dataplane::policy::{Decision, Denial, Op, Permit, Query, Since};
use dataplane::snapshot::{SharedSnapshot, Snapshot};
use dataplane::wire::hello::Reason;

use crate::audit::{AuditSink, AuthEvent};
use crate::identity::tickets::{short_id, ticket_id};
use crate::identity::{unix_now, Authenticator, Identity};

/// Answers authentication requests for every core.
pub struct AuthWorker {
    pub authenticator: Arc<Authenticator>,
    shared: SharedSnapshot,
    channels: Vec<Arc<AuthChannel>>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
    audit: Option<AuditSink>,
}

impl AuthWorker {
    /// A worker over `channels` (one per core).
    pub fn new(authenticator: Arc<Authenticator>, shared: SharedSnapshot, channels: Vec<Arc<AuthChannel>>) -> Self {
        Self { authenticator, shared, channels, clock: Arc::new(unix_now), audit: None }
    }

    /// Uses `clock` instead of the system clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        self.clock = clock;
        self
    }

    /// Answers every request waiting now. Returns how many.
    pub fn serve_pending(&mut self) -> usize {
        let mut served = 0;
        for i in 0..self.channels.len() {
            let channel = self.channels[i].clone();
            while let Some(req) = channel.requests.pop() {
                let verdict = self.decide_and_record(req);
                // The verdict queue is as deep as the request queue.
                let _ = channel.verdicts.push(verdict);
                channel.doorbell.ring();
                served += 1;
            }
        }
        served
    }

    /// Records every authentication (success or failure, never secrets) in
    /// the audit trail; while the trail cannot be written, new sessions are
    /// refused with `audit_unavailable`.
    pub fn with_audit(mut self, sink: AuditSink) -> Self {
        self.audit = Some(sink);
        self
    }

    fn decide_and_record(&mut self, req: AuthRequest) -> AuthVerdict {
        let Some(sink) = self.audit.clone() else { return self.decide(req) };
        let event = AuthEvent::request(&req);
        let session = req.session;
        let refuse = AuthVerdict::Refuse { session, reason: Reason::AuditUnavailable, retry_after: None };
        let mut verdict = self.decide(req);
        if matches!(verdict, AuthVerdict::Accept { .. }) && !sink.healthy() {
            log::error!("auth: session refused: the audit trail cannot be written");
            verdict = refuse.clone();
        }
        if sink.auth(event.verdict(&verdict)).is_err() && matches!(verdict, AuthVerdict::Accept { .. }) {
            verdict = refuse;
        }
        verdict
    }

    /// Runs until `stop`, sleeping until a core posts a request.
    pub fn run(mut self, parker: Parker, stop: Arc<AtomicBool>) {
        let mut last_purge = 0;
        while !stop.load(Ordering::Relaxed) {
            if self.serve_pending() == 0 {
                parker.park_timeout(Duration::from_millis(100));
            }
            let now = (self.clock)();
            if now > last_purge + 60 {
                self.authenticator.purge(now);
                last_purge = now;
            }
        }
    }

    /// Decides one request. Never logs secrets: user names and reasons only.
    pub fn decide(&mut self, req: AuthRequest) -> AuthVerdict {
        let snap = self.shared.load_full();
        let mut verdict = self.decide_on(&snap, req);
        if let AuthVerdict::Accept { grant, .. } = &mut verdict {
            grant.generation = snap.generation;
        }
        verdict
    }

    fn decide_on(&mut self, snap: &Snapshot, mut req: AuthRequest) -> AuthVerdict {
        let now = (self.clock)();
        let session = req.session;
        let refuse = |reason: Reason, retry_after: Option<u32>| AuthVerdict::Refuse { session, reason, retry_after };
        let source = IpAddr::V4(req.source);
        // (identity, the ticket's (issued, expires), its id for the logs)
        let (identity, credentials_times, ticket_id_text) = match &mut req.credentials {
            Credentials::Password { user, password, totp } => {
                let cert = req.client_cert.as_deref();
                let result = self.authenticator.login_with_cert(user, password, totp, cert, source, now);
                password.fill(0);
                match result {
                    Ok(identity) => (identity, None, None),
                    Err(refusal) => {
                        log::warn!("auth: {user} from {source} refused: {}", refusal.reason.as_str());
                        return refuse(refusal.reason, refusal.retry_after);
                    }
                }
            }
            Credentials::Ticket(ticket) => match self.authenticator.redeem(ticket, now) {
                Ok(r) => (r.identity, Some((r.issued, r.expires)), Some(short_id(&r.id))),
                Err(refusal) => return refuse(refusal.reason, refusal.retry_after),
            },
        };
        // Credentials given now count as a ticket issued now. A ticket lives
        // at most the gate's ticket_lifetime_secs in force: a reload that
        // lowers it shortens the tickets already issued.
        let (issued, ticket_expires) = credentials_times.unwrap_or((now, now + snap.ticket_lifetime));
        let ticket_expires = ticket_expires.min(issued.saturating_add(snap.ticket_lifetime));
        if now >= ticket_expires {
            log::warn!("auth: {:?}'s ticket is older than the gate's ticket lifetime now", identity.user);
            return refuse(Reason::TicketExpired, None);
        }
        // For the rules' session limits: a session granted now.
        let since = Since { granted: now, ticket_issued: issued };
        match req.purpose {
            Purpose::Login => {
                let Credentials::Password { .. } = req.credentials else {
                    // A ticket cannot mint a ticket: log in again.
                    return refuse(Reason::BadCredentials, None);
                };
                match self.authenticator.issue_ticket(&identity, snap.ticket_lifetime, now) {
                    Ok((ticket, expires)) => {
                        let id = short_id(&ticket_id(&ticket));
                        accept(
                            session,
                            (now, now),
                            &identity,
                            expires,
                            identity.roles.join(","),
                            Some(ticket),
                            Some(id),
                        )
                    }
                    Err(e) => {
                        log::error!("auth: cannot issue a ticket: {e}");
                        refuse(Reason::AuditUnavailable, None)
                    }
                }
            }
            Purpose::Resolve { asset, service } => match find_service(snap, &asset, &service) {
                None => refuse(Reason::UnknownAsset, None),
                Some(e) => {
                    match permitted(snap, e, &identity, now, Some(since)) {
                        // As at connect: the rules want a younger ticket,
                        // and logging in again is the answer.
                        Err(Denial::LimitReached(_)) => refuse(Reason::TicketExpired, None),
                        Err(_) => refuse(Reason::NotAuthorized, None),
                        Ok(_) => accept(
                            session,
                            (now, issued),
                            &identity,
                            ticket_expires,
                            snap.endpoints[e].overlay.to_string(),
                            None,
                            ticket_id_text,
                        ),
                    }
                }
            },
            Purpose::Connect { asset, service } => {
                let Some(e) = snap.endpoint_at(*req.endpoint.ip(), req.endpoint.port()) else {
                    return refuse(Reason::UnknownAsset, None);
                };
                let ep = &snap.endpoints[e];
                if ep.asset != asset || ep.service != service {
                    return refuse(Reason::UnknownAsset, None);
                }
                let permit = match permitted(snap, e, &identity, now, Some(since)) {
                    Ok(p) => p,
                    Err(Denial::LimitReached(_)) => {
                        // Every rule that would let the user in accepts
                        // only younger tickets (ticket_lifetime_secs).
                        log::warn!("auth: {:?}'s ticket is older than {asset}/{service}'s rules accept", identity.user);
                        return refuse(Reason::TicketExpired, None);
                    }
                    Err(denial) => {
                        log::warn!(
                            "auth: {:?} not authorized for {asset}/{service}: {}",
                            identity.user,
                            denial.as_str()
                        );
                        return refuse(Reason::NotAuthorized, None);
                    }
                };
                // The permit lasts until the end of its window and of its
                // rule's max_session_secs and ticket_lifetime_secs.
                let expires = ticket_expires.min(permit.until);
                let granted = granted(snap, e, &identity, now, since);
                accept(session, (now, issued), &identity, expires, granted, None, ticket_id_text)
            }
        }
    }
}

/// `at`: the grant's time and its credentials' issue time.
fn accept(
    session: u64,
    at: (u64, u64),
    identity: &Identity,
    expires: u64,
    granted: String,
    ticket: Option<[u8; 32]>,
    ticket_id: Option<String>,
) -> AuthVerdict {
    AuthVerdict::Accept {
        session,
        grant: Box::new(Grant {
            user: identity.user.clone(),
            roles: identity.roles.clone(),
            issued_unix: at.0,
            ticket_issued_unix: at.1,
            expires_unix: expires,
            granted,
            ticket,
            ticket_id,
            // Set by `decide`, which knows the snapshot.
            generation: 0,
        }),
    }
}

/// The endpoint of `asset`/`service` (`*`: the asset's first service in
/// the config, its default).
fn find_service(snap: &Snapshot, asset: &str, service: &str) -> Option<usize> {
    snap.endpoints.iter().position(|e| e.asset == asset && (service == "*" || e.service == service))
}

/// Whether the policy lets `identity` connect to the endpoint's service now.
fn permitted(
    snap: &Snapshot,
    endpoint: usize,
    identity: &Identity,
    now: u64,
    since: Option<Since>,
) -> Result<Permit, Denial> {
    let ep = &snap.endpoints[endpoint];
    let policy = &snap.policy;
    let asset = policy.asset_id(&ep.asset).ok_or(Denial::NoRule)?;
    let roles = policy.role_ids(&identity.roles);
    match policy.check(&Query {
        roles: &roles,
        asset,
        protocol: ep.protocol,
        op: Op::Connect,
        modbus: None,
        now,
        since,
    }) {
        Decision::Permit(p) => Ok(p),
        Decision::Deny(d) => Err(d),
    }
}

/// The operations the policy allows `identity` on the endpoint now, for the
/// user's information (`read,write`); requests are still checked one by one.
fn granted(snap: &Snapshot, endpoint: usize, identity: &Identity, now: u64, since: Since) -> String {
    let ep = &snap.endpoints[endpoint];
    let policy = &snap.policy;
    let Some(asset) = policy.asset_id(&ep.asset) else { return String::new() };
    let roles = policy.role_ids(&identity.roles);
    let q =
        Query { roles: &roles, asset, protocol: ep.protocol, op: Op::Connect, modbus: None, now, since: Some(since) };
    let ops: Vec<&str> = policy.granted(&q).iter().filter(|op| *op != Op::Connect).map(Op::as_str).collect();
    if ops.is_empty() {
        "connect".to_string()
    } else {
        ops.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{password, totp, User, UserDb};
    use arc_swap::ArcSwap;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::atomic::AtomicU64;

    /// The lab's config, every rule that lets operators use plc-7's Modbus
    /// (reads, writes, and operator-sessions' connect) accepting tickets at
    /// most 60 s old.
    fn config() -> String {
        let lab = include_str!("../../config/lab.toml");
        let read = "operations = [\"read\"]\n\n[[rule]]\nname = \"operator-setpoints\"";
        let write = "operations = [\"write\"]\nschedule = \"shift\"\n[rule.modbus]";
        let connect = "operations = [\"connect\"]\n";
        let counts = (lab.matches(read).count(), lab.matches(write).count(), lab.matches(connect).count());
        assert_eq!(counts, (1, 1, 1));
        let bound = "ticket_lifetime_secs = 60\n";
        lab.replace(read, &read.replacen('\n', &format!("\n{bound}"), 1))
            .replace(write, &write.replacen('\n', &format!("\n{bound}"), 1))
            .replace(connect, &format!("{connect}{bound}"))
    }

    const T0: u64 = 1_700_000_025;
    const SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn worker(clock: Arc<AtomicU64>) -> AuthWorker {
        worker_on(&config(), clock).0
    }

    /// A worker for alice (operator) on the config `text`, its clock read
    /// from `clock`, and the snapshot it decides by (for reloads).
    fn worker_on(text: &str, clock: Arc<AtomicU64>) -> (AuthWorker, SharedSnapshot) {
        let cfg = crate::config::parse_at("lab.toml", text, T0).expect("config");
        let shared: SharedSnapshot = Arc::new(ArcSwap::from_pointee(cfg.snapshot));
        let mut db = UserDb::new();
        let mut u = User::new("alice", &["operator".to_string()]);
        u.password = Some(password::tests::cheap(b"pw"));
        u.totp = Some(totp::Secret::from_base32(SECRET).unwrap());
        db.add(u).unwrap();
        let w = AuthWorker::new(Arc::new(Authenticator::new(db)), shared.clone(), Vec::new())
            .with_clock(Arc::new(move || clock.load(Ordering::Relaxed)));
        (w, shared)
    }

    fn request(credentials: Credentials, purpose: Purpose, endpoint: SocketAddrV4) -> AuthRequest {
        let source = Ipv4Addr::new(198, 18, 0, 2);
        AuthRequest { core: 0, session: 1, source, endpoint, credentials, purpose, client_cert: None }
    }

    /// The gate's login endpoint in the lab.
    const LOGIN: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 1), 443);

    /// alice's password login at T0, accepted: its grant (with the ticket).
    fn login_at_t0(w: &mut AuthWorker) -> Box<Grant> {
        let AuthVerdict::Accept { grant, .. } = w.decide(request(password_at(T0), Purpose::Login, LOGIN)) else {
            panic!("login refused")
        };
        grant
    }

    fn password_at(t: u64) -> Credentials {
        let code = totp::code_at(&totp::Secret::from_base32(SECRET).unwrap(), t, totp::DIGITS);
        Credentials::Password { user: "alice".into(), password: b"pw".to_vec(), totp: code }
    }

    /// A rule's `ticket_lifetime_secs` bounds the tickets it accepts and the
    /// sessions they open (found by a review: only `policy explain` read it).
    #[test]
    fn a_rules_ticket_lifetime_bounds_the_tickets_it_accepts() {
        let clock = Arc::new(AtomicU64::new(T0));
        let mut w = worker(clock.clone());
        let grant = login_at_t0(&mut w);
        assert_eq!(grant.expires_unix, T0 + 28800, "the gate's ticket lifetime");
        let ticket = grant.ticket.expect("a ticket");
        let plc = SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 802);
        let connect = |credentials| {
            request(credentials, Purpose::Connect { asset: "plc-7".into(), service: "modbus".into() }, plc)
        };
        // Young: accepted, until the ticket is 60 s old.
        clock.store(T0 + 10, Ordering::Relaxed);
        let AuthVerdict::Accept { grant, .. } = w.decide(connect(Credentials::Ticket(ticket))) else {
            panic!("a 10 s old ticket refused")
        };
        assert_eq!(grant.expires_unix, T0 + 60);
        // Too old for this rule: refused as expired.
        clock.store(T0 + 120, Ordering::Relaxed);
        let v = w.decide(connect(Credentials::Ticket(ticket)));
        assert!(matches!(v, AuthVerdict::Refuse { reason: Reason::TicketExpired, .. }), "{v:?}");
        // Credentials given now are new: 60 s from now.
        let t = T0 + 150;
        clock.store(t, Ordering::Relaxed);
        let AuthVerdict::Accept { grant, .. } = w.decide(connect(password_at(t))) else { panic!("password refused") };
        assert_eq!(grant.expires_unix, t + 60);
    }

    /// Resolving an asset with a ticket too old for every rule that would
    /// let the user in says the ticket expired, as connecting does, not
    /// "not authorized" (found by a review of this change).
    #[test]
    fn resolve_with_a_ticket_too_old_for_the_rules_says_expired() {
        let clock = Arc::new(AtomicU64::new(T0));
        let mut w = worker(clock.clone());
        let ticket = login_at_t0(&mut w).ticket.expect("a ticket");
        clock.store(T0 + 120, Ordering::Relaxed);
        let purpose = Purpose::Resolve { asset: "plc-7".into(), service: "modbus".into() };
        let v = w.decide(request(Credentials::Ticket(ticket), purpose, LOGIN));
        assert!(matches!(v, AuthVerdict::Refuse { reason: Reason::TicketExpired, .. }), "{v:?}");
    }

    /// A reload that lowers the gate's `ticket_lifetime_secs` bounds the
    /// tickets already issued: older ones are refused as expired, younger
    /// ones open sessions that end at the new lifetime (found by a review:
    /// a ticket kept the expiry it was issued with).
    #[test]
    fn a_lowered_gate_ticket_lifetime_bounds_tickets_already_issued() {
        let clock = Arc::new(AtomicU64::new(T0));
        let (mut w, shared) = worker_on(include_str!("../../config/lab.toml"), clock.clone());
        let ticket = login_at_t0(&mut w).ticket.expect("a ticket");
        let plc = SocketAddrV4::new(Ipv4Addr::new(100, 64, 3, 7), 802);
        let connect = || {
            let purpose = Purpose::Connect { asset: "plc-7".into(), service: "modbus".into() };
            request(Credentials::Ticket(ticket), purpose, plc)
        };
        let mut snap = (**shared.load()).clone();
        snap.ticket_lifetime = 600; // the reload: tickets now live 10 minutes
        shared.store(Arc::new(snap));
        clock.store(T0 + 300, Ordering::Relaxed);
        let AuthVerdict::Accept { grant, .. } = w.decide(connect()) else { panic!("a 5 min old ticket refused") };
        assert_eq!(grant.expires_unix, T0 + 600, "the session ends at the new lifetime");
        clock.store(T0 + 7200, Ordering::Relaxed);
        let v = w.decide(connect());
        assert!(matches!(v, AuthVerdict::Refuse { reason: Reason::TicketExpired, .. }), "{v:?}");
    }
}
