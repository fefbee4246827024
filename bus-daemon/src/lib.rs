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
//! * [`segment`]: topic segments in /dev/shm: create, map, unlink.
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

pub use server::{run, spawn, Config, DaemonHandle, StartError};
