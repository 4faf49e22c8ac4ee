//! One pcapng capture per session: the decrypted OT stream as a synthetic
//! TCP connection between the user's address and the asset, so Wireshark
//! and tshark dissect it (Modbus on port 502, S7 on 102, ...).
//!
//! Layout: a Section Header Block whose `shb_comment` names the user,
//! session and asset; one Interface Description Block (Ethernet, `if_tsresol`
//! microseconds, `opt_comment` again); then Enhanced Packet Blocks: a
//! three-way handshake at session open, one segment per request, response or
//! data chunk (correct sequence/acknowledgement numbers, IPv4 and TCP
//! checksums; a request's verdict in the packet's `opt_comment`), and a FIN
//! exchange at close. All integers are little-endian (the SHB's byte-order
//! magic says so). The SHA-256 of the file is computed as it is written; the
//! session-close record carries it.

use std::net::SocketAddrV4;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::chain::hex;
use super::durable::DurableFile;

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const BYTE_ORDER_MAGIC: u32 = 0x1A2B_3C4D;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const SHB_USERAPPL: u16 = 4;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;

const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const ASSET_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const CLIENT_ISN: u32 = 0x1000_0000;
const ASSET_ISN: u32 = 0x2000_0000;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Who sent a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Client,
    Asset,
}

/// One session's capture file.
#[derive(Debug)]
pub struct Capture {
    file: DurableFile,
    digest: Sha256,
    client: SocketAddrV4,
    asset: SocketAddrV4,
    /// Next sequence number of each side.
    client_next: u32,
    asset_next: u32,
    ip_id: u16,
    packets: u64,
    closed: bool,
    /// The block being built, kept between segments (a few hundred bytes:
    /// payloads are at most `PAYLOAD_LEN`), so a segment allocates nothing.
    scratch: Vec<u8>,
}

/// What the capture's comments say.
pub struct Header<'a> {
    pub session: &'a str,
    pub user: &'a str,
    pub roles: &'a str,
    pub asset_name: &'a str,
    pub protocol: &'a str,
}

impl Capture {
    /// Starts the capture at `path` (written on the next flush) with the
    /// section and interface blocks and the handshake at `ts_us`.
    pub fn create(path: &Path, header: &Header<'_>, client: SocketAddrV4, asset: SocketAddrV4, ts_us: u64) -> Self {
        let mut c = Self {
            file: DurableFile::lazy(path),
            digest: Sha256::new(),
            client,
            asset,
            client_next: CLIENT_ISN,
            asset_next: ASSET_ISN,
            ip_id: 1,
            packets: 0,
            closed: false,
            scratch: Vec::new(),
        };
        let comment = format!(
            "Access Gate session {} user {} (roles {}) {} -> asset {} {} ({})",
            header.session, header.user, header.roles, client, header.asset_name, asset, header.protocol
        );
        let mut shb = Block::new(SHB);
        shb.u32(BYTE_ORDER_MAGIC).u16(1).u16(0).u64(u64::MAX);
        shb.option(OPT_COMMENT, comment.as_bytes());
        shb.option(SHB_USERAPPL, b"accessgate");
        shb.option(OPT_END, &[]);
        c.put(&shb.finish());
        let mut idb = Block::new(IDB);
        idb.u16(LINKTYPE_ETHERNET).u16(0).u32(0);
        idb.option(IF_NAME, format!("session-{}", header.session).as_bytes());
        idb.option(OPT_COMMENT, format!("user {} session {}", header.user, header.session).as_bytes());
        idb.option(IF_TSRESOL, &[6]);
        idb.option(OPT_END, &[]);
        c.put(&idb.finish());
        c.segment(ts_us, Peer::Client, SYN, &[], None);
        c.segment(ts_us, Peer::Asset, SYN | ACK, &[], None);
        c.segment(ts_us, Peer::Client, ACK, &[], None);
        c
    }

    /// Records `payload` sent by `from` at `ts_us`.
    pub fn data(&mut self, ts_us: u64, from: Peer, payload: &[u8], comment: Option<&str>) {
        if !self.closed && !payload.is_empty() {
            self.segment(ts_us, from, PSH | ACK, payload, comment);
        }
    }

    /// Ends the connection with a FIN exchange (once).
    pub fn close(&mut self, ts_us: u64, comment: Option<&str>) {
        if self.closed {
            return;
        }
        self.segment(ts_us, Peer::Client, FIN | ACK, &[], comment);
        self.segment(ts_us, Peer::Asset, FIN | ACK, &[], None);
        self.segment(ts_us, Peer::Client, ACK, &[], None);
        self.closed = true;
    }

    /// Lowercase hex SHA-256 of everything written so far.
    pub fn sha256(&self) -> String {
        hex(&self.digest.clone().finalize())
    }

    /// Packets written.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Bytes accepted and not yet synced.
    pub fn pending(&self) -> usize {
        self.file.unsynced()
    }

    pub fn file(&mut self) -> &mut DurableFile {
        &mut self.file
    }

    fn put(&mut self, bytes: &[u8]) {
        self.digest.update(bytes);
        self.file.append(bytes);
    }

    fn segment(&mut self, ts_us: u64, from: Peer, flags: u8, payload: &[u8], comment: Option<&str>) {
        let (src, dst, src_mac, dst_mac, seq, ack) = match from {
            Peer::Client => (self.client, self.asset, CLIENT_MAC, ASSET_MAC, self.client_next, self.asset_next),
            Peer::Asset => (self.asset, self.client, ASSET_MAC, CLIENT_MAC, self.asset_next, self.client_next),
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let ip_id = self.ip_id;
        self.ip_id = self.ip_id.wrapping_add(1);
        // SYN and FIN take one sequence number each.
        let used = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        match from {
            Peer::Client => self.client_next = self.client_next.wrapping_add(used),
            Peer::Asset => self.asset_next = self.asset_next.wrapping_add(used),
        }
        let mut epb = Block::reuse(EPB, std::mem::take(&mut self.scratch));
        let len = (FRAME_HEADERS + payload.len()) as u32;
        epb.u32(0).u32((ts_us >> 32) as u32).u32(ts_us as u32).u32(len).u32(len);
        frame_into(&mut epb.0, src, dst, src_mac, dst_mac, seq, ack, flags, ip_id, payload);
        epb.pad();
        if let Some(c) = comment {
            epb.option(OPT_COMMENT, c.as_bytes());
            epb.option(OPT_END, &[]);
        }
        let block = epb.finish();
        self.put(&block);
        self.scratch = block;
        self.packets += 1;
    }
}

/// Bytes of Ethernet, IPv4 and TCP headers before a frame's payload.
const FRAME_HEADERS: usize = 14 + 20 + 20;

/// Appends Ethernet + IPv4 + TCP with checksums to `f`.
#[allow(clippy::too_many_arguments)]
fn frame_into(
    f: &mut Vec<u8>,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    seq: u32,
    ack: u32,
    flags: u8,
    ip_id: u16,
    payload: &[u8],
) {
    let tcp_len = 20 + payload.len();
    let ip_len = 20 + tcp_len;
    f.reserve(14 + ip_len);
    f.extend_from_slice(&dst_mac);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(ip_len as u16).to_be_bytes());
    f.extend_from_slice(&ip_id.to_be_bytes());
    f.extend_from_slice(&0x4000u16.to_be_bytes()); // don't fragment
    f.extend_from_slice(&[64, 6, 0, 0]); // ttl, TCP, checksum
    f.extend_from_slice(&src.ip().octets());
    f.extend_from_slice(&dst.ip().octets());
    let sum = checksum(&[&f[ip..ip + 20]]);
    f[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
    let tcp = f.len();
    f.extend_from_slice(&src.port().to_be_bytes());
    f.extend_from_slice(&dst.port().to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&ack.to_be_bytes());
    f.extend_from_slice(&[5 << 4, flags]);
    f.extend_from_slice(&0xFFFFu16.to_be_bytes()); // window
    f.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    f.extend_from_slice(payload);
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.ip().octets());
    pseudo[4..8].copy_from_slice(&dst.ip().octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let sum = checksum(&[&pseudo, &f[tcp..]]);
    f[tcp + 16..tcp + 18].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`
/// (each part but the last of even length).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        let mut chunks = part.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

/// A pcapng block under construction.
struct Block(Vec<u8>);

impl Block {
    fn new(kind: u32) -> Self {
        Self::reuse(kind, Vec::with_capacity(128))
    }
    /// A block built in `v`'s memory (its contents are dropped).
    fn reuse(kind: u32, mut v: Vec<u8>) -> Self {
        v.clear();
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        Self(v)
    }
    fn u16(&mut self, x: u16) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u32(&mut self, x: u32) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn u64(&mut self, x: u64) -> &mut Self {
        self.0.extend_from_slice(&x.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn pad(&mut self) -> &mut Self {
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
    fn option(&mut self, code: u16, value: &[u8]) -> &mut Self {
        let value = &value[..value.len().min(0xFFF0)];
        self.u16(code).u16(value.len() as u16).bytes(value).pad()
    }
    fn finish(mut self) -> Vec<u8> {
        let total = self.0.len() as u32 + 4;
        self.0[4..8].copy_from_slice(&total.to_le_bytes());
        self.0.extend_from_slice(&total.to_le_bytes());
        self.0
    }
}

/// Checks the block structure of a pcapng file: every block's two length
/// fields agree and are multiples of 4, and the first block is an SHB.
/// Returns (block type, body) pairs.
pub fn blocks(bytes: &[u8]) -> Result<Vec<(u32, &[u8])>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let word = |i: usize| -> Result<u32, String> {
            bytes
                .get(i..i + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("block at {at}: truncated"))
        };
        let kind = word(at)?;
        let len = word(at + 4)? as usize;
        if len < 12 || !len.is_multiple_of(4) || at + len > bytes.len() {
            return Err(format!("block at {at}: bad length {len}"));
        }
        if word(at + len - 4)? as usize != len {
            return Err(format!("block at {at}: trailing length differs"));
        }
        if out.is_empty() && kind != SHB {
            return Err("the file does not start with a section header".into());
        }
        out.push((kind, &bytes[at + 8..at + len - 4]));
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn modbus_session(path: &Path) -> Capture {
        let client = SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 40000);
        let asset = SocketAddrV4::new(Ipv4Addr::new(198, 19, 3, 7), 502);
        let header = Header {
            session: "0001000000000001",
            user: "alice",
            roles: "operator",
            asset_name: "plc-7",
            protocol: "modbus",
        };
        let mut c = Capture::create(path, &header, client, asset, 1_700_000_000_000_000);
        // Read holding registers 0..2, and its response.
        c.data(1_700_000_000_001_000, Peer::Client, &[0, 1, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2], Some("req 1 allow"));
        c.data(1_700_000_000_002_000, Peer::Asset, &[0, 1, 0, 0, 0, 7, 1, 3, 4, 0, 10, 0, 20], None);
        // Write single register (denied) and the gate's exception.
        c.data(1_700_000_000_003_000, Peer::Client, &[0, 2, 0, 0, 0, 6, 1, 6, 0, 1, 0, 99], Some("req 2 deny"));
        c.data(1_700_000_000_003_001, Peer::Asset, &[0, 2, 0, 0, 0, 3, 1, 0x86, 1], None);
        c.close(1_700_000_000_004_000, Some("client_closed"));
        c
    }

    #[test]
    fn audit_pcapng_structure_and_digest() {
        let dir = crate::audit::testdir("pcap");
        let path = dir.join("s.pcapng");
        let mut c = modbus_session(&path);
        c.file().sync().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let blocks = blocks(&bytes).unwrap();
        let kinds: Vec<u32> = blocks.iter().map(|b| b.0).collect();
        assert_eq!(kinds[..2], [SHB, IDB]);
        assert_eq!(kinds.len(), 2 + 3 + 4 + 3);
        assert!(kinds[2..].iter().all(|&k| k == EPB));
        assert_eq!(c.packets(), 10);
        assert_eq!(c.sha256(), hex(&Sha256::digest(&bytes)));
        // The SHB comment names the user and the session.
        let shb = String::from_utf8_lossy(blocks[0].1);
        assert!(shb.contains("user alice") && shb.contains("session 0001000000000001"));
        // The first data segment: checksums verify to zero.
        let epb = blocks[5].1;
        let frame = &epb[20..20 + 14 + 20 + 20 + 12];
        assert_eq!(checksum(&[&frame[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&frame[26..34]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&32u16.to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &frame[34..]]), 0);
        // seq = ISN + 1 after the SYN.
        assert_eq!(u32::from_be_bytes(frame[38..42].try_into().unwrap()), CLIENT_ISN + 1);
        assert_eq!(u32::from_be_bytes(frame[42..46].try_into().unwrap()), ASSET_ISN + 1);
    }

    #[test]
    fn audit_pcapng_dissects_as_modbus_in_tshark() {
        if std::process::Command::new("tshark").arg("--version").output().is_err() {
            eprintln!("SKIP: tshark is not installed");
            return;
        }
        let dir = crate::audit::testdir("pcap-tshark");
        let path = dir.join("s.pcapng");
        modbus_session(&path).file().sync().unwrap();
        let out = std::process::Command::new("tshark")
            .args(["-r"])
            .arg(&path)
            .args(["-Y", "modbus", "-T", "fields", "-e", "modbus.func_code", "-e", "modbus.exception_code"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let codes: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
        // Wireshark shows the exception's function code without the 0x80 bit
        // and the exception code beside it.
        assert_eq!(codes, ["3\t", "3\t", "6\t", "6\t1"], "tshark saw {codes:?}");
        // No checksum or sequence complaints from the TCP analysis.
        let out = std::process::Command::new("tshark")
            .args(["-o", "tcp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE", "-r"])
            .arg(&path)
            .args(["-Y", "_ws.expert.severity >= warning || tcp.checksum.status == 0 || ip.checksum.status == 0"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "tshark warnings");
        // The comments are there.
        let out = std::process::Command::new("tshark")
            .arg("-r")
            .arg(&path)
            .args(["-Y", "frame.comment", "-T", "fields", "-e", "frame.comment"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("req 2 deny"), "{text}");
    }
}
