//! What a session asks the auth workers, and what they answer.
//!
//! Authentication (argon2id, TOTP, tickets, lockout) is slow work and never
//! runs on a dp core: a session in `Authenticating` posts an
//! [`AuthRequest`] on its core's [`AuthChannel`] and waits; an auth worker
//! thread on the control side answers with an [`AuthVerdict`] and rings the
//! core's [`Doorbell`] so an idle core wakes at once.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use crossbeam::queue::ArrayQueue;
use crossbeam::sync::Unparker;

use crate::io::Doorbell;
use crate::wire::hello::Reason;

/// Requests one core may have outstanding.
pub const AUTH_QUEUE: usize = 256;

/// How the user proves who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Password + TOTP (the password bytes are wiped by the worker).
    Password { user: String, password: Vec<u8>, totp: String },
    /// A ticket from `accessgate login`.
    Ticket([u8; 32]),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets, not even in debug output.
        match self {
            Self::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Self::Ticket(_) => write!(f, "Ticket(..)"),
        }
    }
}

/// What the session wants once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// At the gate's login endpoint: mint a ticket.
    Login,
    /// At the gate's login endpoint: where is this asset's endpoint?
    Resolve { asset: String, service: String },
    /// At an asset's endpoint: open a session to it.
    Connect { asset: String, service: String },
}

/// One authentication request.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub core: usize,
    pub session: u64,
    pub source: Ipv4Addr,
    /// The endpoint the user connected to.
    pub endpoint: SocketAddrV4,
    pub credentials: Credentials,
    pub purpose: Purpose,
    /// DER of a verified client certificate, if one was presented.
    pub client_cert: Option<Vec<u8>>,
}

/// What an accepted user may do.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    pub roles: Vec<String>,
    /// Unix time the grant was made (a revocation after it ends it).
    pub issued_unix: u64,
    /// Unix time the credentials were issued: the ticket's issue time, or
    /// the grant's for credentials given in the session (a rule's
    /// `ticket_lifetime_secs` counts from it).
    pub ticket_issued_unix: u64,
    /// Unix time the session (or ticket) ends.
    pub expires_unix: u64,
    /// Operations granted (for the user's information), or for `Resolve`
    /// the endpoint `ip:port`.
    pub granted: String,
    /// A new ticket (login only).
    pub ticket: Option<[u8; 32]>,
    /// Identifies the ticket in logs (a hash prefix, never the ticket).
    pub ticket_id: Option<String>,
    /// The snapshot generation the verdict was decided on: a session bound
    /// under a later one re-checks its user's standing first (a revocation
    /// may have come in between).
    pub generation: u64,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A new ticket is a credential: never printed, its id stands for it.
        f.debug_struct("Grant")
            .field("user", &self.user)
            .field("roles", &self.roles)
            .field("issued_unix", &self.issued_unix)
            .field("ticket_issued_unix", &self.ticket_issued_unix)
            .field("expires_unix", &self.expires_unix)
            .field("granted", &self.granted)
            .field("ticket", &self.ticket.map(|_| ".."))
            .field("ticket_id", &self.ticket_id)
            .finish()
    }
}

/// The answer.
#[derive(Debug, Clone)]
pub enum AuthVerdict {
    Accept { session: u64, grant: Box<Grant> },
    Refuse { session: u64, reason: Reason, retry_after: Option<u32> },
}

impl AuthVerdict {
    /// The session it answers.
    pub fn session(&self) -> u64 {
        match self {
            Self::Accept { session, .. } | Self::Refuse { session, .. } => *session,
        }
    }
}

/// One core's pair of queues with the auth workers.
pub struct AuthChannel {
    pub requests: ArrayQueue<AuthRequest>,
    pub verdicts: ArrayQueue<AuthVerdict>,
    /// Rung by the worker after pushing a verdict.
    pub doorbell: Doorbell,
    /// Wakes the worker after the core pushed a request.
    pub worker: Option<Unparker>,
}

impl AuthChannel {
    /// A channel whose worker is woken through `worker`.
    ///
    /// # Errors
    /// The kernel refused an eventfd.
    pub fn new(worker: Option<Unparker>) -> std::io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            requests: ArrayQueue::new(AUTH_QUEUE),
            verdicts: ArrayQueue::new(AUTH_QUEUE),
            doorbell: Doorbell::new()?,
            worker,
        }))
    }
}

#[cfg(test)]
mod debug_tests {
    use super::*;

    #[test]
    fn a_grants_ticket_is_never_printed() {
        let grant = Grant {
            user: "alice".into(),
            roles: vec!["operator".into()],
            issued_unix: 1,
            ticket_issued_unix: 1,
            expires_unix: 2,
            granted: "read".into(),
            ticket: Some([0xab; 32]),
            ticket_id: Some("t-1234".into()),
            generation: 1,
        };
        let text = format!("{:?}", AuthVerdict::Accept { session: 1, grant: Box::new(grant) });
        assert!(!text.to_lowercase().contains("ab, ") && !text.contains("171"), "{text}");
        assert!(text.contains("ticket: Some(\"..\")") && text.contains("t-1234") && text.contains("alice"), "{text}");
    }
}
