//! Failed-login rate limiting, per user name and per source address.
//!
//! Each key (a user name, an IP) counts failures in a window. The
//! `max_failures`-th failure within `window` seconds locks the key for a
//! backoff that doubles with each further lockout (30 s, 60 s, 120 s, ...
//! capped at 15 min). While locked, attempts are refused before any password
//! is checked and are not counted. A successful login clears its user key
//! (not its address key: one good account must not launder an address that
//! is spraying others). A key quiet for `forget_after` seconds is forgotten,
//! backoff included.
//!
//! Time is an explicit `now` (unix seconds), so tests drive a fake clock.
//! Memory is bounded: past `capacity` keys per kind, forgotten keys are
//! purged and then the stalest unlocked key is evicted (one with no lockout
//! behind it before one with a backoff). A locked key is never evicted, so
//! failures spread over many new keys cannot reopen it. When every key held
//! is locked, failures of keys that find no room count together in one
//! overflow entry, and while that is locked, every key not held is refused:
//! the table fails closed rather than forgetting.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

/// The limits for one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitPolicy {
    /// Failures within `window` that lock the key.
    pub max_failures: u32,
    /// Seconds over which failures are counted.
    pub window: u64,
    /// The first lockout, seconds.
    pub base_lockout: u64,
    /// The longest lockout, seconds.
    pub max_lockout: u64,
    /// Seconds without a failure after which a key is forgotten.
    pub forget_after: u64,
}

impl Default for LimitPolicy {
    fn default() -> Self {
        Self { max_failures: 5, window: 300, base_lockout: 30, max_lockout: 900, forget_after: 3600 }
    }
}

impl LimitPolicy {
    /// The lockout after `lockouts` lockouts (1 = the first).
    pub fn lockout(&self, lockouts: u32) -> u64 {
        let doublings = lockouts.saturating_sub(1).min(32);
        self.base_lockout.saturating_mul(1u64 << doublings).min(self.max_lockout)
    }
}

/// Which key is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockedKey {
    User(String),
    Address(IpAddr),
}

/// A refusal because a key is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// The key (the longer lock, if both are).
    pub key: LockedKey,
    /// Seconds until it opens (at least 1).
    pub retry_after: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    failures: u32,
    window_start: u64,
    locked_until: u64,
    lockouts: u32,
    last_failure: u64,
}

impl Entry {
    fn remaining(&self, now: u64) -> Option<u64> {
        (self.locked_until > now).then(|| self.locked_until - now)
    }

    /// Counts one failure; returns the lockout it starts, if any.
    fn fail(&mut self, p: &LimitPolicy, now: u64) -> Option<u64> {
        if self.lockouts > 0 && now.saturating_sub(self.last_failure) >= p.forget_after {
            self.lockouts = 0;
        }
        if self.failures == 0 || now.saturating_sub(self.window_start) >= p.window {
            self.failures = 0;
            self.window_start = now;
        }
        self.failures += 1;
        self.last_failure = now;
        if self.failures < p.max_failures.max(1) {
            return None;
        }
        self.lockouts = self.lockouts.saturating_add(1);
        self.failures = 0;
        let secs = p.lockout(self.lockouts);
        self.locked_until = now.saturating_add(secs);
        Some(secs)
    }

    fn forgotten(&self, p: &LimitPolicy, now: u64) -> bool {
        self.remaining(now).is_none() && now.saturating_sub(self.last_failure) >= p.forget_after
    }
}

/// One kind of key with its policy.
#[derive(Debug)]
struct Table<K> {
    policy: LimitPolicy,
    entries: HashMap<K, Entry>,
    capacity: usize,
    /// The failures of keys that found every held key locked and no room.
    overflow: Entry,
}

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(policy: LimitPolicy, capacity: usize) -> Self {
        Self { policy, entries: HashMap::new(), capacity: capacity.max(1), overflow: Entry::default() }
    }

    fn remaining(&self, key: &K, now: u64) -> Option<u64> {
        match self.entries.get(key) {
            Some(e) => e.remaining(now),
            None => self.overflow.remaining(now),
        }
    }

    fn fail(&mut self, key: &K, now: u64) -> Option<u64> {
        let policy = self.policy;
        if !self.entries.contains_key(key) && self.entries.len() >= self.capacity {
            self.purge(now);
            if self.entries.len() >= self.capacity {
                // The stalest unlocked key goes, one without a backoff
                // behind it first; a locked key stays locked.
                let stalest = self
                    .entries
                    .iter()
                    .filter(|(_, e)| e.remaining(now).is_none())
                    .min_by_key(|(_, e)| (e.lockouts > 0, e.last_failure))
                    .map(|(k, _)| k.clone());
                match stalest {
                    Some(k) => {
                        self.entries.remove(&k);
                    }
                    None => return self.overflow.fail(&policy, now),
                }
            }
        }
        self.entries.entry(key.clone()).or_default().fail(&policy, now)
    }

    fn purge(&mut self, now: u64) {
        let p = self.policy;
        self.entries.retain(|_, e| !e.forgotten(&p, now));
        if self.overflow.forgotten(&p, now) {
            self.overflow = Entry::default();
        }
    }
}

impl Table<String> {
    /// [`Table::remaining`] without building a `String` key.
    fn remaining_str(&self, key: &str, now: u64) -> Option<u64> {
        match self.entries.get(key) {
            Some(e) => e.remaining(now),
            None => self.overflow.remaining(now),
        }
    }
}

/// Per-user and per-address failure counters.
#[derive(Debug)]
pub struct Limiter {
    users: Table<String>,
    addresses: Table<IpAddr>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new(LimitPolicy::default(), LimitPolicy::default())
    }
}

impl Limiter {
    /// Keys of each kind kept before the stalest is evicted.
    pub const DEFAULT_CAPACITY: usize = 65_536;

    /// A limiter with a policy per kind of key.
    pub fn new(user: LimitPolicy, address: LimitPolicy) -> Self {
        Self::with_capacity(user, address, Self::DEFAULT_CAPACITY)
    }

    /// [`Limiter::new`] with a key capacity per kind.
    pub fn with_capacity(user: LimitPolicy, address: LimitPolicy, capacity: usize) -> Self {
        Self { users: Table::new(user, capacity), addresses: Table::new(address, capacity) }
    }

    /// Whether `user` from `source` may try now.
    ///
    /// # Errors
    /// The user or the address is locked; the longer wait is reported.
    pub fn check(&self, user: &str, source: IpAddr, now: u64) -> Result<(), Lockout> {
        let by_user = self.users.remaining_str(user, now).map(|s| (s, LockedKey::User(user.to_string())));
        let by_address = self.addresses.remaining(&source, now).map(|s| (s, LockedKey::Address(source)));
        match (by_user, by_address) {
            (None, None) => Ok(()),
            (Some((s, key)), None) | (None, Some((s, key))) => Err(Lockout { key, retry_after: s }),
            (Some((su, ku)), Some((sa, ka))) => {
                Err(if su >= sa { Lockout { key: ku, retry_after: su } } else { Lockout { key: ka, retry_after: sa } })
            }
        }
    }

    /// Counts a failure against both keys. Returns the lockouts it started:
    /// `(user, address)` seconds.
    pub fn record_failure(&mut self, user: &str, source: IpAddr, now: u64) -> (Option<u64>, Option<u64>) {
        let u = self.users.fail(&user.to_string(), now);
        let a = self.addresses.fail(&source, now);
        (u, a)
    }

    /// A successful login: the user's key starts afresh.
    pub fn record_success(&mut self, user: &str) {
        self.users.entries.remove(user);
    }

    /// Drops keys quiet for `forget_after`.
    pub fn purge(&mut self, now: u64) {
        self.users.purge(now);
        self.addresses.purge(now);
    }

    /// Keys held: `(users, addresses)`.
    pub fn len(&self) -> (usize, usize) {
        (self.users.entries.len(), self.addresses.entries.len())
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.users.entries.is_empty() && self.addresses.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 10));
    const OTHER_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 11));

    fn retry(l: &Limiter, user: &str, ip: IpAddr, now: u64) -> Option<u64> {
        l.check(user, ip, now).err().map(|e| e.retry_after)
    }

    #[test]
    fn lockout_begins_at_the_fifth_failure() {
        let mut l = Limiter::default();
        for t in 0..4 {
            assert_eq!(l.check("alice", IP, 1000 + t), Ok(()));
            assert_eq!(l.record_failure("alice", IP, 1000 + t), (None, None));
        }
        assert_eq!(l.check("alice", IP, 1004), Ok(()));
        let (user_lock, ip_lock) = l.record_failure("alice", IP, 1004);
        assert_eq!(user_lock, Some(30));
        assert_eq!(ip_lock, Some(30), "one address, five failures");
        let e = l.check("alice", OTHER_IP, 1005).unwrap_err();
        assert_eq!(e.key, LockedKey::User("alice".into()));
        assert_eq!(e.retry_after, 29);
    }

    #[test]
    fn refused_during_backoff_open_after_then_doubles() {
        let mut l = Limiter::default();
        let fail5 = |l: &mut Limiter, from: u64| {
            for t in from..from + 5 {
                l.record_failure("alice", IP, t);
            }
        };
        fail5(&mut l, 0); // locked at t=4 until 34
        assert_eq!(retry(&l, "alice", IP, 4), Some(30));
        assert_eq!(retry(&l, "alice", IP, 20), Some(14));
        assert_eq!(retry(&l, "alice", IP, 33), Some(1));
        assert_eq!(retry(&l, "alice", IP, 34), None, "opens after 30 s");
        fail5(&mut l, 34); // locked at t=38 for 60 s
        assert_eq!(retry(&l, "alice", IP, 38), Some(60));
        assert_eq!(retry(&l, "alice", IP, 97), Some(1));
        assert_eq!(retry(&l, "alice", IP, 98), None);
        fail5(&mut l, 98); // 120 s
        assert_eq!(retry(&l, "alice", IP, 102), Some(120));
    }

    #[test]
    fn backoff_is_capped_at_fifteen_minutes() {
        let p = LimitPolicy::default();
        let seq: Vec<u64> = (1..=8).map(|n| p.lockout(n)).collect();
        assert_eq!(seq, [30, 60, 120, 240, 480, 900, 900, 900]);
        assert_eq!(p.lockout(u32::MAX), 900);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let mut l = Limiter::default();
        for i in 0..4 {
            l.record_failure("alice", IP, i * 100);
        }
        // The window (300 s) restarted at t=300: only 1 failure counted.
        assert_eq!(l.record_failure("alice", IP, 400), (None, None));
        assert_eq!(l.check("alice", IP, 401), Ok(()));
    }

    #[test]
    fn success_resets_the_user_key_only() {
        let mut l = Limiter::default();
        for t in 0..4 {
            l.record_failure("alice", IP, t);
        }
        l.record_success("alice");
        // Four more for alice do not lock her (the count restarted)...
        for t in 4..8 {
            assert_eq!(l.record_failure("alice", OTHER_IP, t).0, None);
        }
        // ...but the address kept its four: the fifth from it locks it.
        assert_eq!(l.record_failure("bob", IP, 9).1, Some(30));
        assert!(l.check("carol", IP, 10).is_err());
    }

    #[test]
    fn one_address_spraying_many_users_is_caught() {
        let mut l = Limiter::default();
        for (i, user) in ["u0", "u1", "u2", "u3", "u4"].iter().enumerate() {
            assert_eq!(l.check(user, IP, i as u64), Ok(()));
            let (u, _) = l.record_failure(user, IP, i as u64);
            assert_eq!(u, None, "one failure per user never locks a user");
        }
        let e = l.check("u5", IP, 5).unwrap_err();
        assert_eq!(e.key, LockedKey::Address(IP));
        assert_eq!(e.retry_after, 29);
        // The users themselves, from elsewhere, are not locked.
        assert_eq!(l.check("u0", OTHER_IP, 5), Ok(()));
    }

    #[test]
    fn quiet_keys_are_forgotten_and_memory_is_bounded() {
        let p = LimitPolicy::default();
        let mut l = Limiter::with_capacity(p, p, 4);
        for t in 0..5 {
            l.record_failure("alice", IP, t);
        }
        l.purge(3000);
        assert_eq!(l.len(), (1, 1), "within forget_after");
        // After an hour of quiet the backoff is forgotten too.
        l.purge(4 + 3600);
        assert!(l.is_empty());
        for t in 5000..5005 {
            l.record_failure("alice", IP, t);
        }
        assert_eq!(retry(&l, "alice", IP, 5004), Some(30), "back to the first step");
        for i in 0..100u64 {
            l.record_failure(&format!("spray{i}"), OTHER_IP, 6000 + i);
        }
        assert!(l.len().0 <= 4);
    }

    /// Five failures for each of `users`, each from its own address.
    fn lock_all(l: &mut Limiter, users: &[&str], now: u64) {
        for (i, user) in users.iter().enumerate() {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 1, i as u8));
            for t in 0..5 {
                l.record_failure(user, ip, now + t);
            }
        }
    }

    #[test]
    fn a_full_table_keeps_its_locked_keys() {
        let p = LimitPolicy::default();
        let mut l = Limiter::with_capacity(p, p, 4);
        lock_all(&mut l, &["admin"], 0);
        assert_eq!(retry(&l, "admin", OTHER_IP, 5), Some(29));
        // A spray of new user names, one failure each, from many addresses:
        // it fills the table, and admin's lock, the stalest entry, stays.
        for i in 0..100u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 2, i));
            l.record_failure(&format!("spray{i}"), ip, 6 + u64::from(i) / 10);
        }
        assert!(l.len().0 <= 4);
        assert_eq!(retry(&l, "admin", OTHER_IP, 20), Some(14), "a locked key is not evicted");
        // An unlocked key with a backoff behind it outlives one without.
        lock_all(&mut l, &["bob"], 100); // locked 104..134
        l.record_failure("carol", OTHER_IP, 200);
        l.record_failure("dave", OTHER_IP, 201);
        l.record_failure("erin", OTHER_IP, 202); // table full: an entry without a backoff goes
        for t in 300..305 {
            l.record_failure("bob", IP, t);
        }
        assert_eq!(retry(&l, "bob", OTHER_IP, 305), Some(59), "the second lockout doubles: bob's backoff was kept");
    }

    #[test]
    fn a_table_full_of_locked_keys_fails_closed() {
        let p = LimitPolicy::default();
        let mut l = Limiter::with_capacity(p, p, 2);
        lock_all(&mut l, &["u1", "u2"], 0);
        // No room and nothing to evict: new keys' failures count together.
        for (i, user) in ["n1", "n2", "n3", "n4"].iter().enumerate() {
            assert_eq!(l.record_failure(user, OTHER_IP, 10 + i as u64).0, None);
        }
        assert_eq!(l.check("n5", IP, 14), Ok(()), "four failures in the overflow do not lock it");
        assert_eq!(l.record_failure("n5", IP, 14).0, Some(30));
        let e = l.check("anyone", IP, 15).unwrap_err();
        assert_eq!((e.key, e.retry_after), (LockedKey::User("anyone".into()), 29));
        // The overflow opens after its backoff, and is forgotten when quiet.
        assert_eq!(l.check("anyone", OTHER_IP, 44), Ok(()));
        l.purge(14 + 3600);
        assert!(l.is_empty());
        assert_eq!(l.users.overflow.lockouts, 0);
    }
}
