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

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod acl;
pub mod fdpass;
pub mod names;
pub mod paths;
pub mod protocol;
