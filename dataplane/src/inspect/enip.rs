//! EtherNet/IP-CIP inspection and enforcement (explicit messaging over TCP),
//! per request, inline.
//!
//! The user's plaintext is framed into encapsulation messages. Session
//! management and discovery (RegisterSession, UnRegisterSession, NOP,
//! ListIdentity/Services/Interfaces) and connection management (Forward
//! Open, Large Forward Open, Forward Close) are transport. Every CIP request
//! (in SendRRData or, connected, in SendUnitData, exactly two CPF items;
//! Unconnected Sends are unwrapped, up to four deep, to the request they
//! carry; each request of a Multiple Service Packet is checked) maps to an
//! operation:
//!
//! | CIP service                                                     | operation    |
//! |-----------------------------------------------------------------|--------------|
//! | Get_Attribute(s) on the Identity object; Connection Manager data/owner queries | `diagnostic` |
//! | Get_Attribute_Single/List/All, Get_Member; on tags: Read Tag (Fragmented), Get Instance Attribute List | `read` |
//! | Set_Attribute_Single/List/All, Set/Insert/Remove_Member; on tags: Write Tag (Fragmented), Read-Modify-Write Tag | `write` |
//! | Reset, Start, Stop                                              | `control`    |
//! | Create, Delete, Apply_Attributes, Save, Restore                 | `program`    |
//! | anything else                                                   | `other`      |
//!
//! Allowed requests go to the target unchanged. Denied ones are answered by
//! the gate as the target answers a request it may not perform: the reply
//! service (`service | 0x80`) with general status 0x0F (privilege
//! violation; a Multiple Service Packet gets 0x8A, 0x1E and a 0x0F reply
//! per request), in the same encapsulation command, session and sender
//! context, and for a connected request with the connection's sequence
//! count and the target-to-originator connection id the gate learned from
//! the Forward Open. A message with an unknown encapsulation command gets
//! encapsulation status 0x0001; a CIP request that does not parse, general
//! status 0x13. Replies are matched to requests (encapsulation command and
//! sender context; a SendUnitData reply by its connection, the T->O id
//! learned from the Forward Open or the request's own O->T id, on which
//! cpppo answers, and its sequence count); others are dropped and counted.
//!
//! Buffers are fixed (two messages per direction). Nothing here allocates.

use super::{Answer, Inspected, Protocol, Units, Verdict, MAX_REFUSAL};
use crate::policy::{Decision, Op};
use crate::wire::enip::{self as wire, Anomaly, Cip, Cpf, Encap, Framer, MAX_MESSAGE};

// A refusal fits the shared buffer.
const _: () = assert!(wire::MAX_REFUSAL <= MAX_REFUSAL);

/// Requests in flight per session; more is a flood.
pub const MAX_OUTSTANDING: usize = 16;
/// Connections per session (Forward Opens through the gate).
const MAX_CONNECTIONS: usize = 8;

/// What a reply is matched by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// Encapsulation command and sender context.
    Encap(u16, [u8; 8]),
    /// A connected message (SendUnitData): the connection ids its reply may
    /// come on, the T->O id learned from the Forward Open and the request's
    /// own O->T id (targets answer on either; `None`: the opening was not
    /// seen, any id), and its sequence count.
    Connected(Option<(u32, u32)>, u16),
}

impl Key {
    /// Whether a reply with key `reply` answers a request with this key.
    fn answered_by(self, reply: Key) -> bool {
        match (self, reply) {
            (Key::Connected(ids, seq), Key::Connected(reply_ids, reply_seq)) => {
                let reply_id = reply_ids.map(|r| r.0);
                seq == reply_seq
                    && ids.is_none_or(|(t_to_o, o_to_t)| reply_id.is_some_and(|r| r == t_to_o || r == o_to_t))
            }
            (a, b) => a == b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    key: Key,
    seq: u32,
    sent_at: u64,
    /// A Forward Open: the originator's T->O connection id.
    opens: Option<u32>,
}

/// An EtherNet/IP session's inspector: [`Enip`] driven by [`Units`].
pub type EnipInspector = Units<Enip, { 2 * MAX_MESSAGE }>;

/// EtherNet/IP's side of an inspector: requests in flight, connections.
pub struct Enip {
    /// Requests in flight; one unanswered for [`super::EXPIRE_US`] gives up its
    /// slot (a target that drops requests does not wedge the session).
    pending: [Option<Pending>; MAX_OUTSTANDING],
    /// Open connections.
    connections: Connections,
    /// What the last request's reply will be matched by.
    last: Option<Pending>,
}

impl Default for Enip {
    fn default() -> Self {
        Self { pending: [None; MAX_OUTSTANDING], connections: Connections::default(), last: None }
    }
}

/// The connections Forward Opens opened: the O->T id the target chose and
/// the T->O id the originator chose. The target answers a connected
/// request (sent on O->T) on T->O, and so does the gate when it refuses
/// one. The oldest makes room for a new one (a closed one, most likely).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connections {
    ids: [(u32, u32); MAX_CONNECTIONS],
    open: usize,
}

impl Connections {
    /// A connection opened: O->T `o_to_t`, T->O `t_to_o`.
    pub fn learn(&mut self, o_to_t: u32, t_to_o: u32) {
        if self.open == MAX_CONNECTIONS {
            self.ids.copy_within(1.., 0);
            self.open -= 1;
        }
        self.ids[self.open] = (o_to_t, t_to_o);
        self.open += 1;
    }

    /// The T->O connection id for a connected request on O->T `id` (the
    /// request's own id when the connection's opening was not seen).
    pub fn reply_id(&self, id: u32) -> u32 {
        self.learned(id).unwrap_or(id)
    }

    /// The T->O connection id of O->T `id`, if its opening was seen.
    fn learned(&self, id: u32) -> Option<u32> {
        self.ids[..self.open].iter().find(|c| c.0 == id).map(|c| c.1)
    }
}

/// The T->O connection id a Forward Open (or Large Forward Open) asks for:
/// its data is priority/tick, timeout, O->T id, T->O id.
fn forward_open_t_to_o(open: &Cip<'_>) -> Option<u32> {
    let id = open.data.get(6..10)?;
    Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

/// The O->T connection id in a CIP reply to a Forward Open, if it succeeded:
/// service, reserved, general status 0, additional status size, the id.
fn forward_open_o_to_t(reply: &[u8]) -> Option<u32> {
    let opened = [wire::FORWARD_OPEN | 0x80, wire::LARGE_FORWARD_OPEN | 0x80];
    match (reply.first(), reply.get(2), reply.get(4..8)) {
        (Some(service), Some(&0), Some(id)) if opened.contains(service) => {
            Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
        }
        _ => None,
    }
}

/// The T->O connection id the encapsulation message `msg` asks for, if it
/// is a Forward Open to the Connection Manager (for the audit writer, which
/// rebuilds refusals from the trail).
pub fn forward_open_request(msg: &[u8]) -> Option<u32> {
    let e = Encap::parse(msg)?;
    if !matches!(e.command, wire::SEND_RR_DATA | wire::SEND_UNIT_DATA) {
        return None;
    }
    let open = Cip::parse(e.cpf()?.message)?;
    let opens = matches!(open.service, wire::FORWARD_OPEN | wire::LARGE_FORWARD_OPEN);
    (open.is_connection_manager() && opens).then(|| forward_open_t_to_o(&open))?
}

/// The O->T connection id in `msg`, a target's reply to a Forward Open, if
/// the connection opened.
pub fn forward_open_reply(msg: &[u8]) -> Option<u32> {
    forward_open_o_to_t(Encap::parse(msg)?.cpf()?.message)
}

/// How the gate answers a message it does not forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    None,
    /// A CIP error reply: service, general status.
    Cip(u8, u8),
    /// An encapsulation error: status.
    Encap(u32),
    /// A Multiple Service Packet refused whole: each request's status.
    Msp(u8),
}

/// Writes the refusal `refusal` of the message `unit`, a connected one on
/// the reply connection `conn` gives for its id; returns its length.
fn emit(unit: &[u8], refusal: Refusal, conn: &dyn Fn(u32) -> u32, out: &mut [u8]) -> usize {
    // The framer accepted it, so it parses; nothing to answer otherwise.
    let Some(e) = Encap::parse(unit) else { return 0 };
    let cpf = e.cpf().unwrap_or(Cpf { connection: None, sequence: None, message: &[] });
    let reply_conn = cpf.connection.map_or(0, conn);
    match refusal {
        Refusal::None => 0,
        Refusal::Encap(status) => wire::emit_encap_error(out, &e, status),
        Refusal::Cip(service, status) => wire::emit_cip_error(out, &e, &cpf, reply_conn, service, status),
        Refusal::Msp(status) => {
            // One reply per request, up to what a refusal holds (more: the
            // general status alone).
            let mut services = [0u8; wire::MAX_MSP_REPLIES + 1];
            let mut n = 0;
            if let Some(packet) = Cip::parse(cpf.message).and_then(Cip::target) {
                let _ = each_request(&packet, &mut |s| {
                    if n < services.len() {
                        services[n] = s.service;
                        n += 1;
                    }
                });
            }
            wire::emit_msp_refusal(out, &e, &cpf, reply_conn, &services[..n], status)
        }
    }
}

/// Calls `f` with each request of a Multiple Service Packet, each through
/// its Unconnected Sends. `None` if one does not parse or is itself a
/// packet (nesting is refused, not looked into).
fn each_request<'a>(packet: &Cip<'a>, f: &mut dyn FnMut(Cip<'a>)) -> Option<()> {
    for k in 0..packet.service_count()? {
        let s = packet.service(k)?.target()?;
        if s.service == wire::MULTIPLE_SERVICE_PACKET {
            return None;
        }
        f(s);
    }
    Some(())
}

impl Enip {
    /// Reads and decides the message `unit`: what happened, how it is
    /// refused if it is, and what its reply will be matched by (`None`: no
    /// reply comes). A message that would wait for a reply while
    /// [`MAX_OUTSTANDING`] do is refused as a flood.
    fn inspect(&self, unit: &[u8], decide: &mut dyn FnMut(Op) -> Decision) -> (Inspected, Refusal, Option<Pending>) {
        let (i, refusal, reply) = self.classify(unit, decide);
        if reply.is_none() || self.free_slot().is_some() {
            return (i, refusal, reply);
        }
        let (refusal, error) = if i.function == 0 {
            (Refusal::Encap(wire::STATUS_INSUFFICIENT_MEMORY), wire::STATUS_INSUFFICIENT_MEMORY as u16)
        } else {
            let status = wire::STATUS_RESOURCE_UNAVAILABLE;
            (Refusal::Cip(i.function, status), u16::from(status))
        };
        (Inspected { verdict: Verdict::Flood { error }, ..i }, refusal, None)
    }

    fn classify(&self, unit: &[u8], decide: &mut dyn FnMut(Op) -> Decision) -> (Inspected, Refusal, Option<Pending>) {
        let mut i = Inspected::UNKNOWN;
        let malformed = |i: Inspected, error: u16| Inspected { verdict: Verdict::Malformed { error }, ..i };
        let Some(e) = Encap::parse(unit) else {
            let error = wire::STATUS_BAD_DATA as u16;
            return (malformed(i, error), Refusal::Encap(wire::STATUS_BAD_DATA), None);
        };
        i.subfunction = e.command as u8;
        let key = Key::Encap(e.command, e.context);
        let reply = |key| Some(Pending { key, seq: 0, sent_at: 0, opens: None });
        match e.command {
            wire::REGISTER_SESSION | wire::LIST_IDENTITY | wire::LIST_SERVICES | wire::LIST_INTERFACES => {
                i.op = Op::Connect;
                return (i, Refusal::None, reply(key));
            }
            wire::NOP | wire::UNREGISTER_SESSION => return (i, Refusal::None, None),
            wire::SEND_RR_DATA | wire::SEND_UNIT_DATA => {}
            _ => {
                let error = wire::STATUS_INVALID_COMMAND as u16;
                return (malformed(i, error), Refusal::Encap(wire::STATUS_INVALID_COMMAND), None);
            }
        }
        let Some(cpf) = e.cpf() else {
            let error = wire::STATUS_BAD_DATA as u16;
            return (malformed(i, error), Refusal::Encap(wire::STATUS_BAD_DATA), None);
        };
        // A connected request in SendUnitData is answered on its
        // connection; anything in SendRRData by command and context.
        let key = match cpf.sequence {
            Some(seq) if e.command == wire::SEND_UNIT_DATA => {
                let ids = cpf.connection.and_then(|id| self.connections.learned(id).map(|t_to_o| (t_to_o, id)));
                Key::Connected(ids, seq)
            }
            _ => key,
        };
        let Some(outer) = Cip::parse(cpf.message) else {
            let service = cpf.message.first().copied().unwrap_or(0) & 0x7f;
            i.function = service;
            let error = u16::from(wire::STATUS_NOT_ENOUGH_DATA);
            return (malformed(i, error), Refusal::Cip(service, wire::STATUS_NOT_ENOUGH_DATA), None);
        };
        i.function = outer.service;
        i.pdu_ref = outer.class;
        if outer.is_connection_manager() {
            match outer.service {
                wire::FORWARD_OPEN | wire::LARGE_FORWARD_OPEN => {
                    let t_to_o = forward_open_t_to_o(&outer);
                    i.op = Op::Connect;
                    return (i, Refusal::None, Some(Pending { key, seq: 0, sent_at: 0, opens: t_to_o }));
                }
                wire::FORWARD_CLOSE => {
                    i.op = Op::Connect;
                    return (i, Refusal::None, reply(key));
                }
                _ => {}
            }
        }
        // The request the target acts on, through any Unconnected Sends.
        let Some(target) = outer.target() else {
            let error = u16::from(wire::STATUS_NOT_ENOUGH_DATA);
            return (malformed(i, error), Refusal::Cip(outer.service, wire::STATUS_NOT_ENOUGH_DATA), None);
        };
        i.function = target.service;
        i.pdu_ref = target.class;
        let mut refused = Refusal::Cip(target.service, wire::STATUS_PRIVILEGE_VIOLATION);
        let error = u16::from(wire::STATUS_PRIVILEGE_VIOLATION);
        let verdict = if target.service == wire::MULTIPLE_SERVICE_PACKET {
            if each_request(&target, &mut |_| {}).is_none() {
                let error = u16::from(wire::STATUS_NOT_ENOUGH_DATA);
                return (malformed(i, error), Refusal::Cip(target.service, wire::STATUS_NOT_ENOUGH_DATA), None);
            }
            refused = Refusal::Msp(wire::STATUS_PRIVILEGE_VIOLATION);
            // All or nothing: the packet's verdict is its first refusal's.
            let mut verdict: Option<Verdict> = None;
            let _ = each_request(&target, &mut |s| {
                if matches!(verdict, Some(Verdict::Denied { .. })) {
                    return;
                }
                let op = op_of(&s);
                match decide(op) {
                    Decision::Deny(denial) => {
                        i.op = op;
                        verdict = Some(Verdict::Denied { denial, error });
                    }
                    Decision::Permit(p) => {
                        if verdict.is_none() || i.op == Op::Read {
                            i.op = op;
                            verdict = Some(Verdict::Allowed { rule: p.rule });
                        }
                    }
                }
            });
            verdict.unwrap_or(Verdict::Transport)
        } else {
            i.op = op_of(&target);
            match decide(i.op) {
                Decision::Permit(p) => Verdict::Allowed { rule: p.rule },
                Decision::Deny(denial) => Verdict::Denied { denial, error },
            }
        };
        i.verdict = verdict;
        match verdict {
            Verdict::Denied { .. } => (i, refused, None),
            _ => (i, Refusal::None, reply(key)),
        }
    }

    /// A slot for a request in flight (requests unanswered for
    /// [`super::EXPIRE_US`] have given theirs up: [`Protocol::expire`]).
    fn free_slot(&self) -> Option<usize> {
        self.pending.iter().position(Option::is_none)
    }

    /// What a message from the target is.
    fn classify_answer(&mut self, unit: &[u8], now: u64) -> Answer {
        let Some(e) = Encap::parse(unit) else { return Answer::Unmatched };
        let cpf = e.cpf();
        let key = match cpf.and_then(|c| c.sequence) {
            Some(seq) if e.command == wire::SEND_UNIT_DATA => {
                Key::Connected(cpf.and_then(|c| c.connection).map(|id| (id, id)), seq)
            }
            _ => Key::Encap(e.command, e.context),
        };
        let Some(k) = self.pending.iter().position(|p| p.is_some_and(|p| p.key.answered_by(key))) else {
            return Answer::Unmatched;
        };
        let Some(p) = self.pending[k].take() else { return Answer::Unmatched };
        if let (Some(t_to_o), Some(o_to_t)) = (p.opens, cpf.and_then(|c| forward_open_o_to_t(c.message))) {
            self.connections.learn(o_to_t, t_to_o);
        }
        Answer::Matched { seq: p.seq, latency: now.saturating_sub(p.sent_at) }
    }
}

impl Protocol for Enip {
    type Anomaly = Anomaly;
    type Saved = ([Option<Pending>; MAX_OUTSTANDING], Connections);
    const MAX_UNIT: usize = MAX_MESSAGE;

    fn frame(buf: &[u8]) -> Result<Option<usize>, Anomaly> {
        Framer::next(buf).into_result()
    }

    fn request(
        &mut self,
        unit: &mut [u8],
        decide: &mut dyn FnMut(Op) -> Decision,
        out: &mut [u8; MAX_REFUSAL],
    ) -> Result<(Inspected, Option<usize>), Anomaly> {
        let (i, refusal, reply) = self.inspect(unit, decide);
        self.last = reply;
        let conn = |id| self.connections.reply_id(id);
        Ok((i, (refusal != Refusal::None).then(|| emit(unit, refusal, &conn, out))))
    }

    fn sent(&mut self, i: &Inspected, now: u64) {
        if let (Some(p), Some(k)) = (self.last.take(), self.free_slot()) {
            self.pending[k] = Some(Pending { seq: i.seq, sent_at: now, ..p });
        }
    }

    fn expire(&mut self, deadline: u64) {
        for slot in &mut self.pending {
            if slot.is_some_and(|p| p.sent_at <= deadline) {
                *slot = None;
            }
        }
    }

    fn answer(&mut self, unit: &[u8], now: u64) -> Result<Answer, Anomaly> {
        Ok(self.classify_answer(unit, now))
    }

    fn save(&self) -> Self::Saved {
        (self.pending, self.connections)
    }

    fn restore(&mut self, saved: Self::Saved) {
        (self.pending, self.connections) = saved;
    }
}

/// The operation a CIP request is (see the module's table). Codes from
/// 0x4B up are object-specific: they are tag services only on a symbolic
/// path or the Logix Symbol and Template objects; elsewhere `other`.
fn op_of(c: &Cip<'_>) -> Op {
    use wire::*;
    let tags = matches!(c.class, 0 | CLASS_SYMBOL | CLASS_TEMPLATE);
    match (c.class, c.service) {
        (CLASS_CONNECTION_MANAGER, FORWARD_OPEN | LARGE_FORWARD_OPEN | FORWARD_CLOSE) => Op::Connect,
        (CLASS_CONNECTION_MANAGER, GET_CONNECTION_DATA | SEARCH_CONNECTION_DATA | GET_CONNECTION_OWNER) => {
            Op::Diagnostic
        }
        (CLASS_CONNECTION_MANAGER, _) => Op::Other,
        (CLASS_IDENTITY, GET_ATTRIBUTES_ALL | GET_ATTRIBUTE_LIST | GET_ATTRIBUTE_SINGLE) => Op::Diagnostic,
        (_, GET_ATTRIBUTES_ALL | GET_ATTRIBUTE_LIST | GET_ATTRIBUTE_SINGLE | GET_MEMBER) => Op::Read,
        (_, SET_ATTRIBUTES_ALL | SET_ATTRIBUTE_LIST | SET_ATTRIBUTE_SINGLE) => Op::Write,
        (_, SET_MEMBER | INSERT_MEMBER | REMOVE_MEMBER) => Op::Write,
        (_, RESET | START | STOP) => Op::Control,
        (_, CREATE | DELETE | APPLY_ATTRIBUTES | RESTORE | SAVE) => Op::Program,
        (_, READ_TAG | READ_TAG_FRAGMENTED | GET_INSTANCE_ATTRIBUTE_LIST) if tags => Op::Read,
        (_, WRITE_TAG | WRITE_TAG_FRAGMENTED | READ_MODIFY_WRITE_TAG) if tags => Op::Write,
        _ => Op::Other,
    }
}

/// The refusal the gate sent for the message `msg`, rebuilt for the
/// capture from the audit record (`service` and `error` as recorded);
/// a connected one on the T->O id `connections` holds for its O->T id, as
/// the gate sent it (the audit writer learns them from the trail's Forward
/// Opens and their replies, as the inspector does).
pub fn refusal(
    msg: &[u8],
    service: u8,
    error: u16,
    connections: &Connections,
    out: &mut [u8; MAX_REFUSAL],
) -> Option<usize> {
    let e = Encap::parse(msg)?;
    let refusal = match e.cpf() {
        None if matches!(u32::from(error), wire::STATUS_INVALID_COMMAND | wire::STATUS_BAD_DATA) => {
            Refusal::Encap(u32::from(error))
        }
        None => return None,
        Some(_) if service == wire::MULTIPLE_SERVICE_PACKET && error == u16::from(wire::STATUS_PRIVILEGE_VIOLATION) => {
            Refusal::Msp(wire::STATUS_PRIVILEGE_VIOLATION)
        }
        Some(_) => Refusal::Cip(service, error as u8),
    };
    let n = emit(msg, refusal, &|id| connections.reply_id(id), out);
    (n > 0).then_some(n)
}

#[cfg(test)]
mod tests;
