//! The whole lab in one process: a user host, the gate's dp core with its
//! auth worker, and a PLC, joined by memory links. The same story as the
//! namespace lab, with no root and no kernel: `accessgate demo`, the
//! in-memory tests and the benches.
//!
//! The lab has its own CA and gate certificate (generated), and two users:
//! `alice` (role operator), `bob` (role viewer), `carol` (role guest), password
//! [`PASSWORD`], TOTP secret [`TOTP_SECRET`]. The auth worker runs inline in
//! [`MemLab::step`], on a clock the test can move ([`MemLab::advance`]).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use control::auth::AuthWorker;
use control::identity::totp::{self, Secret};
use control::identity::{password, unix_now, Authenticator, User, UserDb};
use control::{Config, Control};
use dataplane::audit::AuditTap;
use dataplane::auth::AuthChannel;
use dataplane::core::{Clock, Core, CoreLinks, CoreOptions};
use dataplane::io::{memory, FramePort};
use dataplane::snapshot::{Ipv4Net, Protocol};
use dataplane::wire::hello::Auth;
use smoltcp::iface::SocketHandle;

use crate::host::Host;
use crate::sim::PlcSim;
use crate::tls_client::TlsClient;

/// Frames a memory link holds per direction.
pub const LINK_DEPTH: usize = 1024;
/// The lab users' password.
pub const PASSWORD: &str = "correct horse battery staple";
/// The lab users' TOTP secret (base32).
pub const TOTP_SECRET: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
/// The name in the gate's certificate.
pub const SERVER_NAME: &str = "gate.lab";

/// The in-memory lab.
pub struct MemLab {
    pub control: Control,
    pub gate: Core,
    pub user: Host,
    pub plc: Host,
    pub sim: PlcSim,
    pub clock: Clock,
    pub auth: AuthWorker,
    /// TLS client sessions of the user host, by socket.
    pub clients: HashMap<SocketHandle, TlsClient>,
    pub client_config: Arc<rustls::ClientConfig>,
    /// The first endpoint (where the user connects).
    pub endpoint: SocketAddrV4,
    /// The gate's login endpoint.
    pub login: SocketAddrV4,
    /// The PLC's cable is pulled: its frames are discarded unseen.
    pub plc_offline: bool,
    /// Seconds added to the auth worker's clock.
    skew: Arc<AtomicU64>,
    /// The auth worker answers nothing while set (a verdict that never comes).
    pub auth_paused: bool,
}

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x00, 0x00, last]
}

/// The lab's users: alice (operator), bob (viewer), carol (guest).
pub fn lab_users() -> UserDb {
    // Lab-only cost parameters: tests log in many times.
    let params = argon2::Params::new(1024, 1, 1, None).unwrap_or_default();
    let mut db = UserDb::new();
    for (name, role) in [("alice", "operator"), ("bob", "viewer"), ("carol", "guest")] {
        let mut u = User::new(name, &[role.to_string()]);
        u.password = password::hash_with(params.clone(), PASSWORD.as_bytes()).ok();
        u.totp = Secret::from_base32(TOTP_SECRET).ok();
        let _ = db.add(u);
    }
    db
}

impl MemLab {
    /// Builds the lab for `config`: the user sits at host .2 of the north
    /// subnet, the PLC at the first endpoint's underlay address.
    ///
    /// # Errors
    /// The config has no endpoint, or the kernel refused an eventfd.
    pub fn new(config: &Config, opts: CoreOptions) -> io::Result<Self> {
        Self::new_with(config, opts, None)
    }

    /// The same, with the gate's core recording to `audit`.
    ///
    /// # Errors
    /// As [`MemLab::new`].
    pub fn new_with(config: &Config, opts: CoreOptions, audit: Option<AuditTap>) -> io::Result<Self> {
        Self::new_wrapped(config, opts, audit, &|_, port| port)
    }

    /// The same, with each of the gate's ports (by link index) passed
    /// through `wrap` first (a test's port that fails on cue).
    ///
    /// # Errors
    /// As [`MemLab::new`].
    pub fn new_wrapped(
        config: &Config,
        opts: CoreOptions,
        audit: Option<AuditTap>,
        wrap: &dyn Fn(usize, Box<dyn FramePort>) -> Box<dyn FramePort>,
    ) -> io::Result<Self> {
        let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidInput, m.to_string());
        let snap = &config.snapshot;
        let ep = snap.endpoints.first().ok_or_else(|| bad("the config has no endpoint"))?.clone();
        let seg = &snap.segments[ep.segment];
        let north = snap.north_address.ok_or_else(|| bad("no north address"))?;
        let login = snap.login.ok_or_else(|| bad("no login endpoint"))?;
        let mut control = Control::new(None, config);
        let pki = control::pki::generate(&[SERVER_NAME.into(), login.ip().to_string()]).map_err(|e| bad(&e))?;
        control.set_tls_config(
            dataplane::tls::server_config(pki.gate_cert.as_bytes(), pki.gate_key.as_bytes(), None, false)
                .map_err(|e| bad(&e))?,
        );
        let client_config = control::client::client_config(pki.ca_cert.as_bytes(), false, None).map_err(|e| bad(&e))?;
        let clock = Clock::new();
        let now = clock.now();

        let mut gate_ports: Vec<Box<dyn FramePort>> = Vec::new();
        let mut user_port = None;
        let mut plc_port = None;
        for (link, name) in config.interfaces.iter().enumerate() {
            let (g, h) = memory::pair(
                (name, mac(1 + link as u8)),
                (&format!("{name}-peer"), mac(0x10 + link as u8)),
                LINK_DEPTH,
            )?;
            gate_ports.push(wrap(link, Box::new(g)));
            if link == 0 {
                user_port = Some(h);
            } else if link == seg.south_link {
                plc_port = Some(h);
            }
        }
        let (Some(user_port), Some(plc_port)) = (user_port, plc_port) else {
            return Err(bad("the config needs a north and a south link"));
        };
        let user_ip = Ipv4Addr::from(u32::from(north.network()) + 2);
        let user = Host::new(user_port, Ipv4Net { addr: user_ip, len: north.len }, Some(north.addr), now);
        let mut plc = Host::new(plc_port, Ipv4Net { addr: *ep.underlay.ip(), len: seg.south_address.len }, None, now);
        // A Modbus endpoint gets the simulator; other protocols leave the
        // port to the test (a sink, a VNC stand-in, ...).
        let sim_port = if ep.protocol == Protocol::Modbus { ep.underlay.port() } else { 0 };
        let sim = PlcSim::new(&mut plc, sim_port, if sim_port == 0 { 0 } else { 64 });
        let (counters, events) = control.add_core();
        let channel = AuthChannel::new(None)?;
        let links = CoreLinks { counters, events, auth: channel.clone(), audit, drops: None };
        let gate = Core::new(0, gate_ports, control.shared(), links, opts).map_err(|e| bad(&e.to_string()))?;
        let skew = Arc::new(AtomicU64::new(0));
        let s = skew.clone();
        let authenticator = Arc::new(Authenticator::new(lab_users()));
        // Open sessions follow the users' standing (removed, disabled, revoked).
        control.set_authenticator(authenticator.clone(), None);
        let auth = AuthWorker::new(authenticator, control.shared(), vec![channel])
            .with_clock(Arc::new(move || unix_now().wrapping_add(s.load(Ordering::Relaxed))));
        Ok(Self {
            control,
            gate,
            user,
            plc,
            sim,
            clock,
            auth,
            clients: HashMap::new(),
            client_config,
            endpoint: ep.overlay,
            login,
            plc_offline: false,
            skew,
            auth_paused: false,
        })
    }

    /// Moves the auth worker's clock forward (ticket expiry, lockouts).
    pub fn advance(&self, secs: u64) {
        self.skew.fetch_add(secs, Ordering::Relaxed);
    }

    /// Moves the auth worker's clock back: what it grants next looks
    /// `secs` older to the dp core, whose clock stays.
    pub fn rewind(&self, secs: u64) {
        self.skew.fetch_sub(secs, Ordering::Relaxed);
    }

    /// The auth worker's notion of now.
    pub fn auth_now(&self) -> u64 {
        unix_now().wrapping_add(self.skew.load(Ordering::Relaxed))
    }

    /// The current TOTP code of the lab users.
    pub fn totp_code(&self) -> String {
        // Unwrap-free: the constant secret always decodes.
        Secret::from_base32(TOTP_SECRET).map(|s| totp::code_at(&s, self.auth_now(), 6)).unwrap_or_default()
    }

    /// One round: gate, auth worker, user (with its TLS clients), PLC.
    pub fn step(&mut self) -> usize {
        let now = self.clock.now();
        let mut work = self.gate.poll_once();
        if !self.auth_paused {
            work += self.auth.serve_pending();
        }
        work += self.user.poll(now);
        for (&h, client) in &mut self.clients {
            if client.pump(self.user.socket(h)) {
                work += 1;
            }
        }
        if self.plc_offline {
            let _ = self.plc.port.rx_burst(usize::MAX, &mut |_| {});
        } else {
            work += self.plc.poll(now);
            work += self.sim.serve(&mut self.plc);
        }
        work
    }

    /// Opens a TLS connection to `to` presenting `auth` for `target`.
    ///
    /// # Errors
    /// The TLS client could not be created.
    pub fn open(
        &mut self,
        to: SocketAddrV4,
        auth: Auth<'_>,
        target: Option<(&str, &str)>,
    ) -> Result<SocketHandle, String> {
        let client = TlsClient::new(&self.client_config, SERVER_NAME, auth, target)?;
        let h = self.user.connect(to, 16 * 1024);
        self.clients.insert(h, client);
        Ok(h)
    }

    /// Waits for the gate's answer on `h`.
    pub fn answer(&mut self, h: SocketHandle, limit: std::time::Duration) -> Option<control::client::Answer> {
        self.run_until(limit, |l| l.clients.get(&h).is_some_and(|c| c.answer.is_some() || c.error.is_some()));
        self.clients.get(&h).and_then(|c| c.answer.clone())
    }

    /// Logs alice (or `user`) in with the current TOTP code; returns the ticket.
    pub fn login(&mut self, user: &str, limit: std::time::Duration) -> Result<[u8; 32], String> {
        let code = self.totp_code();
        let h = self.open(self.login, Auth::Credentials { user, password: PASSWORD.as_bytes(), totp: &code }, None)?;
        match self.answer(h, limit) {
            Some(control::client::Answer::Accept { ticket: Some(t), .. }) => Ok(t),
            other => Err(format!("login failed: {other:?}")),
        }
    }

    /// Opens an authenticated session to the first endpoint with `ticket`.
    ///
    /// # Errors
    /// The gate refused or did not answer.
    pub fn session(&mut self, ticket: &[u8; 32], limit: std::time::Duration) -> Result<SocketHandle, String> {
        let snap = self.control.snapshot();
        let ep = snap.endpoints.iter().find(|e| e.overlay == self.endpoint).ok_or("no endpoint")?;
        let (asset, service) = (ep.asset.clone(), ep.service.clone());
        let h = self.open(self.endpoint, Auth::Ticket(ticket), Some((&asset, &service)))?;
        match self.answer(h, limit) {
            Some(control::client::Answer::Accept { .. }) => Ok(h),
            other => {
                Err(format!("session refused: {other:?} {:?}", self.clients.get(&h).and_then(|c| c.error.clone())))
            }
        }
    }

    /// Sends one request ADU on session `h` and returns the complete
    /// response ADU, or `None` if none came within `limit`.
    pub fn transact(&mut self, h: SocketHandle, adu: &[u8], limit: std::time::Duration) -> Option<Vec<u8>> {
        self.clients.get_mut(&h)?.send(adu);
        let mut got = Vec::new();
        let done = self.run_until(limit, |l| {
            if let Some(c) = l.clients.get_mut(&h) {
                got.extend(c.take_received());
            }
            got.len() >= 6 && got.len() >= 6 + usize::from(u16::from_be_bytes([got[4], got[5]]))
        });
        done.then_some(got)
    }

    /// Steps until `done` holds or `limit` passes. Returns whether it held.
    pub fn run_until(&mut self, limit: std::time::Duration, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if done(self) {
                return true;
            }
            if self.step() == 0 {
                std::thread::yield_now();
            }
        }
        done(self)
    }
}
