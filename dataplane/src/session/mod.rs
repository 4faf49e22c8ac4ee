//! Sessions: one user connection on a north stack, TLS-terminated and
//! authenticated, joined to one asset connection on the segment's south stack.
//!
//! ```text
//!  accepted ─> Handshaking ─TLS up─> Hello ─frame─> Authenticating ─verdict─┬─> Connecting ─asset up─> Open ─FINs─> closed
//!                  │                   │                                    │        │                  │
//!                  └─ TLS error ───────┴─ malformed / timeout ──> Finishing ┴refuse  └ RST/timeout     └ RST ─> reset other side
//!                                             (reply frame, close_notify, FIN)
//! ```
//!
//! Nothing reaches the asset before `Open`: the south connection is only
//! opened after an auth worker accepted the hello, and bytes the user sends
//! early stay in TLS/TCP buffers (backpressure). Bytes move between the two
//! sides only as far as the receiving side has room, so a slow asset closes
//! the user's TCP window and vice versa.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::shard::Sock;
use smoltcp::socket::tcp::{Socket, State};
use smoltcp::time::{Duration, Instant};

use crate::audit::{AuditOut, AuditRecord, Decoded, Direction, Verdict as AuditVerdict};
use crate::auth::{AuthRequest, AuthVerdict, Credentials, Grant, Purpose};
use crate::counters::{bump, CoreCounters, InspectCounters};
use crate::inspect::dnp3::Dnp3Inspector;
use crate::inspect::enip::EnipInspector;
use crate::inspect::modbus::{Broken, ModbusInspector, Verdict};
use crate::inspect::s7::S7Inspector;
use crate::inspect::{Answer as UnitAnswer, Downstream, Protocol as UnitProtocol, Sink, Units, Verdict as UnitVerdict};
use crate::policy::{Decision, Denial, ModbusDetail, Op, Policy, Query, RoleId, Since};
use crate::snapshot::Protocol;
use crate::tls::Tls;
use crate::wire::hello::{self, Auth, Framing, Message, Reason};

macro_rules! close_reasons {
    ($($variant:ident => $name:literal : $doc:literal,)*) => {
        /// Why a session ended.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum CloseReason { $(#[doc = $doc] $variant,)* }

        impl CloseReason {
            /// Every reason, in counter order.
            pub const ALL: &'static [CloseReason] = &[$(CloseReason::$variant,)*];
            /// The name in logs and counters.
            pub fn as_str(self) -> &'static str {
                match self { $(CloseReason::$variant => $name,)* }
            }
        }
    };
}

close_reasons! {
    ClientClosed => "client_closed": "The user closed first (FIN), both directions drained.",
    SessionExpired => "session_expired": "The session reached its end: ticket expiry or the rule's max_session_secs.",
    AuditUnavailable => "audit_unavailable": "The audit writer failed and the policy is to terminate sessions (`on_failure = terminate`).",
    PolicyRevoked => "policy_revoked": "A new policy no longer permits the session; it ended at a request boundary.",
    UserRevoked => "user_revoked": "The user was disabled or removed, lost every role the session had, or had their tickets revoked (`ctl revoke`); it ended at a request boundary.",
    WindowClosed => "window_closed": "The schedule window that permitted the session closed.",
    FramingLost => "framing_lost": "The protocol stream could not be framed any more (bad MBAP header).",
    AssetClosed => "asset_closed": "The asset closed first (FIN), both directions drained.",
    ClientReset => "client_reset": "The user's side reset or vanished; the asset connection was reset too.",
    AssetReset => "asset_reset": "The asset reset an open connection; the user was reset too.",
    AssetRefused => "asset_refused": "The asset answered the connect with RST.",
    AssetUnreachable => "asset_unreachable": "The asset did not answer the connect in time (or no route).",
    TlsFailed => "tls_failed": "The TLS handshake or a record failed (plaintext, old version, bad certificate, ...).",
    HelloMalformed => "hello_malformed": "The first frame inside TLS was not a valid hello (garbage, oversized, wrong kind).",
    HelloTimeout => "hello_timeout": "No complete TLS handshake and hello within the deadline.",
    AuthRefused => "auth_refused": "The hello was answered with a refusal (bad credentials, locked, not authorized, ...).",
    AuthBusy => "auth_busy": "The auth queue was full, or no verdict came within the auth deadline (60 s); the session was dropped before any byte reached an asset.",
    LoginDone => "login_done": "A login or resolve exchange at the gate's own endpoint completed.",
    EndpointRemoved => "endpoint_removed": "A config reload removed the endpoint, or changed the asset, service, asset address or protocol behind it.",
    Shutdown => "shutdown": "The gate is stopping.",
    InternalError => "internal_error": "The gate's handling of this session, or the dp pass it was in, panicked (a bug); the panic was caught, the session was reset, the core went on.",
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TLS handshake running.
    Handshaking,
    /// Reading the hello frame.
    Hello,
    /// Waiting for an auth worker's verdict.
    Authenticating,
    /// Authorised; connecting to the asset.
    Connecting,
    /// Both connections are up; bytes flow.
    Open,
    /// Sending a last frame (reply, refusal), then close_notify and FIN.
    Finishing(CloseReason),
}

/// What kind of endpoint the session arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An asset's proxy endpoint.
    Asset,
    /// The gate's own login endpoint (tickets, endpoint lookup).
    Login,
}

/// Who talks to what through a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The user's address and port.
    pub client: SocketAddrV4,
    /// The overlay endpoint the user connected to.
    pub endpoint: SocketAddrV4,
    /// The asset service behind it (unspecified for the login endpoint).
    pub asset: SocketAddrV4,
}

/// Who sent the first FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstFin {
    Client,
    Asset,
}

/// The asset and service the endpoint leads to, for checking the hello,
/// and the protocol spoken there, all as the config had them when the
/// session was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub asset: String,
    pub service: String,
    pub protocol: Protocol,
}

/// Deadline for the TLS handshake plus the hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// A session's own time limits ([`crate::core::CoreOptions`]).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// For the asset to accept the connection.
    pub connect: Duration,
    /// For the auth verdict, from the session's first byte.
    pub auth: Duration,
}

/// One proxied connection.
pub struct Session {
    pub id: u64,
    pub flow: Flow,
    pub kind: Kind,
    pub north: Sock,
    pub south: Option<Sock>,
    pub phase: Phase,
    pub opened: Instant,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Set once an auth worker accepted the user.
    pub grant: Option<Box<Grant>>,
    /// Why the last refusal or failure happened, for the log.
    pub detail: Option<String>,
    /// A session-open record was written (so a close record is owed).
    pub audited: bool,
    target: Target,
    tls: Box<Tls>,
    hello: Option<Box<HelloBuf>>,
    inspector: Inspector,
    protocol: Protocol,
    role_ids: Vec<RoleId>,
    asset_id: Option<u32>,
    checked_generation: u64,
    permit_until: u64,
    finishing_since: Option<Instant>,
    connect_started: Instant,
    connect_timeout: Duration,
    auth_deadline: Duration,
    up_fin: bool,
    down_fin: bool,
    first_fin: Option<FirstFin>,
}

/// The session's request-by-request inspection, by protocol.
enum Inspector {
    /// Raw TCP, or a protocol the gate does not inspect: all or nothing.
    None,
    Modbus(Box<ModbusInspector>),
    S7(Box<S7Inspector>),
    Dnp3(Box<Dnp3Inspector>),
    Enip(Box<EnipInspector>),
}

impl Inspector {
    /// Bytes from the user the inspector still holds for the asset.
    fn up_pending(&self) -> usize {
        match self {
            Self::None => 0,
            Self::Modbus(i) => i.up_pending(),
            Self::S7(i) => i.up_pending(),
            Self::Dnp3(i) => i.up_pending(),
            Self::Enip(i) => i.up_pending(),
        }
    }
}

struct HelloBuf {
    buf: [u8; hello::HEADER_LEN + hello::MAX_PAYLOAD],
    len: usize,
}

/// What a step needs from its core.
pub struct StepCtx<'a> {
    pub core: usize,
    /// Monotonic time.
    pub now: Instant,
    /// Unix time in seconds (policy windows).
    pub unix: u64,
    pub policy: &'a Policy,
    /// The users' standing in force (see [`crate::snapshot::UserStates`]).
    pub users: Option<&'a crate::snapshot::UserStates>,
    /// The snapshot generation in force.
    pub generation: u64,
    /// The gate's `ticket_lifetime_secs` in force: a session ends when its
    /// ticket reaches it, also when a reload lowered it.
    pub ticket_lifetime: u64,
    /// The core's plaintext buffer.
    pub scratch: &'a mut [u8],
    pub counters: &'a CoreCounters,
    /// Unix time in microseconds (audit timestamps).
    pub unix_us: u64,
    /// The audit trail.
    pub audit: AuditOut<'a>,
}

/// The session's two outlets as the inspector sees them.
struct Wires<'a, 'n, 's> {
    tls: &'a mut Tls,
    north: &'a mut Socket<'n>,
    south: &'a mut Socket<'s>,
}

impl Sink for Wires<'_, '_, '_> {
    fn to_asset(&mut self, adu: &[u8]) -> bool {
        let room = self.south.send_capacity() - self.south.send_queue();
        self.south.can_send() && room >= adu.len() && self.south.send_slice(adu).is_ok()
    }

    fn to_user(&mut self, adu: &[u8]) -> bool {
        // Keep at most one ADU of ciphertext waiting inside rustls: if the
        // socket cannot take what is queued, there is no room.
        self.tls.push(self.north);
        !self.tls.wants_write() && self.tls.write_plain(adu) == adu.len()
    }
}

/// What a step asks the core to do.
#[derive(Debug)]
pub enum Step {
    /// Still running; `moved` payload bytes this step.
    Running { moved: usize },
    /// Post this request to the auth workers.
    Authenticate(Box<AuthRequest>),
    /// Over; the user side is closed or reset (the south side too).
    Closed(CloseReason),
}

/// What a verdict asks the core to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Open the south connection now.
    Connect,
    /// Nothing: the reply is being sent.
    Reply,
}

impl Session {
    /// A session whose user connection was just accepted.
    pub fn new(id: u64, flow: Flow, target: Target, north: Sock, tls: Tls, now: Instant, deadlines: Deadlines) -> Self {
        Self {
            id,
            flow,
            kind: target.kind,
            north,
            south: None,
            phase: Phase::Handshaking,
            opened: now,
            bytes_up: 0,
            bytes_down: 0,
            grant: None,
            detail: None,
            audited: false,
            target,
            tls: Box::new(tls),
            inspector: Inspector::None,
            protocol: Protocol::Tcp,
            role_ids: Vec::new(),
            asset_id: None,
            checked_generation: 0,
            permit_until: 0,
            finishing_since: None,
            hello: Some(Box::new(HelloBuf { buf: [0; hello::HEADER_LEN + hello::MAX_PAYLOAD], len: 0 })),
            connect_started: now,
            connect_timeout: deadlines.connect,
            auth_deadline: deadlines.auth,
            up_fin: false,
            down_fin: false,
            first_fin: None,
        }
    }

    /// What the session was accepted for.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The asset's name (empty for the login endpoint).
    pub fn asset_name(&self) -> &str {
        &self.target.asset
    }

    /// TLS version and cipher suite negotiated.
    pub fn negotiated(&self) -> (String, String) {
        self.tls.negotiated()
    }

    /// Advances the session after its stacks were polled.
    pub fn step(&mut self, ctx: &mut StepCtx<'_>, north: &mut Socket<'_>, mut south: Option<&mut Socket<'_>>) -> Step {
        let (core, now) = (ctx.core, ctx.now);
        let ns = north.state();
        match self.phase {
            Phase::Handshaking | Phase::Hello | Phase::Authenticating => {
                if matches!(ns, State::Closed | State::TimeWait)
                    || (fin_received(north) && self.phase != Phase::Authenticating)
                {
                    north.abort();
                    return Step::Closed(if self.phase == Phase::Handshaking {
                        CloseReason::TlsFailed
                    } else {
                        CloseReason::ClientReset
                    });
                }
                if now - self.opened > HELLO_DEADLINE && self.phase != Phase::Authenticating {
                    north.abort();
                    return Step::Closed(CloseReason::HelloTimeout);
                }
                if self.phase == Phase::Authenticating && now - self.opened > self.auth_deadline {
                    // No verdict came (lost to a full queue, say): give up
                    // as when the queue is full, before any byte reached an
                    // asset; a late verdict finds no session.
                    north.abort();
                    return Step::Closed(CloseReason::AuthBusy);
                }
                // While authenticating, TLS is kept alive (acks, key updates)
                // but no plaintext is read. A TLS error ends the session
                // now: a verdict that comes later finds it finishing and
                // opens no asset connection.
                if !self.exchange_tls(north) {
                    return self.finish_now(north, CloseReason::TlsFailed);
                }
                if self.phase == Phase::Authenticating || self.tls.is_handshaking() {
                    return Step::Running { moved: 0 };
                }
                self.phase = Phase::Hello;
                self.read_hello(core, north)
            }
            Phase::Connecting => {
                let Some(south) = south.as_deref_mut() else {
                    return self.finish_now(north, CloseReason::AssetUnreachable);
                };
                match south.state() {
                    State::Established | State::CloseWait => {
                        // The connect timeout has done its job; an idle OT
                        // session may stay quiet for hours.
                        south.set_timeout(None);
                        self.phase = Phase::Open;
                        // The verdict was decided on the snapshot the auth
                        // worker saw; a revocation published since then is
                        // checked before the user hears "accept" (and before
                        // a byte it pipelined moves).
                        if let Some(reason) = self.reauthorize(ctx) {
                            south.abort();
                            return self.finish_now(north, reason);
                        }
                        self.reply_accept();
                        self.tls.push(north);
                        self.pump(ctx, north, south)
                    }
                    State::Closed => {
                        north.abort();
                        let timed_out = now - self.connect_started + Duration::from_millis(50) >= self.connect_timeout;
                        Step::Closed(if timed_out { CloseReason::AssetUnreachable } else { CloseReason::AssetRefused })
                    }
                    _ if matches!(ns, State::Closed) => {
                        south.abort();
                        Step::Closed(CloseReason::ClientReset)
                    }
                    _ => {
                        if !self.exchange_tls(north) {
                            south.abort();
                            return self.finish_now(north, CloseReason::TlsFailed);
                        }
                        Step::Running { moved: 0 }
                    }
                }
            }
            Phase::Open => match south {
                Some(south) => {
                    if let Some(reason) = self.reauthorize(ctx) {
                        south.abort();
                        return self.finish_now(north, reason);
                    }
                    self.pump(ctx, north, south)
                }
                None => self.finish_now(north, CloseReason::AssetUnreachable),
            },
            Phase::Finishing(reason) => {
                let _ = self.tls.pull(north);
                self.tls.push(north);
                if !self.tls.wants_write()
                    && !matches!(ns, State::FinWait1 | State::FinWait2 | State::Closing | State::LastAck)
                {
                    north.close();
                }
                if matches!(north.state(), State::Closed | State::TimeWait | State::FinWait2)
                    || now - *self.finishing_since.get_or_insert(now) > HELLO_DEADLINE
                {
                    if north.state() != State::TimeWait && north.state() != State::FinWait2 {
                        north.abort();
                    }
                    return Step::Closed(reason);
                }
                Step::Running { moved: 0 }
            }
        }
    }

    /// Whether the session's own clocks need a step with no frame to wake
    /// it: the hello deadline, the connect timeout, the end of its ticket or
    /// of the schedule window that permits it, a new policy generation, or a
    /// close in progress. Touches no socket (the core's sweep asks this of
    /// every session).
    pub fn clock_due(&self, now: Instant, unix: u64, generation: u64) -> bool {
        match self.phase {
            Phase::Handshaking | Phase::Hello => now - self.opened > HELLO_DEADLINE,
            Phase::Authenticating => now - self.opened > self.auth_deadline,
            Phase::Connecting => now - self.connect_started >= self.connect_timeout,
            Phase::Open => self.grant_expired(unix) || self.permit_stale(unix, generation),
            Phase::Finishing(_) => true,
        }
    }

    /// The user's ticket has ended.
    fn grant_expired(&self, unix: u64) -> bool {
        self.grant.as_deref().is_some_and(|g| unix >= g.expires_unix)
    }

    /// The last permit no longer holds: the policy changed or its window
    /// ended. [`Session::reauthorize`] checks again; the sweep wakes for it.
    fn permit_stale(&self, unix: u64, generation: u64) -> bool {
        generation != self.checked_generation || unix >= self.permit_until
    }

    /// Applies an auth worker's verdict.
    pub fn on_verdict(&mut self, verdict: AuthVerdict) -> Next {
        if self.phase != Phase::Authenticating {
            return Next::Reply;
        }
        match verdict {
            AuthVerdict::Accept { grant, .. } => {
                self.grant = Some(grant);
                match self.kind {
                    Kind::Asset => {
                        self.phase = Phase::Connecting;
                        Next::Connect
                    }
                    Kind::Login => {
                        self.reply_accept();
                        self.tls.close();
                        self.phase = Phase::Finishing(CloseReason::LoginDone);
                        Next::Reply
                    }
                }
            }
            AuthVerdict::Refuse { reason, retry_after, .. } => {
                self.detail = Some(reason.as_str().to_string());
                self.reply(&Message::Refuse { reason, retry_after });
                self.tls.close();
                self.phase = Phase::Finishing(CloseReason::AuthRefused);
                Next::Reply
            }
        }
    }

    /// Notes when the south connect was started.
    pub fn connecting(&mut self, south: Sock, now: Instant) {
        self.south = Some(south);
        self.connect_started = now;
    }

    fn reply_accept(&mut self) {
        let Some(grant) = self.grant.as_deref() else { return };
        let msg = Message::Accept {
            session_id: self.id,
            expires_unix: grant.expires_unix,
            granted: &grant.granted,
            ticket: grant.ticket.as_ref(),
        };
        let mut buf = [0u8; hello::HEADER_LEN + hello::MAX_PAYLOAD];
        let n = msg.emit(&mut buf);
        self.tls.write_plain(&buf[..n]);
    }

    fn reply(&mut self, msg: &Message<'_>) {
        let mut buf = [0u8; hello::HEADER_LEN + hello::MAX_PAYLOAD];
        let n = msg.emit(&mut buf);
        self.tls.write_plain(&buf[..n]);
    }

    fn refuse(&mut self, north: &mut Socket<'_>, reason: Reason, close: CloseReason) -> Step {
        self.detail = Some(reason.as_str().to_string());
        self.reply(&Message::Refuse { reason, retry_after: None });
        self.tls.close();
        self.tls.push(north);
        self.phase = Phase::Finishing(close);
        Step::Running { moved: 0 }
    }

    /// Takes in the user's TLS records and sends what TLS has to send (an
    /// alert, if it failed). `false`: TLS failed, its detail is kept.
    fn exchange_tls(&mut self, north: &mut Socket<'_>) -> bool {
        let pulled = self.tls.pull(north);
        self.tls.push(north);
        match pulled {
            Ok(_) => true,
            Err(e) => {
                self.detail = Some(e.0);
                false
            }
        }
    }

    fn finish_now(&mut self, north: &mut Socket<'_>, reason: CloseReason) -> Step {
        self.tls.close();
        self.tls.push(north);
        self.phase = Phase::Finishing(reason);
        Step::Running { moved: 0 }
    }

    fn read_hello(&mut self, core: usize, north: &mut Socket<'_>) -> Step {
        let Some(mut hb) = self.hello.take() else { return Step::Running { moved: 0 } };
        // Read only up to the end of the first frame: what follows is the
        // OT stream and must wait until the user is authorised.
        // The header first, then the rest it announces: loop until the frame
        // is whole or rustls has no more plaintext (a session is stepped
        // when frames arrive, not every pass, so nothing may be left for
        // "next time").
        loop {
            let want = match hello::frame_len(&hb.buf[..hb.len]) {
                Framing::Complete(n) => n,
                Framing::NeedMore(n) => hb.len + n,
                Framing::Reject(_) => hb.len,
            }
            .min(hb.buf.len());
            if want <= hb.len {
                break;
            }
            let n = self.tls.read_plain(&mut hb.buf[hb.len..want]);
            if n == 0 {
                break;
            }
            hb.len += n;
        }
        match hello::frame_len(&hb.buf[..hb.len]) {
            Framing::NeedMore(_) if self.tls.peer_closed() => {
                self.refuse(north, Reason::MalformedHello, CloseReason::HelloMalformed)
            }
            Framing::NeedMore(_) => {
                self.hello = Some(hb);
                Step::Running { moved: 0 }
            }
            Framing::Reject(_) => self.refuse(north, Reason::MalformedHello, CloseReason::HelloMalformed),
            Framing::Complete(n) => {
                let request = match Message::parse(&hb.buf[..n]) {
                    Ok(Message::Hello { auth, target }) => self.request_for(core, auth, target),
                    _ => Err(Reason::MalformedHello),
                };
                match request {
                    Ok(req) => {
                        self.phase = Phase::Authenticating;
                        Step::Authenticate(Box::new(req))
                    }
                    Err(Reason::MalformedHello) => {
                        self.refuse(north, Reason::MalformedHello, CloseReason::HelloMalformed)
                    }
                    Err(reason) => self.refuse(north, reason, CloseReason::AuthRefused),
                }
            }
        }
    }

    fn request_for(&self, core: usize, auth: Auth<'_>, target: Option<(&str, &str)>) -> Result<AuthRequest, Reason> {
        let purpose = match (self.kind, target) {
            (Kind::Login, None) => Purpose::Login,
            (Kind::Login, Some((asset, service))) => Purpose::Resolve { asset: asset.into(), service: service.into() },
            (Kind::Asset, Some((asset, service))) => {
                if asset != self.target.asset || (service != self.target.service && service != "*") {
                    return Err(Reason::UnknownAsset);
                }
                Purpose::Connect { asset: asset.into(), service: self.target.service.clone() }
            }
            (Kind::Asset, None) => return Err(Reason::MalformedHello),
        };
        let credentials = match auth {
            Auth::Credentials { user, password, totp } => {
                Credentials::Password { user: user.into(), password: password.to_vec(), totp: totp.into() }
            }
            Auth::Ticket(t) => Credentials::Ticket(*t),
        };
        Ok(AuthRequest {
            core,
            session: self.id,
            source: *self.flow.client.ip(),
            endpoint: self.flow.endpoint,
            credentials,
            purpose,
            client_cert: self.tls.client_certificate().map(<[u8]>::to_vec),
        })
    }

    /// Moves bytes both ways (inspecting them when the protocol has an
    /// inspector) and propagates FIN/close_notify and RST.
    fn pump(&mut self, ctx: &mut StepCtx<'_>, north: &mut Socket<'_>, south: &mut Socket<'_>) -> Step {
        if let Err(e) = self.tls.pull(north) {
            self.detail = Some(e.0);
            self.tls.push(north);
            south.abort();
            north.abort();
            return Step::Closed(CloseReason::TlsFailed);
        }
        let moved = match self.inspector {
            Inspector::None => self.move_raw(ctx, south),
            Inspector::Modbus(_) => self.move_modbus(ctx, north, south),
            Inspector::S7(_) | Inspector::Dnp3(_) | Inspector::Enip(_) => self.move_units(ctx, north, south),
        };
        let (up, down) = match moved {
            Ok(m) => m,
            Err(reason) => {
                south.abort();
                return self.finish_now(north, reason);
            }
        };
        self.tls.push(north);
        self.bytes_up += up as u64;
        self.bytes_down += down as u64;
        let held = self.inspector.up_pending();
        self.propagate_close(north, south, held, up + down)
    }

    /// Raw TCP (VNC, RDP, vendor tools): identity and logging, no inspection.
    fn move_raw(&mut self, ctx: &mut StepCtx<'_>, south: &mut Socket<'_>) -> Result<(usize, usize), CloseReason> {
        if ctx.audit.terminate {
            return Err(CloseReason::AuditUnavailable);
        }
        let (id, ts) = (self.id, ctx.unix_us);
        let scratch = &mut *ctx.scratch;
        let audit = &mut ctx.audit;
        // What the audit trail can take now, in payload bytes.
        let budget = |audit: &AuditOut<'_>, want: usize| {
            if !audit.enabled() || audit.has_room(AuditRecord::data_records(want)) {
                want
            } else if audit.has_room(1) {
                crate::audit::PAYLOAD_LEN
            } else {
                0
            }
        };
        // User -> asset: plaintext out of rustls, as far as the asset's send
        // buffer (and the audit trail) has room.
        let mut up = 0;
        loop {
            let room = south.send_capacity() - south.send_queue();
            if room == 0 || !south.can_send() {
                break;
            }
            let take = budget(audit, room.min(scratch.len()));
            if take == 0 {
                break;
            }
            let n = self.tls.read_plain(&mut scratch[..take]);
            if n == 0 {
                break;
            }
            // `room` bytes fit by construction.
            let sent = south.send_slice(&scratch[..n]).unwrap_or(0);
            for r in AuditRecord::data_chunks(id, ts, Direction::Up, &scratch[..sent]) {
                audit.push(r);
            }
            up += sent;
        }
        // Asset -> user: into rustls as far as its buffer limit allows.
        let mut down = 0;
        while south.can_recv() {
            let want = budget(audit, scratch.len());
            if want == 0 || self.tls.wants_write() {
                break;
            }
            let got = south.recv_slice(&mut scratch[..want]).unwrap_or(0);
            if got == 0 {
                break;
            }
            // rustls takes it all: its buffer was drained (no pending
            // ciphertext) and `got` is below its limit.
            let n = self.tls.write_plain(&scratch[..got]);
            for r in AuditRecord::data_chunks(id, ts, Direction::Down, &scratch[..n]) {
                audit.push(r);
            }
            down += n;
        }
        Ok((up, down))
    }

    /// Modbus/TCP: every request framed, decided and forwarded or answered;
    /// every response matched.
    fn move_modbus(
        &mut self,
        ctx: &mut StepCtx<'_>,
        north: &mut Socket<'_>,
        south: &mut Socket<'_>,
    ) -> Result<(usize, usize), CloseReason> {
        if ctx.audit.terminate {
            return Err(CloseReason::AuditUnavailable);
        }
        let since = self.since();
        let Inspector::Modbus(insp) = &mut self.inspector else { return Ok((0, 0)) };
        let (roles, asset, protocol) = (&self.role_ids[..], self.asset_id, self.protocol);
        let (policy, unix, micros, counters) = (ctx.policy, ctx.unix, ctx.now.total_micros() as u64, ctx.counters);
        let (id, ts) = (self.id, ctx.unix_us);
        let audit = &mut ctx.audit;
        let tls = &mut *self.tls;
        // User -> gate: as much as the inspector has room for, and only while
        // the audit trail can take the records (back-pressure otherwise).
        if audit.has_room(2) {
            let spare = insp.up_spare();
            let n = tls.read_plain(spare);
            insp.up_filled(n);
        }
        let mut up = 0;
        let mut wires = Wires { tls, north: &mut *north, south: &mut *south };
        let mut decide = |op: Op, detail: &ModbusDetail<'_>| match asset {
            Some(asset) => policy.check(&Query { roles, asset, protocol, op, modbus: Some(*detail), now: unix, since }),
            None => Decision::Deny(Denial::NoRule),
        };
        let exception = |d: Denial| policy.exception(d);
        let result = insp.requests(&mut wires, &mut decide, &exception, micros, &mut |i, adu| {
            let (verdict, rule, exception) = match i.verdict {
                Verdict::Allowed { rule } => {
                    up += adu.len();
                    bump(&counters.modbus_allowed, 1);
                    (AuditVerdict::Allow, Some(rule), None)
                }
                Verdict::Denied { denial, exception } => {
                    bump(&counters.modbus_denied, 1);
                    (AuditVerdict::Deny, denial.rule(), Some(exception))
                }
                Verdict::Flood => {
                    bump(&counters.modbus_denied, 1);
                    (AuditVerdict::Deny, None, Some(0x06))
                }
                Verdict::Malformed { exception } => {
                    bump(&counters.modbus_malformed, 1);
                    (AuditVerdict::Deny, None, Some(exception))
                }
            };
            if audit.enabled() {
                let name = rule.and_then(|r| policy.rules.get(r as usize)).map_or("", String::as_str);
                let decoded = Decoded::modbus(adu).unwrap_or_else(|| Decoded::header(adu));
                let rule16 = rule.and_then(|r| u16::try_from(r).ok());
                audit.push(AuditRecord::request(id, i.seq, ts, decoded, verdict, rule16, name, exception, adu));
            }
        });
        if let Err(Broken::FramingLost(anomaly)) = result {
            self.detail = Some(format!("{anomaly:?}"));
            return Err(CloseReason::FramingLost);
        }
        // Asset -> gate -> user.
        let mut down = 0;
        insp.recv_from(wires.south);
        let result = insp.responses(&mut wires, micros, &mut |seq, latency, adu| match latency {
            Some(l) => {
                down += adu.len();
                audit.push(AuditRecord::response(id, seq, ts, u32::try_from(l).unwrap_or(u32::MAX), adu));
            }
            None => {
                bump(&counters.modbus_unmatched, 1);
                audit.push(AuditRecord::anomaly(
                    id,
                    ts,
                    "unmatched_response",
                    "a PLC response matched no request; dropped",
                ));
            }
        });
        if let Err(Broken::FramingLost(anomaly)) = result {
            self.detail = Some(format!("asset: {anomaly:?}"));
            return Err(CloseReason::FramingLost);
        }
        Ok((up, down))
    }

    /// S7comm, DNP3 and EtherNet/IP: every request framed, decided and
    /// forwarded or answered; every answer matched.
    fn move_units(
        &mut self,
        ctx: &mut StepCtx<'_>,
        north: &mut Socket<'_>,
        south: &mut Socket<'_>,
    ) -> Result<(usize, usize), CloseReason> {
        if ctx.audit.terminate {
            return Err(CloseReason::AuditUnavailable);
        }
        let since = self.since();
        let Self { inspector, role_ids, asset_id, protocol, id, tls, detail, .. } = self;
        let party = Party { id: *id, roles: &role_ids[..], asset: *asset_id, protocol: *protocol, since };
        let mut wires = Wires { tls, north, south };
        let counters = ctx.counters;
        let result = match inspector {
            Inspector::S7(i) => pump_units(&mut **i, &party, ctx, &mut wires, &counters.s7),
            Inspector::Dnp3(i) => pump_units(&mut **i, &party, ctx, &mut wires, &counters.dnp3),
            Inspector::Enip(i) => pump_units(&mut **i, &party, ctx, &mut wires, &counters.enip),
            Inspector::None | Inspector::Modbus(_) => Ok((0, 0)),
        };
        result.map_err(|anomaly| {
            *detail = Some(anomaly);
            CloseReason::FramingLost
        })
    }

    /// On a new policy generation or when the permitting window ends, asks
    /// the policy again whether this session may go on.
    fn reauthorize(&mut self, ctx: &StepCtx<'_>) -> Option<CloseReason> {
        if self.grant_expired(ctx.unix) {
            return Some(CloseReason::SessionExpired);
        }
        if !self.permit_stale(ctx.unix, ctx.generation) {
            return None;
        }
        if ctx.generation != self.checked_generation {
            // Role and asset ids belong to the policy they came from; the
            // user's roles are the ones the grant had and the user still has.
            if let Some(grant) = self.grant.as_deref() {
                self.role_ids = match ctx.users {
                    None => ctx.policy.role_ids(&grant.roles),
                    Some(users) => {
                        let Some(now) = users.get(&grant.user).filter(|u| u.revoked_at < grant.issued_unix) else {
                            return Some(CloseReason::UserRevoked);
                        };
                        let kept: Vec<String> = grant.roles.iter().filter(|r| now.roles.contains(r)).cloned().collect();
                        if kept.is_empty() {
                            return Some(CloseReason::UserRevoked);
                        }
                        ctx.policy.role_ids(&kept)
                    }
                };
            }
            self.asset_id = ctx.policy.asset_id(&self.target.asset);
        }
        self.checked_generation = ctx.generation;
        let Some(asset) = self.asset_id else { return Some(CloseReason::PolicyRevoked) };
        let q = Query {
            roles: &self.role_ids,
            asset,
            protocol: self.protocol,
            op: Op::Connect,
            modbus: None,
            now: ctx.unix,
            since: self.since(),
        };
        // The rules' max_session_secs and ticket_lifetime_secs as the policy
        // in force has them: a reload that lowers either shortens the
        // sessions already open (the grant had the old ones). A permit
        // lasts until its rule's limit, if sooner than its window's end.
        let ticket_end =
            self.grant.as_deref().map_or(u64::MAX, |g| g.ticket_issued_unix.saturating_add(ctx.ticket_lifetime));
        if ctx.unix >= ticket_end {
            return Some(CloseReason::SessionExpired);
        }
        match ctx.policy.check(&q) {
            Decision::Permit(p) => {
                self.permit_until = p.until.min(ticket_end);
                None
            }
            Decision::Deny(Denial::LimitReached(_)) => Some(CloseReason::SessionExpired),
            Decision::Deny(Denial::OutsideWindow(_)) => Some(CloseReason::WindowClosed),
            Decision::Deny(_) => Some(CloseReason::PolicyRevoked),
        }
    }

    /// When the session was granted and its ticket issued, for the rules'
    /// limits (`None` before the verdict).
    fn since(&self) -> Option<Since> {
        self.grant.as_deref().map(|g| Since { granted: g.issued_unix, ticket_issued: g.ticket_issued_unix })
    }

    /// Resolves the user's roles and the asset in the policy in force
    /// (once, when the session is authorised).
    pub fn bind_policy(&mut self, policy: &Policy, protocol: Protocol) {
        if let Some(grant) = self.grant.as_deref() {
            self.role_ids = policy.role_ids(&grant.roles);
        }
        self.asset_id = policy.asset_id(&self.target.asset);
        self.protocol = protocol;
        // Checked as of the snapshot the verdict was decided on: a later
        // generation (a revocation may have come after the decision; found
        // by a review) makes the first step re-check the user's standing.
        self.checked_generation = self.grant.as_deref().map_or(u64::MAX, |g| g.generation);
        self.permit_until = 0;
        self.inspector = match protocol {
            Protocol::Modbus => Inspector::Modbus(Box::default()),
            Protocol::S7 => Inspector::S7(Box::default()),
            Protocol::Dnp3 => Inspector::Dnp3(Box::default()),
            Protocol::Enip => Inspector::Enip(Box::default()),
            Protocol::Tcp => Inspector::None,
        };
    }

    /// FIN/close_notify and RST propagation once bytes have moved. `held`:
    /// bytes the inspector still holds for the asset.
    fn propagate_close(&mut self, north: &mut Socket<'_>, south: &mut Socket<'_>, held: usize, moved: usize) -> Step {
        // The user is done sending: close_notify or TCP FIN, all delivered.
        if !self.up_fin && (self.tls.peer_closed() || fin_received(north)) && south.send_queue() == 0 && held == 0 {
            south.close();
            self.up_fin = true;
            self.first_fin.get_or_insert(FirstFin::Client);
        }
        if !self.down_fin && fin_received(south) && !self.tls.wants_write() {
            self.tls.close();
            self.tls.push(north);
            north.close();
            self.down_fin = true;
            self.first_fin.get_or_insert(FirstFin::Asset);
        }
        let (ns, ss) = (north.state(), south.state());
        let done = |s: State| matches!(s, State::Closed | State::TimeWait);
        if self.up_fin && self.down_fin {
            if done(ns) && done(ss) {
                return Step::Closed(match self.first_fin {
                    Some(FirstFin::Asset) => CloseReason::AssetClosed,
                    _ => CloseReason::ClientClosed,
                });
            }
        } else if ns == State::Closed {
            south.abort();
            return Step::Closed(CloseReason::ClientReset);
        } else if ss == State::Closed {
            north.abort();
            return Step::Closed(CloseReason::AssetReset);
        }
        Step::Running { moved }
    }
}

/// Who a session is, for the policy and the audit trail.
struct Party<'a> {
    id: u64,
    since: Option<Since>,
    roles: &'a [RoleId],
    asset: Option<u32>,
    protocol: Protocol,
}

/// Moves one protocol's units both ways through its inspector: reads the
/// user's plaintext while the audit trail has room, decides and forwards
/// or answers each unit, then the asset's answers. Returns the payload
/// bytes moved up and down; an error says why a stream could not be framed
/// (prefixed `asset:` for the asset's), for the session's close detail.
fn pump_units<P: UnitProtocol, const N: usize>(
    insp: &mut Units<P, N>,
    party: &Party<'_>,
    ctx: &mut StepCtx<'_>,
    wires: &mut Wires<'_, '_, '_>,
    counters: &InspectCounters,
) -> Result<(usize, usize), String> {
    let (roles, asset, protocol, id, since) = (party.roles, party.asset, party.protocol, party.id, party.since);
    let (policy, unix, micros, ts) = (ctx.policy, ctx.unix, ctx.now.total_micros() as u64, ctx.unix_us);
    let audit = &mut ctx.audit;
    // A unit may take a request record and its overflow in data records.
    if audit.has_room(1 + P::MAX_UNIT.div_ceil(crate::audit::PAYLOAD_LEN)) {
        let n = wires.tls.read_plain(insp.up_spare());
        insp.up_filled(n);
    }
    let mut up = 0;
    let mut decide = |op: Op| match asset {
        Some(asset) => policy.check(&Query { roles, asset, protocol, op, modbus: None, now: unix, since }),
        None => Decision::Deny(Denial::NoRule),
    };
    let result = insp.requests(wires, &mut decide, micros, &mut |i, unit| {
        let (verdict, rule) = match i.verdict {
            UnitVerdict::Transport => {
                up += unit.len();
                (AuditVerdict::Allow, None)
            }
            UnitVerdict::Allowed { rule } => {
                up += unit.len();
                bump(&counters.allowed, 1);
                (AuditVerdict::Allow, Some(rule))
            }
            UnitVerdict::Denied { denial, .. } => {
                bump(&counters.denied, 1);
                (AuditVerdict::Deny, denial.rule())
            }
            UnitVerdict::Flood { .. } => {
                bump(&counters.denied, 1);
                (AuditVerdict::Deny, None)
            }
            UnitVerdict::Malformed { .. } => {
                bump(&counters.malformed, 1);
                (AuditVerdict::Deny, None)
            }
        };
        if audit.enabled() {
            let name = rule.and_then(|r| policy.rules.get(r as usize)).map_or("", String::as_str);
            let rule16 = rule.and_then(|r| u16::try_from(r).ok());
            audit.push(AuditRecord::request(id, i.seq, ts, Decoded::unit(i), verdict, rule16, name, None, unit));
            audit_overflow(audit, id, ts, Direction::Up, unit);
        }
    });
    result.map_err(|a| format!("{a:?}"))?;
    // Asset -> gate -> user.
    let mut down = 0;
    insp.recv_from(wires.south);
    let result = insp.responses(wires, micros, &mut |answer, unit| match answer {
        UnitAnswer::Matched { seq, latency } => {
            down += unit.len();
            audit.push(AuditRecord::response(id, seq, ts, u32::try_from(latency).unwrap_or(u32::MAX), unit));
            audit_overflow(audit, id, ts, Direction::Down, unit);
        }
        UnitAnswer::Unsolicited => {
            down += unit.len();
            audit.push(AuditRecord::response(id, 0, ts, 0, unit));
            audit_overflow(audit, id, ts, Direction::Down, unit);
        }
        UnitAnswer::Unmatched => {
            bump(&counters.unmatched, 1);
            audit.push(AuditRecord::anomaly(
                id,
                ts,
                "unmatched_response",
                "an answer from the asset matched no request; dropped",
            ));
        }
    });
    result.map_err(|a| format!("asset: {a:?}"))?;
    Ok((up, down))
}

/// The bytes of a unit past what its request or response record carries,
/// as data records, so the trail and the capture hold all of it.
fn audit_overflow(audit: &mut AuditOut<'_>, id: u64, ts: u64, direction: Direction, unit: &[u8]) {
    if let Some(rest) = unit.get(crate::audit::PAYLOAD_LEN..) {
        for r in AuditRecord::data_chunks(id, ts, direction, rest) {
            audit.push(r);
        }
    }
}

/// The peer sent FIN and every byte before it has been read.
fn fin_received(s: &Socket<'_>) -> bool {
    matches!(s.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait) && s.recv_queue() == 0
}

/// The unspecified socket address (the login endpoint has no asset).
pub const NO_ASSET: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
