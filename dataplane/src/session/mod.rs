//! Sessions: one user connection on a north stack joined to one asset
//! connection on the segment's south stack.
//!
//! The state machine (this stage; TLS and authentication insert
//! `Handshaking` and `Authenticating` before `Connecting`):
//!
//! ```text
//!   north accepted ──> Connecting ──south established──> Open ──both FINs──> closed
//!                          │                               │
//!                          └─ south RST / timeout ─> user RST (asset_refused / asset_unreachable)
//!                                                          └─ RST either side ─> RST the other
//! ```
//!
//! Bytes move between the two sockets' buffers directly (one copy, smoltcp
//! ring to smoltcp ring) and only as far as the receiving side has room, so a
//! slow asset closes the user's TCP window and vice versa (backpressure).

use std::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{Socket, State};
use smoltcp::time::{Duration, Instant};

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
    ClientReset => "client_reset": "The user's side reset; the asset connection was reset too.",
    AssetReset => "asset_reset": "The asset reset an open connection; the user was reset too.",
    AssetRefused => "asset_refused": "The asset answered the connect with RST.",
    AssetUnreachable => "asset_unreachable": "The asset did not answer the connect in time (or no route).",
    EndpointRemoved => "endpoint_removed": "A config reload removed the endpoint.",
    Shutdown => "shutdown": "The gate is stopping.",
}

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The user is connected; the gate is connecting to the asset.
    Connecting,
    /// Both connections are up; bytes flow.
    Open,
}

/// Who sent the first FIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FirstFin {
    Client,
    Asset,
}

/// Who talks to what through a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// The user's address and port.
    pub client: SocketAddrV4,
    /// The overlay endpoint the user connected to.
    pub endpoint: SocketAddrV4,
    /// The asset service behind it.
    pub asset: SocketAddrV4,
}

/// One proxied connection.
#[derive(Debug)]
pub struct Session {
    pub id: u64,
    pub flow: Flow,
    pub north: SocketHandle,
    pub south: SocketHandle,
    pub phase: Phase,
    pub opened: Instant,
    pub bytes_up: u64,
    pub bytes_down: u64,
    connect_timeout: Duration,
    up_fin: bool,
    down_fin: bool,
    first_fin: Option<FirstFin>,
}

/// What a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Still running; `moved` payload bytes this step.
    Running { moved: usize },
    /// Over; both sockets are closed, reset, or in TIME-WAIT.
    Closed(CloseReason),
}

impl Session {
    /// A session whose south socket has just been asked to connect.
    pub fn new(
        id: u64,
        flow: Flow,
        (north, south): (SocketHandle, SocketHandle),
        now: Instant,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            id,
            flow,
            north,
            south,
            phase: Phase::Connecting,
            opened: now,
            bytes_up: 0,
            bytes_down: 0,
            connect_timeout,
            up_fin: false,
            down_fin: false,
            first_fin: None,
        }
    }

    /// Advances the session after its stacks were polled.
    pub fn step(&mut self, north: &mut Socket<'_>, south: &mut Socket<'_>, now: Instant) -> Step {
        if self.phase == Phase::Connecting {
            match south.state() {
                State::Established | State::CloseWait => {
                    // The connect timeout has done its job; an idle OT
                    // session may stay quiet for hours.
                    south.set_timeout(None);
                    self.phase = Phase::Open;
                }
                State::Closed => {
                    north.abort();
                    let timed_out =
                        now - self.opened + Duration::from_millis(50) >= self.connect_timeout;
                    return Step::Closed(if timed_out {
                        CloseReason::AssetUnreachable
                    } else {
                        CloseReason::AssetRefused
                    });
                }
                _ if north.state() == State::Closed => {
                    south.abort();
                    return Step::Closed(CloseReason::ClientReset);
                }
                _ => return Step::Running { moved: 0 },
            }
        }

        let up = transfer(north, south);
        let down = transfer(south, north);
        self.bytes_up += up as u64;
        self.bytes_down += down as u64;

        // A FIN is forwarded once everything before it has been handed over.
        if !self.up_fin && fin_received(north) {
            south.close();
            self.up_fin = true;
            self.first_fin.get_or_insert(FirstFin::Client);
        }
        if !self.down_fin && fin_received(south) {
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
    matches!(
        s.state(),
        State::CloseWait | State::LastAck | State::Closing | State::TimeWait
    ) && s.recv_queue() == 0
}

/// Moves as many bytes from `src`'s receive buffer to `dst`'s send buffer as
/// `dst` has room for. Returns the count.
pub fn transfer(src: &mut Socket<'_>, dst: &mut Socket<'_>) -> usize {
    let mut moved = 0;
    // A ring buffer hands out at most two contiguous pieces.
    for _ in 0..2 {
        if !src.can_recv() || !dst.can_send() {
            break;
        }
        let step = src.recv(|data| {
            let n = dst.send_slice(data).unwrap_or(0);
            (n, n)
        });
        match step {
            Ok(0) | Err(_) => break,
            Ok(n) => moved += n,
        }
    }
    moved
}
