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

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, State};
use smoltcp::time::{Duration, Instant};

use crate::auth::{AuthRequest, AuthVerdict, Credentials, Grant, Purpose};
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
    AssetClosed => "asset_closed": "The asset closed first (FIN), both directions drained.",
    ClientReset => "client_reset": "The user's side reset or vanished; the asset connection was reset too.",
    AssetReset => "asset_reset": "The asset reset an open connection; the user was reset too.",
    AssetRefused => "asset_refused": "The asset answered the connect with RST.",
    AssetUnreachable => "asset_unreachable": "The asset did not answer the connect in time (or no route).",
    TlsFailed => "tls_failed": "The TLS handshake or a record failed (plaintext, old version, bad certificate, ...).",
    HelloMalformed => "hello_malformed": "The first frame inside TLS was not a valid hello (garbage, oversized, wrong kind).",
    HelloTimeout => "hello_timeout": "No complete TLS handshake and hello within the deadline.",
    AuthRefused => "auth_refused": "The hello was answered with a refusal (bad credentials, locked, not authorized, ...).",
    AuthBusy => "auth_busy": "The auth queue was full; the session was dropped before any byte reached an asset.",
    LoginDone => "login_done": "A login or resolve exchange at the gate's own endpoint completed.",
    EndpointRemoved => "endpoint_removed": "A config reload removed the endpoint.",
    Shutdown => "shutdown": "The gate is stopping.",
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

/// The asset and service the endpoint leads to, for checking the hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub asset: String,
    pub service: String,
}

/// Deadline for the TLS handshake plus the hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// One proxied connection.
pub struct Session {
    pub id: u64,
    pub flow: Flow,
    pub kind: Kind,
    pub north: SocketHandle,
    pub south: Option<SocketHandle>,
    pub phase: Phase,
    pub opened: Instant,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Set once an auth worker accepted the user.
    pub grant: Option<Box<Grant>>,
    /// Why the last refusal or failure happened, for the log.
    pub detail: Option<String>,
    target: Target,
    tls: Box<Tls>,
    hello: Option<Box<HelloBuf>>,
    connect_started: Instant,
    connect_timeout: Duration,
    up_fin: bool,
    down_fin: bool,
    first_fin: Option<FirstFin>,
}

struct HelloBuf {
    buf: [u8; hello::HEADER_LEN + hello::MAX_PAYLOAD],
    len: usize,
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
    pub fn new(
        id: u64,
        flow: Flow,
        target: Target,
        north: SocketHandle,
        tls: Tls,
        now: Instant,
        connect_timeout: Duration,
    ) -> Self {
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
            target,
            tls: Box::new(tls),
            hello: Some(Box::new(HelloBuf { buf: [0; hello::HEADER_LEN + hello::MAX_PAYLOAD], len: 0 })),
            connect_started: now,
            connect_timeout,
            up_fin: false,
            down_fin: false,
            first_fin: None,
        }
    }

    /// TLS version and cipher suite negotiated.
    pub fn negotiated(&self) -> (String, String) {
        self.tls.negotiated()
    }

    /// Advances the session after its stacks were polled. `scratch` is the
    /// core's plaintext buffer.
    pub fn step(
        &mut self,
        core: usize,
        north: &mut Socket<'_>,
        mut south: Option<&mut Socket<'_>>,
        scratch: &mut [u8],
        now: Instant,
    ) -> Step {
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
                if self.phase == Phase::Authenticating {
                    // Keep TLS alive (acks, key updates) but read no plaintext.
                    let _ = self.tls.pull(north);
                    self.tls.push(north);
                    return Step::Running { moved: 0 };
                }
                if let Err(e) = self.tls.pull(north) {
                    self.tls.push(north);
                    self.detail = Some(e.0);
                    return self.finish_now(north, CloseReason::TlsFailed);
                }
                self.tls.push(north);
                if self.tls.is_handshaking() {
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
                        self.reply_accept();
                        self.tls.push(north);
                        self.pump(north, south, scratch)
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
                        let _ = self.tls.pull(north);
                        self.tls.push(north);
                        Step::Running { moved: 0 }
                    }
                }
            }
            Phase::Open => match south {
                Some(south) => self.pump(north, south, scratch),
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
                    || now - self.opened > HELLO_DEADLINE * 3
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
    pub fn connecting(&mut self, south: SocketHandle, now: Instant) {
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

    fn finish_now(&mut self, north: &mut Socket<'_>, reason: CloseReason) -> Step {
        self.tls.push(north);
        self.phase = Phase::Finishing(reason);
        Step::Running { moved: 0 }
    }

    fn read_hello(&mut self, core: usize, north: &mut Socket<'_>) -> Step {
        let Some(mut hb) = self.hello.take() else { return Step::Running { moved: 0 } };
        // Read only up to the end of the first frame: what follows is the
        // OT stream and must wait until the user is authorised.
        let want = match hello::frame_len(&hb.buf[..hb.len]) {
            Framing::Complete(n) => n,
            Framing::NeedMore(n) => hb.len + n,
            Framing::Reject(_) => hb.len,
        }
        .min(hb.buf.len());
        if want > hb.len {
            let n = self.tls.read_plain(&mut hb.buf[hb.len..want]);
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

    /// Moves bytes both ways and propagates FIN/close_notify and RST.
    fn pump(&mut self, north: &mut Socket<'_>, south: &mut Socket<'_>, scratch: &mut [u8]) -> Step {
        if let Err(e) = self.tls.pull(north) {
            self.detail = Some(e.0);
            self.tls.push(north);
            south.abort();
            north.abort();
            return Step::Closed(CloseReason::TlsFailed);
        }
        // User -> asset: plaintext out of rustls, as far as the asset's send
        // buffer has room.
        let mut up = 0;
        loop {
            let room = south.send_capacity() - south.send_queue();
            if room == 0 || !south.can_send() {
                break;
            }
            let take = room.min(scratch.len());
            let n = self.tls.read_plain(&mut scratch[..take]);
            if n == 0 {
                break;
            }
            // `room` bytes fit by construction.
            up += south.send_slice(&scratch[..n]).unwrap_or(0);
        }
        // Asset -> user: into rustls as far as its buffer limit allows.
        let mut down = 0;
        while south.can_recv() {
            let tls = &mut self.tls;
            let moved = south.recv(|data| {
                let n = tls.write_plain(data);
                (n, n)
            });
            match moved {
                Ok(0) | Err(_) => break,
                Ok(n) => down += n,
            }
        }
        self.tls.push(north);
        self.bytes_up += up as u64;
        self.bytes_down += down as u64;

        // The user is done sending: close_notify or TCP FIN, all delivered.
        if !self.up_fin && (self.tls.peer_closed() || fin_received(north)) && south.send_queue() == 0 {
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
        Step::Running { moved: up + down }
    }
}

/// The peer sent FIN and every byte before it has been read.
fn fin_received(s: &Socket<'_>) -> bool {
    matches!(s.state(), State::CloseWait | State::LastAck | State::Closing | State::TimeWait) && s.recv_queue() == 0
}

/// The unspecified socket address (the login endpoint has no asset).
pub const NO_ASSET: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
