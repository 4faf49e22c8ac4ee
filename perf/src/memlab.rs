//! The whole lab in one process: a user host, the gate's dp core and a PLC,
//! joined by memory links. The same story as the namespace lab, with no root
//! and no kernel: `accessgate demo`, the in-memory tests and the benches.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use control::{Config, Control};
use dataplane::core::{Clock, Core, CoreOptions};
use dataplane::io::{memory, FramePort};
use dataplane::snapshot::{Ipv4Net, Protocol};

use smoltcp::iface::SocketHandle;

use crate::host::Host;
use crate::sim::PlcSim;

/// Frames a memory link holds per direction.
pub const LINK_DEPTH: usize = 1024;

/// The in-memory lab.
pub struct MemLab {
    pub control: Control,
    pub gate: Core,
    pub user: Host,
    pub plc: Host,
    pub sim: PlcSim,
    pub clock: Clock,
    /// The first endpoint (where the user connects).
    pub endpoint: SocketAddrV4,
    /// The PLC's cable is pulled: its frames are discarded unseen.
    pub plc_offline: bool,
}

fn mac(last: u8) -> [u8; 6] {
    [0x02, 0x00, 0x5e, 0x00, 0x00, last]
}

impl MemLab {
    /// Builds the lab for `config`: the user sits at host .2 of the north
    /// subnet, the PLC at the first endpoint's underlay address.
    ///
    /// # Errors
    /// The config has no endpoint, or the kernel refused an eventfd.
    pub fn new(config: &Config, opts: CoreOptions) -> io::Result<Self> {
        let snap = &config.snapshot;
        let ep = snap
            .endpoints
            .first()
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "the config has no endpoint")
            })?
            .clone();
        let seg = &snap.segments[ep.segment];
        let north = snap
            .north_address
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no north address"))?;
        let mut control = Control::new(None, config);
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
            gate_ports.push(Box::new(g));
            if link == 0 {
                user_port = Some(h);
            } else if link == seg.south_link {
                plc_port = Some(h);
            }
        }
        let (Some(user_port), Some(plc_port)) = (user_port, plc_port) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the config needs a north and a south link",
            ));
        };
        let user_ip = Ipv4Addr::from(u32::from(north.network()) + 2);
        let user = Host::new(
            user_port,
            Ipv4Net {
                addr: user_ip,
                len: north.len,
            },
            Some(north.addr),
            now,
        );
        let mut plc = Host::new(
            plc_port,
            Ipv4Net {
                addr: *ep.underlay.ip(),
                len: seg.south_address.len,
            },
            None,
            now,
        );
        // A Modbus endpoint gets the simulator; other protocols leave the
        // port to the test (a sink, a VNC stand-in, ...).
        let sim_port = if ep.protocol == Protocol::Modbus {
            ep.underlay.port()
        } else {
            0
        };
        let sim = PlcSim::new(&mut plc, sim_port, if sim_port == 0 { 0 } else { 64 });
        let (counters, events) = control.add_core();
        let gate = Core::new(0, gate_ports, control.shared(), counters, events, opts)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let _ = Arc::strong_count(&control.shared());
        Ok(Self {
            control,
            gate,
            user,
            plc,
            sim,
            clock,
            endpoint: ep.overlay,
            plc_offline: false,
        })
    }

    /// One round: gate, user, PLC. Returns work done.
    pub fn step(&mut self) -> usize {
        let now = self.clock.now();
        let mut work = self.gate.poll_once();
        work += self.user.poll(now);
        if self.plc_offline {
            let _ = self.plc.port.rx_burst(usize::MAX, &mut |_| {});
        } else {
            work += self.plc.poll(now);
            work += self.sim.serve(&mut self.plc);
        }
        work
    }

    /// Waits for `h` to connect, sends one request ADU and returns the
    /// complete response ADU, or `None` if none came within `limit`.
    pub fn transact(
        &mut self,
        h: SocketHandle,
        adu: &[u8],
        limit: std::time::Duration,
    ) -> Option<Vec<u8>> {
        if !self.run_until(limit, |l| l.user.socket(h).may_send()) {
            return None;
        }
        self.user.socket(h).send_slice(adu).ok()?;
        let mut got = Vec::new();
        let done = self.run_until(limit, |l| {
            let s = l.user.socket(h);
            while s.can_recv() {
                let _ = s.recv(|d| {
                    got.extend_from_slice(d);
                    (d.len(), ())
                });
            }
            got.len() >= 6 && got.len() >= 6 + usize::from(u16::from_be_bytes([got[4], got[5]]))
        });
        done.then_some(got)
    }

    /// Steps until `done` holds or `limit` passes. Returns whether it held.
    pub fn run_until(
        &mut self,
        limit: std::time::Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
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
