//! The auth worker: the control-side thread that answers the dp cores'
//! authentication requests (argon2id, TOTP, tickets, lockout), so none of
//! that slow work ever runs on a dp core.
//!
//! Authorization at this stage: a user may open a session to a service if
//! one of the user's roles is listed in the service's `roles` (deny by
//! default). The policy issue replaces this with the compiled policy.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::sync::Parker;
use dataplane::auth::{AuthChannel, AuthRequest, AuthVerdict, Credentials, Grant, Purpose};
use dataplane::snapshot::{SharedSnapshot, Snapshot};
use dataplane::wire::hello::Reason;

use crate::identity::tickets::{short_id, ticket_id};
use crate::identity::{unix_now, Authenticator, Identity};

/// Answers authentication requests for every core.
pub struct AuthWorker {
    pub authenticator: Arc<Authenticator>,
    shared: SharedSnapshot,
    channels: Vec<Arc<AuthChannel>>,
    clock: Arc<dyn Fn() -> u64 + Send + Sync>,
}

impl AuthWorker {
    /// A worker over `channels` (one per core).
    pub fn new(authenticator: Arc<Authenticator>, shared: SharedSnapshot, channels: Vec<Arc<AuthChannel>>) -> Self {
        Self { authenticator, shared, channels, clock: Arc::new(unix_now) }
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
                let verdict = self.decide(req);
                // The verdict queue is as deep as the request queue.
                let _ = channel.verdicts.push(verdict);
                channel.doorbell.ring();
                served += 1;
            }
        }
        served
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
    pub fn decide(&mut self, mut req: AuthRequest) -> AuthVerdict {
        let now = (self.clock)();
        let snap = self.shared.load_full();
        let session = req.session;
        let refuse = |reason: Reason, retry_after: Option<u32>| AuthVerdict::Refuse { session, reason, retry_after };
        let source = IpAddr::V4(req.source);
        let (identity, ticket_expiry, ticket_id_text) = match &mut req.credentials {
            Credentials::Password { user, password, totp } => {
                let result = self.authenticator.login(user, password, totp, source, now);
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
                Ok(r) => (r.identity, Some(r.expires), Some(short_id(&r.id))),
                Err(refusal) => return refuse(refusal.reason, refusal.retry_after),
            },
        };
        match req.purpose {
            Purpose::Login => {
                let Credentials::Password { .. } = req.credentials else {
                    // A ticket cannot mint a ticket: log in again.
                    return refuse(Reason::BadCredentials, None);
                };
                match self.authenticator.issue_ticket(&identity, snap.ticket_lifetime, now) {
                    Ok((ticket, expires)) => {
                        let id = short_id(&ticket_id(&ticket));
                        accept(session, &identity, expires, identity.roles.join(","), Some(ticket), Some(id))
                    }
                    Err(e) => {
                        log::error!("auth: cannot issue a ticket: {e}");
                        refuse(Reason::AuditUnavailable, None)
                    }
                }
            }
            Purpose::Resolve { asset, service } => match find_service(&snap, &asset, &service) {
                None => refuse(Reason::UnknownAsset, None),
                Some(e) if !permitted(&snap, e, &identity) => refuse(Reason::NotAuthorized, None),
                Some(e) => {
                    let expires = ticket_expiry.unwrap_or(now + snap.ticket_lifetime);
                    accept(session, &identity, expires, snap.endpoints[e].overlay.to_string(), None, ticket_id_text)
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
                if !permitted(&snap, e, &identity) {
                    log::warn!("auth: {} not authorized for {asset}/{service}", identity.user);
                    return refuse(Reason::NotAuthorized, None);
                }
                let expires = ticket_expiry.unwrap_or(now + snap.ticket_lifetime);
                accept(session, &identity, expires, "all".into(), None, ticket_id_text)
            }
        }
    }
}

fn accept(
    session: u64,
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
            expires_unix: expires,
            granted,
            ticket,
            ticket_id,
        }),
    }
}

/// The endpoint of `asset`/`service` (`*`: the asset's only service).
fn find_service(snap: &Snapshot, asset: &str, service: &str) -> Option<usize> {
    let mut matches =
        snap.endpoints.iter().enumerate().filter(|(_, e)| e.asset == asset && (service == "*" || e.service == service));
    let first = matches.next()?.0;
    (service != "*" || matches.next().is_none()).then_some(first)
}

fn permitted(snap: &Snapshot, endpoint: usize, identity: &Identity) -> bool {
    snap.endpoints[endpoint].roles.iter().any(|r| identity.roles.contains(r))
}
