//! # bus-daemon
//!
//! `shmbusd`, the control plane of shmbus: the topic registry, segment creation, access
//! control, client liveness, clean-up and stats. It is never on the data path.
//!
//! * [`protocol`]: the versioned, length-prefixed control protocol (the wire format).
//! * [`fdpass`]: file descriptors over `SCM_RIGHTS`, peer credentials.
//! * [`names`]: topic name rules and segment file names.
//! * [`paths`]: the socket path and the one-daemon-per-socket lock.
//! * [`acl`]: access rules and limits from TOML.
//! * [`segment`]: topic segments, two sealed memory files each: create, check, map.
//! * [`status`]: the status page beside the socket, holding the daemon's epoch.
//! * [`state`]: the topic records a restarted daemon recognises handed-back segments by.
//! * [`server`]: the daemon itself, standalone ([`run`]) or embedded ([`spawn`]).

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod acl;
pub mod cli;
pub mod fdpass;
pub mod names;
pub mod paths;
pub mod protocol;
pub mod segment;
pub mod server;
pub mod state;
pub mod status;

pub use server::{run, spawn, Config, DaemonHandle, StartError};
