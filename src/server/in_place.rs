//! The first call run in place (extension `inplace1`, protocol.md §7):
//! when the client announced it, the setup process, already initialised
//! and already the client's child with the caller's directory, limits and
//! process group, forks the server and then runs the first call itself
//! instead of exiting, so a cold call costs about what a direct run does.
//!
//! ```text
//!   setup (in place)  LISTEN, WATCHI, WATCHE closed at once; greets on
//!     │               CALL ("inplace1"), reads the handshake (blocking,
//!     │               with the request timeout), closes CALL; then an
//!     │               executor (`executor.rs`), except that it stays in
//!     │               the process group the client made and dies with the client
//!     │               by SIGINT, not SIGKILL
//!     └ server        as without the extension, but never takes CALL in
//! ```
//!
//! No status is sent: the client, our parent, learns the call's wait
//! status from the kernel (`waitpid`). A handshake that fails is reported
//! on stderr, the caller's, and ends the process with status 127.

use std::os::unix::net::UnixStream;

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};

use super::executor::{self, Role};
use super::handshake::{Complete, Handshake};
use super::log::Log;
use super::signals::Program;
use super::{Invocation, Options};
use crate::error::{Error, Result};
use crate::sys;

/// Run the first call, which arrives on `call`, in this process: returns
/// its invocation to the program, or ends the process.
///
/// On entry: the setup process, just after forking the server; `call` is
/// CALL (blocking) and the only protocol fd left; fd 0 is /dev/null, fds 1
/// and 2 the caller's stderr; the signals are the program's, but for
/// SIGCHLD (the server's default).
pub(super) fn run_first_call(
    call: UnixStream,
    opts: &Options,
    program: &Program,
    log: Log,
) -> Invocation {
    // The client made us: it is our parent while the call can still be
    // made, so what we learn here is its pid (checked again below).
    let client = nix::unistd::getppid();
    let Complete {
        call,
        stdio,
        body,
        extension,
    } = match take_in(call, opts) {
        Ok(complete) => complete,
        Err(e) => {
            Log::Stderr.err(&format!("taking the first call in: {e}"));
            sys::exit_now(127)
        }
    };
    // Until the caller's dispositions and mask are in place, a signal
    // waits (then acts as it would on the call), rather than acting now
    // with the program's. The executor sets the mask last.
    if let Err(e) = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None) {
        Log::Stderr.err(&Error::io("block signals for the first call", e).to_string());
        sys::exit_now(127);
    }
    executor::die_with(client, Signal::SIGINT, Log::Stderr);
    let invocation = executor::take_request(body);
    drop(call);
    executor::become_executor(
        stdio,
        extension,
        program,
        invocation,
        // Warnings go where the server's do, as for any other call.
        log,
        Role::InPlace,
    )
}

/// Greet the client on CALL and read the call's handshake (protocol.md
/// §7 step 2), waiting at most the request timeout.
fn take_in(call: UnixStream, opts: &Options) -> Result<Complete> {
    Handshake::start_in_place(call)?.complete_within(opts.request_timeout)
}
