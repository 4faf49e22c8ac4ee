//! Access Gate's hot path.
//!
//! Frames come in through a [`io::FramePort`] (AF_XDP, AF_PACKET or in-memory),
//! are classified ([`classify`]) before any stack sees them, run through one
//! smoltcp stack per overlay segment ([`stack`]), and are proxied between the
//! user's connection and the asset's ([`session`]) by pinned cores
//! ([`core`]). This crate reads no files and speaks no HTTP or TOML; the
//! control crate feeds it an immutable [`snapshot::Snapshot`].
//!
//! `unsafe` lives only in `io/` (AF_XDP rings and UMEM, AF_PACKET and eventfd
//! syscalls), each block with its justification.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod audit;
pub mod auth;
pub mod classify;
pub mod core;
pub mod counters;
pub mod inspect;
pub mod io;
pub mod policy;
pub mod session;
pub mod shard;
pub mod snapshot;
pub mod stack;
pub mod tls;
pub mod wire;
pub mod xorshift;
