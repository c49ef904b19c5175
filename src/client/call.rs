//! One call (design.md §4.10-4.11): send the request offering extension
//! `call1` (and `pty1` on a terminal), without waiting for the server's
//! greeting ([`Sent`]), then, once it has greeted us, run one poll loop
//! over the call socket, the signalfd and, with a pty, the relay's fds
//! (`pty.rs`) until the status arrives.
//!
//! ```text
//!   send request (+ PREFORK_INTERP_EXT=call1[,pty1])
//!   ├─ first reply "PFXA": send ATTR + extra fds (+ the pty's slave);
//!   │     forward signals; relay; FGND when our job moves;
//!   │     STOP → stop ourselves like the script; EXIT → the status
//!   ├─ first reply is a v1 status: the call is over
//!   └─ nothing within ACCEPT_WAIT: signals act on us as in v1 until the
//!      first reply: a status (a v1 server), or a late PFXA (ours, busy),
//!      from which on signals are forwarded again
//! ```

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::caller::Caller;
use super::pty::{Plan, Relay};
use super::signals::{Forwarder, Received, Target};
use crate::error::{Error, Result};
use crate::protocol::{Attributes, CALL1, Call, FirstReply, Frame, FrameBuf, PTY1, Request};

/// How long to hold signals back while waiting for the server to accept
/// the extension (protocol.md §6.1). Our servers answer within a
/// millisecond; a v1 server never does.
const ACCEPT_WAIT: Duration = Duration::from_millis(200);

/// After the script's exit, how long the pty may stay silent before we
/// stop waiting for more of its output (something the script started in
/// the background still holds the pty; protocol.md §9.4).
const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// A call whose request has been sent, with the signals that came since
/// held for forwarding (protocol.md §6.1).
pub struct Sent {
    call: Call,
    forwarder: Forwarder,
}

impl Sent {
    /// Hold signals for forwarding from now on, for a call whose request
    /// is about to go, or went already (to a new server's first call, with
    /// the setup process's start).
    pub fn hold(call: Call, caller: &Caller) -> Result<Sent> {
        let forwarder = Forwarder::install(caller.mask, false)?;
        Ok(Sent { call, forwarder })
    }

    /// Send `request` (steps 2-4). It may go before the server's greeting
    /// has been read (design.md §4.10): the socket buffers it, and every
    /// server reads it after greeting.
    pub fn send_request(&mut self, request: &Request) -> Result<()> {
        send_request(&mut self.call, request)?;
        super::debug(|| "request sent".into());
        Ok(())
    }

    /// The call, to read the greeting from.
    pub fn call_mut(&mut self) -> &mut Call {
        &mut self.call
    }

    /// Give the call up (the server went before greeting us, say): signals
    /// that came meanwhile, and those to come, act on us again.
    pub fn abandon(self) {
        self.forwarder.restore(&[]);
    }
}

/// Send `request` on `call` with our own fds 0-2, the caller's (steps 2-4).
pub fn send_request(call: &mut Call, request: &Request) -> Result<()> {
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    call.send_request([stdin.as_fd(), stdout.as_fd(), stderr.as_fd()], request)
}

/// Make the call whose request is `sent`, its greeting read: returns the
/// executor's raw wait status. With `plan` (the caller is on its
/// terminal) the request offered `pty1` too, and if the server accepts it
/// the call runs on a pty of ours (protocol.md §9).
pub fn make_call(sent: Sent, caller: &Caller, plan: Option<Plan>) -> Result<u32> {
    let Sent {
        mut call,
        forwarder,
    } = sent;
    // Some while signals are held for forwarding; None while they act on
    // us as with a v1 server (no PFXA within ACCEPT_WAIT).
    let mut forwarding = Some(forwarder);

    let mut buf = FrameBuf::default();
    let mut held: Vec<Received> = Vec::new();
    let deadline = Instant::now() + ACCEPT_WAIT;
    let accepted = loop {
        let ready = match &forwarding {
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
                wait(&call, Some(forwarder), Some(left), &[])?
            }
            None => wait(&call, None, None, &[])?,
        };
        if ready.signals
            && let Some(forwarder) = &mut forwarding
        {
            held.extend(forwarder.read()?);
        }
        if ready.socket {
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
                Some(FirstReply::Accepted(names)) if names.iter().any(|n| n == CALL1) => {
                    break names;
                }
                Some(FirstReply::Accepted(names)) => {
                    return Err(Error::protocol(format!(
                        "server accepted {names:?}, which we did not offer"
                    )));
                }
            }
        }
    };
    // A PFXA after ACCEPT_WAIT (a busy server): forward from now on.
    let mut forwarder = match forwarding {
        Some(forwarder) => forwarder,
        None => Forwarder::install(caller.mask, false)?,
    };
    super::debug(|| format!("extensions {} accepted", accepted.join(",")));
    let mut relay = match plan.filter(|_| accepted.iter().any(|n| n == PTY1)) {
        Some(plan) => Some(send_attributes_with_pty(&mut call, caller, plan)?),
        None => {
            call.send_attributes(&caller.attrs, &caller.fds(), None)?;
            None
        }
    };
    if let Some(relay) = &mut relay {
        relay.resume();
    }
    for r in held {
        forward(&call, &mut forwarder, relay.as_mut(), r)?;
    }
    loop {
        let interest = relay.as_ref().map(Relay::interest).unwrap_or_default();
        let recheck = relay.as_ref().and_then(Relay::recheck);
        let ready = wait(&call, Some(&forwarder), recheck, &interest)?;
        let relay_ready = relay.as_ref().map(|r| r.ready(&ready.extra));
        drop(interest);
        if ready.signals {
            for r in forwarder.read()? {
                forward(&call, &mut forwarder, relay.as_mut(), r)?;
            }
        }
        if let (Some(relay), Some(relay_ready)) = (&mut relay, relay_ready) {
            relay.pump(relay_ready)?;
            relay.check_front();
            tell_job_moved(&call, relay)?;
        }
        if !ready.socket {
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
                Frame::Exit(status) => {
                    if let Some(relay) = &mut relay {
                        relay.drain(DRAIN_QUIET)?;
                    }
                    return Ok(status);
                }
                Frame::Stopped(sig) => {
                    super::debug(|| format!("script stopped by signal {sig}"));
                    if let Some(relay) = &mut relay {
                        relay.pause();
                    }
                    if forwarder.stop_like(sig) {
                        // We could not stop (an orphaned group): the call
                        // goes on, and we do not ask for the stop again.
                        call.send_frame(&Frame::SignalGroup(libc::SIGCONT))?;
                    } else if let Some(relay) = &mut relay {
                        relay.resume();
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

/// With `pty1` accepted: open the pty and send the `ATTR` frame naming the
/// stdio fds it replaces, the extra fds (the slave for those that are the
/// caller's terminal), then the slave (protocol.md §9.2). Our copy of the
/// slave is closed on return, so the end of the script's output is seen.
fn send_attributes_with_pty(call: &mut Call, caller: &Caller, plan: Plan) -> Result<Relay> {
    let on_terminal: Vec<bool> = caller
        .attrs
        .fds
        .iter()
        .map(|&fd| plan.is_terminal(fd))
        .collect();
    let pty = plan.stdio.clone();
    let (relay, slave) = plan.open()?;
    let attrs = Attributes {
        pty,
        pty_background: !relay.starts_in_front(),
        ..caller.attrs.clone()
    };
    let fds: Vec<BorrowedFd<'_>> = caller
        .fds()
        .into_iter()
        .zip(&on_terminal)
        .map(|(fd, &tty)| if tty { slave.as_fd() } else { fd })
        .collect();
    call.send_attributes(&attrs, &fds, Some(slave.as_fd()))?;
    super::debug(|| format!("pty for fds {:?}", attrs.pty));
    Ok(relay)
}

/// Pass a received signal on (protocol.md §6.5). With a pty, a resize of
/// the caller's terminal is copied to the pty instead (the kernel signals
/// the pty's foreground group), and being continued resumes the relay.
fn forward(
    call: &Call,
    forwarder: &mut Forwarder,
    relay: Option<&mut Relay>,
    r: Received,
) -> Result<()> {
    if let Some(relay) = relay {
        if r.signal == libc::SIGWINCH && r.sent_by_terminal() {
            relay.copy_window_size();
            return Ok(());
        }
        if r.signal == libc::SIGCONT {
            relay.resume();
            // Before the SIGCONT: the pty's foreground is right when the
            // script goes on (the server holds signals until it is).
            tell_job_moved(call, relay)?;
        }
    }
    let frame = match forwarder.route(r) {
        Target::Process => Frame::SignalProcess(r.signal),
        Target::Group => Frame::SignalGroup(r.signal),
    };
    super::debug(|| format!("forward {frame:?}"));
    call.send_frame(&frame)
}

/// Tell the server if our job came to the front or went to the background
/// (`FGND`, protocol.md §9.2).
fn tell_job_moved(call: &Call, relay: &mut Relay) -> Result<()> {
    match relay.job_moved() {
        Some(front) => {
            super::debug(|| {
                format!(
                    "job now in the {}",
                    if front { "foreground" } else { "background" }
                )
            });
            call.send_frame(&Frame::Foreground(front))
        }
        None => Ok(()),
    }
}

/// What a [`wait`] found.
pub(super) struct Ready {
    /// The call socket is readable (or hung up).
    pub(super) socket: bool,
    /// The signalfd is readable.
    pub(super) signals: bool,
    /// The events of each of the `extra` fds, in order.
    pub(super) extra: Vec<Option<PollFlags>>,
}

/// Poll the socket, the signalfd (if any) and `extra` fds.
pub(super) fn wait(
    call: &Call,
    forwarder: Option<&Forwarder>,
    timeout: Option<Duration>,
    extra: &[(BorrowedFd<'_>, PollFlags)],
) -> Result<Ready> {
    let mut fds = vec![PollFd::new(call.as_fd(), PollFlags::POLLIN)];
    if let Some(forwarder) = forwarder {
        fds.push(PollFd::new(forwarder.fd(), PollFlags::POLLIN));
    }
    let first_extra = fds.len();
    fds.extend(extra.iter().map(|&(fd, events)| PollFd::new(fd, events)));
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
    Ok(Ready {
        socket: ready(&fds[0]),
        signals: forwarder.is_some() && ready(&fds[1]),
        extra: fds[first_extra..].iter().map(PollFd::revents).collect(),
    })
}

fn monitor_gone(e: Error) -> Error {
    if e.is_peer_gone() {
        Error::msg("server's monitor process quit without reporting a status")
    } else {
        e
    }
}
