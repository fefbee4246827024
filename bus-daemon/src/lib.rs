//! # bus-daemon
//!
//! `shmbusd`, the control plane of shmbus: the topic registry, segment creation, access
//! control, client liveness, clean-up and stats. It is never on the data path. What it and
//! its clients agree on (the protocol, segment mapping, the status page) is `bus_proto`.
//!
//! * [`server`]: the daemon itself, standalone ([`run`]) or embedded ([`spawn`]).
//! * [`segment`]: creating topic segments, and taking them back after a restart.
//! * [`acl`]: access rules and limits from TOML.
//! * [`lock`]: the socket directory and the one-daemon-per-socket lock.
//! * [`status`]: writing the status page beside the socket (the daemon's epoch).
//! * [`state`]: the topic records a restarted daemon recognises handed-back segments by.
//! * [`cli`]: the `shmbusd` command line.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod acl;
pub mod cli;
pub mod lock;
pub mod segment;
pub mod server;
pub mod state;
pub mod status;

pub use server::{run, spawn, Config, DaemonHandle, StartError};
