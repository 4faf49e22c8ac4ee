//! Access Gate's measuring instruments: an in-memory lab ([`memlab`]) made of
//! plain hosts ([`host`]) and a PLC simulator ([`sim`]) around a real dp core,
//! used by `accessgate demo`, the in-memory tests and the benchmarks.
#![forbid(unsafe_code)]

pub mod host;
pub mod memlab;
pub mod sim;
pub mod tls_client;
