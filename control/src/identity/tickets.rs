//! Session tickets: what `accessgate login` receives and `connect` presents.
//!
//! A ticket is 32 random bytes from the OS, opaque to the client. The store
//! keeps only its SHA-256 (the ticket id) and the record behind it, so a
//! memory dump or a log line never yields a usable ticket, and redeeming is
//! a hash-table lookup: the presented bytes are never compared with stored
//! ones, so there is no timing signal on them. Tickets expire (`now >=
//! expires`), can be revoked one by one or per user, and the store is
//! bounded: when full, expired records go first, then the oldest.

use std::collections::HashMap;

use dataplane::wire::hello::{Reason, TICKET_LEN};
use sha2::{Digest, Sha256};

use super::Identity;

/// What the client holds.
pub type Ticket = [u8; TICKET_LEN];
/// What the store holds: SHA-256 of the ticket.
pub type TicketId = [u8; 32];

/// The id of a ticket.
pub fn ticket_id(ticket: &Ticket) -> TicketId {
    Sha256::digest(ticket).into()
}

/// The first 8 bytes of an id in hex, for logs and audit records.
pub fn short_id(id: &TicketId) -> String {
    id[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// A ticket could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum TicketError {
    /// The OS random source failed.
    #[error("no randomness for a ticket: {0}")]
    Random(getrandom::Error),
}

/// A redeemed ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeemed {
    pub identity: Identity,
    /// Unix time the ticket was issued (a rule may accept only young ones).
    pub issued: u64,
    /// Unix time the ticket expires.
    pub expires: u64,
    pub id: TicketId,
}

#[derive(Debug, Clone)]
struct Record {
    identity: Identity,
    issued: u64,
    expires: u64,
}

/// Live tickets by id.
#[derive(Debug)]
pub struct TicketStore {
    records: HashMap<TicketId, Record>,
    capacity: usize,
}

impl Default for TicketStore {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl TicketStore {
    /// Tickets held before the oldest is dropped.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// An empty store holding at most `capacity` tickets (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self { records: HashMap::new(), capacity: capacity.max(1) }
    }

    /// Issues a ticket for `user` with `roles`, valid `lifetime` seconds
    /// from `now`. Returns the ticket (hand it to the client, keep it
    /// nowhere) and its expiry.
    ///
    /// # Errors
    /// The OS random source failed.
    pub fn issue(
        &mut self,
        user: &str,
        roles: &[String],
        lifetime: u64,
        now: u64,
    ) -> Result<(Ticket, u64), TicketError> {
        let mut ticket = [0u8; TICKET_LEN];
        getrandom::fill(&mut ticket).map_err(TicketError::Random)?;
        let id = ticket_id(&ticket);
        if self.records.len() >= self.capacity {
            self.make_room(now);
        }
        let expires = now.saturating_add(lifetime);
        self.records.insert(
            id,
            Record { identity: Identity { user: user.to_string(), roles: roles.to_vec() }, issued: now, expires },
        );
        Ok((ticket, expires))
    }

    /// Drops expired records (oldest expiry first); if none had expired,
    /// the oldest issued one.
    fn make_room(&mut self, now: u64) {
        if self.purge(now) > 0 {
            return;
        }
        let oldest = self.records.iter().min_by_key(|(_, r)| (r.issued, r.expires)).map(|(id, _)| *id);
        if let Some(id) = oldest {
            log::warn!(
                "ticket store full ({} tickets): dropped ticket {} of user {:?}",
                self.capacity,
                short_id(&id),
                self.records.get(&id).map_or("", |r| r.identity.user.as_str())
            );
            self.records.remove(&id);
        }
    }

    /// Who a ticket stands for.
    ///
    /// # Errors
    /// [`Reason::TicketExpired`] for an expired ticket;
    /// [`Reason::BadCredentials`] for an unknown or revoked one.
    pub fn redeem(&self, ticket: &Ticket, now: u64) -> Result<Identity, Reason> {
        self.lookup(ticket, now).map(|r| r.identity)
    }

    /// [`TicketStore::redeem`] with the expiry and the id.
    ///
    /// # Errors
    /// As [`TicketStore::redeem`].
    pub fn lookup(&self, ticket: &Ticket, now: u64) -> Result<Redeemed, Reason> {
        let id = ticket_id(ticket);
        let r = self.records.get(&id).ok_or(Reason::BadCredentials)?;
        if now >= r.expires {
            return Err(Reason::TicketExpired);
        }
        Ok(Redeemed { identity: r.identity.clone(), issued: r.issued, expires: r.expires, id })
    }

    /// Revokes one ticket by id; whether it was there.
    pub fn revoke(&mut self, id: &TicketId) -> bool {
        self.records.remove(id).is_some()
    }

    /// Revokes every ticket of `user`; how many.
    pub fn revoke_user(&mut self, user: &str) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| r.identity.user != user);
        before - self.records.len()
    }

    /// Revokes every ticket whose user `keep` refuses; how many.
    pub fn revoke_where(&mut self, mut keep: impl FnMut(&Identity) -> bool) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| keep(&r.identity));
        before - self.records.len()
    }

    /// Drops expired tickets; how many.
    pub fn purge(&mut self, now: u64) -> usize {
        let before = self.records.len();
        self.records.retain(|_, r| now < r.expires);
        before - self.records.len()
    }

    /// Tickets held (expired ones until purged).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no ticket is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> Vec<String> {
        vec!["operator".to_string()]
    }

    #[test]
    fn issue_redeem_expire() {
        let mut s = TicketStore::default();
        let (t, expires) = s.issue("alice", &roles(), 600, 1000).unwrap();
        assert_eq!(expires, 1600);
        let who = s.redeem(&t, 1000).unwrap();
        assert_eq!(who.user, "alice");
        assert_eq!(who.roles, roles());
        assert_eq!(s.redeem(&t, 1599).unwrap().user, "alice");
        assert_eq!(s.redeem(&t, 1600), Err(Reason::TicketExpired));
        let mut forged = t;
        forged[0] ^= 1;
        assert_eq!(s.redeem(&forged, 1000), Err(Reason::BadCredentials));
        assert_eq!(s.purge(1600), 1);
        assert_eq!(s.redeem(&t, 1600), Err(Reason::BadCredentials));
    }

    #[test]
    fn only_the_hash_is_stored() {
        let mut s = TicketStore::default();
        let (t, _) = s.issue("alice", &roles(), 60, 0).unwrap();
        let (t2, _) = s.issue("alice", &roles(), 60, 0).unwrap();
        assert_ne!(t, t2, "tickets are random");
        assert!(s.records.contains_key(&ticket_id(&t)));
        assert!(!s.records.contains_key(&t));
        let dump = format!("{s:?}");
        let hex: String = t.iter().map(|b| format!("{b}, ")).collect();
        assert!(!dump.contains(hex.trim_end_matches(", ")));
        assert_eq!(short_id(&ticket_id(&t)).len(), 16);
    }

    #[test]
    fn revoke_one_and_per_user() {
        let mut s = TicketStore::default();
        let (a1, _) = s.issue("alice", &roles(), 60, 0).unwrap();
        let (a2, _) = s.issue("alice", &roles(), 60, 0).unwrap();
        let (b, _) = s.issue("bob", &roles(), 60, 0).unwrap();
        assert!(s.revoke(&ticket_id(&a1)));
        assert!(!s.revoke(&ticket_id(&a1)));
        assert_eq!(s.redeem(&a1, 1), Err(Reason::BadCredentials));
        assert_eq!(s.redeem(&a2, 1).unwrap().user, "alice");
        assert_eq!(s.revoke_user("alice"), 1);
        assert_eq!(s.redeem(&a2, 1), Err(Reason::BadCredentials));
        assert_eq!(s.redeem(&b, 1).unwrap().user, "bob");
    }

    #[test]
    fn capacity_drops_expired_first_then_oldest() {
        let mut s = TicketStore::new(3);
        let (short, _) = s.issue("a", &roles(), 10, 0).unwrap();
        let (old, _) = s.issue("b", &roles(), 1000, 1).unwrap();
        let (mid, _) = s.issue("c", &roles(), 1000, 2).unwrap();
        // Full; at t=20 `short` has expired: it goes, the others stay.
        let (new, _) = s.issue("d", &roles(), 1000, 20).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.redeem(&short, 20), Err(Reason::BadCredentials));
        assert!(s.redeem(&old, 20).is_ok() && s.redeem(&mid, 20).is_ok());
        // Full, none expired: the oldest issued goes.
        let (newer, _) = s.issue("e", &roles(), 1000, 30).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s.redeem(&old, 30), Err(Reason::BadCredentials));
        for t in [mid, new, newer] {
            assert!(s.redeem(&t, 30).is_ok());
        }
    }
}
