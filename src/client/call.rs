//! One call, once a server has greeted us (design.md §4.10-4.11): send the
//! request offering extension `call1`, then run one poll loop over the call
//! socket and the signalfd until the status arrives.
//!
//! ```text
//!   send request (+ PREFORK_INTERP_EXT=call1)
//!   ├─ first reply "PFXA": send ATTR + extra fds; forward signals;
//!   │     STOP → stop ourselves like the script; EXIT → the status
//!   ├─ first reply is a v1 status: the call is over
//!   └─ nothing within ACCEPT_WAIT: signals act on us as in v1 until the
//!      first reply: a status (a v1 server), or a late PFXA (ours, busy),
//!      from which on signals are forwarded again
//! ```

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::caller::Caller;
use super::signals::{Forwarder, Received, Target};
use crate::error::{Error, Result};
use crate::protocol::{CALL1, Call, FirstReply, Frame, FrameBuf, Request};

/// How long to hold signals back while waiting for the server to accept
/// the extension (protocol.md §6.1). Our servers answer within a
/// millisecond; a v1 server never does.
const ACCEPT_WAIT: Duration = Duration::from_millis(200);

/// Make the call: returns the executor's raw wait status.
pub fn make_call(mut call: Call, request: &Request, caller: &Caller) -> Result<u32> {
    // Some while signals are held for forwarding; None while they act on
    // us as with a v1 server (no PFXA within ACCEPT_WAIT).
    let mut forwarding = Some(Forwarder::install(caller.mask, false)?);
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    call.send_request([stdin.as_fd(), stdout.as_fd(), stderr.as_fd()], request)?;
    super::debug(|| "request sent".into());

    let mut buf = FrameBuf::default();
    let mut held: Vec<Received> = Vec::new();
    let deadline = Instant::now() + ACCEPT_WAIT;
    loop {
        let (sock_ready, sig_ready) = match &forwarding {
            Some(forwarder) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // A v1 server, or ours late under load: signals act on
                    // us as with v1 until a reply says which it is.
                    super::debug(|| "no PFXA yet: signals act as with a v1 server".into());
                    if let Some(forwarder) = forwarding.take() {
                        forwarder.restore(&std::mem::take(&mut held));
                    }
                    continue;
                }
                wait(&call, Some(forwarder), Some(left))?
            }
            None => wait(&call, None, None)?,
        };
        if sig_ready && let Some(forwarder) = &mut forwarding {
            held.extend(forwarder.read()?);
        }
        if sock_ready {
            if !buf
                .fill(call.socket())
                .map_err(|e| Error::io("read reply", e))?
            {
                return Err(monitor_gone(Error::peer_gone("read reply")));
            }
            match buf.first_reply()? {
                None => {}
                Some(FirstReply::Status(status)) => {
                    if let Some(forwarder) = forwarding.take() {
                        forwarder.restore(&held);
                    }
                    return Ok(status);
                }
                Some(FirstReply::Accepted(names)) if names.iter().any(|n| n == CALL1) => break,
                Some(FirstReply::Accepted(names)) => {
                    return Err(Error::protocol(format!(
                        "server accepted {names:?}, which we did not offer"
                    )));
                }
            }
        }
    }
    // A PFXA after ACCEPT_WAIT (a busy server): forward from now on.
    let mut forwarder = match forwarding {
        Some(forwarder) => forwarder,
        None => Forwarder::install(caller.mask, false)?,
    };
    super::debug(|| "extension call1 accepted".into());
    call.send_attributes(&caller.attrs, &caller.fds())?;
    for r in held {
        forward(&call, &mut forwarder, r)?;
    }
    loop {
        let (sock_ready, sig_ready) = wait(&call, Some(&forwarder), None)?;
        if sig_ready {
            for r in forwarder.read()? {
                forward(&call, &mut forwarder, r)?;
            }
        }
        if !sock_ready {
            continue;
        }
        if !buf
            .fill(call.socket())
            .map_err(|e| Error::io("read frame", e))?
        {
            return Err(monitor_gone(Error::peer_gone("read frame")));
        }
        while let Some(frame) = buf.next_frame()? {
            match frame {
                Frame::Exit(status) => return Ok(status),
                Frame::Stopped(sig) => {
                    super::debug(|| format!("script stopped by signal {sig}"));
                    if forwarder.stop_like(sig) {
                        call.send_frame(&Frame::SignalGroup(libc::SIGCONT))?;
                    }
                }
                Frame::Unknown(_) => {}
                other => {
                    return Err(Error::protocol(format!(
                        "unexpected frame from server: {other:?}"
                    )));
                }
            }
        }
    }
}

/// Pass a received signal on (protocol.md §6.5).
fn forward(call: &Call, forwarder: &mut Forwarder, r: Received) -> Result<()> {
    let frame = match forwarder.route(r) {
        Target::Process => Frame::SignalProcess(r.signal),
        Target::Group => Frame::SignalGroup(r.signal),
    };
    super::debug(|| format!("forward {frame:?}"));
    call.send_frame(&frame)
}

/// Poll the socket and the signalfd, if any: which are readable.
pub(super) fn wait(
    call: &Call,
    forwarder: Option<&Forwarder>,
    timeout: Option<Duration>,
) -> Result<(bool, bool)> {
    let mut fds = vec![PollFd::new(call.as_fd(), PollFlags::POLLIN)];
    if let Some(forwarder) = forwarder {
        fds.push(PollFd::new(forwarder.fd(), PollFlags::POLLIN));
    }
    let timeout = match timeout {
        None => PollTimeout::NONE,
        // At least 1 ms: a zero timeout would make the wait a busy loop.
        Some(d) => {
            PollTimeout::try_from(d.max(Duration::from_millis(1))).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(Error::io("poll", e)),
    }
    let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
    Ok((ready(&fds[0]), fds.get(1).is_some_and(ready)))
}

fn monitor_gone(e: Error) -> Error {
    if e.is_peer_gone() {
        Error::msg("server's monitor process quit without reporting a status")
    } else {
        e
    }
}
