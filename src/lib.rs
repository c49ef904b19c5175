//! prefork-interp: make slow-starting scripts start fast.
//!
//! A `#!` "interpreter" wrapper compatible with chiark-utils'
//! `prefork-interp` 7.0.0. The first call of a script starts a server from
//! the script once it has initialised; every call is then served by a fresh
//! fork of that server, with the caller's stdio, arguments, environment and
//! exit status. `docs/design.md` describes the processes and their fds,
//! `docs/protocol.md` the bytes on the wire.
//!
//! The tree shows the two sides, with what they share at the top:
//! - [`client`]: the `prefork-interp` binary: command line, identity, run
//!   directory, starting servers, the call and its signal forwarding, exit
//!   status (one module each, under `src/client/`);
//! - [`server`]: the script side for Rust programs (`initialisation_complete`);
//! - [`protocol`]: wire protocol v1 and its extension `call1`, shared by
//!   both sides;
//! - [`record`]: the server records that `--list` reads, written by both
//!   sides;
//! - [`error`]: the one-line error type;
//! - `sys`: the system calls nix does not wrap (crate-private).
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod client;
pub mod error;
pub mod protocol;
pub mod record;
pub mod server;
pub(crate) mod sys;

pub use error::{Error, Result};
