//! prefork-interp: make slow-starting scripts start fast.
//!
//! A `#!` "interpreter" wrapper compatible with chiark-utils'
//! `prefork-interp` 7.0.0. The first call of a script starts a server from
//! the script once it has initialised; every call is then served by a fresh
//! fork of that server, with the caller's stdio, arguments, environment and
//! exit status. `docs/design.md` describes the processes and their fds,
//! `docs/protocol.md` the bytes on the wire.
//!
//! Modules, one concern each:
//! - [`cli`]: the command line, including `#!` argument splitting;
//! - [`identity`]: the identity hash that names a server (pure, no I/O);
//! - [`rundir`]: the run directory, locks and pruning;
//! - [`protocol`]: wire protocol v1, shared by client and server side;
//! - [`client`]: connect to a server or start one, run the call;
//! - [`spawn`]: the watcher and setup processes the client forks;
//! - [`exit_status`]: turning a wait status into our own exit;
//! - [`server`]: the script side for Rust programs (`initialisation_complete`);
//! - [`error`]: the one-line error type.
#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod error;
pub mod exit_status;
pub mod identity;
pub mod protocol;
pub mod rundir;
pub mod server;
pub mod spawn;
pub mod sys;

pub use error::{Error, Result};
