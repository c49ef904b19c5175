//! The first call run in place (extension `inplace1`, protocol.md §7): the
//! setup process, our child, forks the server and then runs the call
//! itself, so a cold call costs about a direct run.
//!
//! ```text
//!   client ──fork+exec──▶ setup (PREFORK_INTERP=v1,STAMP,inplace1 ...)
//!     │                     ├─fork─▶ server (LISTEN; never takes CALL)
//!     ├── request (buffered: it goes at once) ──▶
//!     │◀── greeting "inplace1" on CALL
//!     ├── PFXA, ATTR + extra fds ──▶ setup takes on the call
//!     └── waitpid(setup): exit → the call's status; stop → stop like it
//! ```
//!
//! The setup process leads a process group of its own, as a shell's job
//! does, holding our terminal while it runs if we are in its foreground
//! (`client::terminal`): the terminal's signals reach it alone, and every
//! signal sent to us is passed on once, to it or to its group as for a
//! served call (`signals::ROUTES`). No signal reaches it twice.

use std::os::fd::{AsFd, OwnedFd};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use nix::unistd::Pid;

use super::caller::Caller;
use super::signals::{Forwarder, Received, Target};
use super::terminal::Foreground;
use crate::error::{Error, Result};
use crate::protocol::{CALL1, Call, FirstReply, FrameBuf, Greeting, Request};
use crate::sys;

/// What the setup process did first.
pub enum SetupAnswer {
    /// It exited with this raw wait status (reaped).
    Exited(i32),
    /// It (or, without `inplace1`, the new server's monitor) greeted us on
    /// the first call's socket; it may still be running.
    Greeted(Greeting),
}

/// Wait for the setup process `pid` to exit or for a greeting on `call`,
/// whichever comes first. A socket closed without a greeting means the
/// setup process is going: its exit is waited for.
pub fn wait_for_setup(call: &mut Call, pid: libc::pid_t) -> Result<SetupAnswer> {
    let wait = || -> Result<SetupAnswer> {
        let status =
            sys::wait_raw(pid).map_err(|e| Error::io(format!("wait for setup [{pid}]"), e))?;
        Ok(SetupAnswer::Exited(status))
    };
    // Without a pidfd (a kernel before 5.3) look at the child every 10 ms.
    let pidfd: Option<OwnedFd> = sys::pidfd_open(pid).ok();
    loop {
        let (greeted, exited) = match &pidfd {
            Some(pidfd) => {
                let mut fds = [
                    PollFd::new(call.as_fd(), PollFlags::POLLIN),
                    PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
                ];
                poll_ready(&mut fds, PollTimeout::NONE)?;
                (is_ready(&fds[0]), is_ready(&fds[1]))
            }
            None => {
                let mut fds = [PollFd::new(call.as_fd(), PollFlags::POLLIN)];
                poll_ready(&mut fds, PollTimeout::from(10u8))?;
                (is_ready(&fds[0]), !is_ready(&fds[0]))
            }
        };
        if greeted {
            return match call.read_greeting() {
                Ok(greeting) => Ok(SetupAnswer::Greeted(greeting)),
                Err(e) if e.is_peer_gone() => wait(),
                Err(e) => Err(e),
            };
        }
        if exited {
            match &pidfd {
                Some(_) => return wait(),
                None => {
                    if let Some(status) = sys::try_wait_raw(pid)
                        .map_err(|e| Error::io(format!("wait for setup [{pid}]"), e))?
                    {
                        return Ok(SetupAnswer::Exited(status));
                    }
                }
            }
        }
    }
}

/// Make the call whose greeting said `inplace1`, with our child `pid`,
/// the leader of the call's process group, holding the terminal `fg` if
/// we had it: returns its raw wait status. `request` is to send, unless
/// it went already, with the setup process's start. If the handshake fails
/// (the child quit first, say), the child's status is still the call's.
pub fn make_call(
    mut call: Call,
    pid: libc::pid_t,
    fg: Option<Foreground>,
    request: Option<&Request>,
    caller: &Caller,
) -> Result<u32> {
    let mut job = Job {
        pid,
        fg,
        forwarder: Forwarder::install(caller.mask, true)?,
    };
    let mut held = Vec::new();
    if let Err(e) = handshake(&mut call, request, caller, &mut job.forwarder, &mut held) {
        super::debug(|| format!("in-place handshake: {e}"));
    }
    drop(call);
    let status = job.supervise(held);
    if let Some(fg) = job.fg {
        fg.take_back(Pid::from_raw(pid));
    }
    status
}

/// The call run in place, as a job of ours.
struct Job {
    pid: libc::pid_t,
    fg: Option<Foreground>,
    forwarder: Forwarder,
}

impl Job {
    /// Pass signals on and follow the child until it has exited.
    fn supervise(&mut self, held: Vec<Received>) -> Result<u32> {
        // A SIGCHLD before the signalfd existed was lost: look once now.
        if let Some(status) = self.child_changed()? {
            return Ok(status);
        }
        for r in held {
            if let Some(status) = self.pass_on(r)? {
                return Ok(status);
            }
        }
        loop {
            poll_ready(
                &mut [PollFd::new(self.forwarder.fd(), PollFlags::POLLIN)],
                PollTimeout::NONE,
            )?;
            for r in self.forwarder.read()? {
                if let Some(status) = self.pass_on(r)? {
                    return Ok(status);
                }
            }
        }
    }

    /// Act on one signal read from the signalfd: SIGCHLD means look at
    /// the child (its status if it has exited); others go to it, or to its
    /// group, chosen as for a served call (`signals::ROUTES`). A SIGCONT
    /// that ends our stop first gives the terminal back to the call if we
    /// are in the foreground again (`fg`, not `bg`).
    fn pass_on(&mut self, r: Received) -> Result<Option<u32>> {
        if r.signal == libc::SIGCHLD {
            return self.child_changed();
        }
        let target = self.forwarder.route(r);
        if r.signal == libc::SIGCONT
            && target == Target::Group
            && let Some(fg) = self.fg
            && fg.is_ours_now()
        {
            fg.give_to(Pid::from_raw(self.pid));
        }
        super::debug(|| format!("pass signal {} on to [{}] ({target:?})", r.signal, self.pid));
        let to = match target {
            Target::Process => self.pid,
            Target::Group => -self.pid,
        };
        let _ = sys::send_signal(to, r.signal);
        Ok(None)
    }

    /// The child changed state: its wait status once it has exited; when
    /// it has stopped, take the terminal back and stop ourselves the same
    /// way (our shell then sees a stopped job), and continue it if no
    /// SIGCONT will.
    fn child_changed(&mut self) -> Result<Option<u32>> {
        let pid = self.pid;
        while let Some(status) =
            sys::try_wait_untraced(pid).map_err(|e| Error::io(format!("wait for [{pid}]"), e))?
        {
            if !libc::WIFSTOPPED(status) {
                return Ok(Some(status as u32));
            }
            let sig = libc::WSTOPSIG(status);
            super::debug(|| format!("script stopped by signal {sig}"));
            if let Some(fg) = self.fg {
                fg.take_back(Pid::from_raw(pid));
            }
            if self.forwarder.stop_like(sig) {
                let _ = sys::send_signal(-pid, libc::SIGCONT);
            }
        }
        Ok(None)
    }
}

/// Steps 2-4 and the call1 attributes, as for a server; signals that come
/// meanwhile are `held` for [`pass_on`].
fn handshake(
    call: &mut Call,
    request: Option<&Request>,
    caller: &Caller,
    forwarder: &mut Forwarder,
    held: &mut Vec<Received>,
) -> Result<()> {
    if let Some(request) = request {
        super::call::send_request(call, request)?;
    }
    let mut buf = FrameBuf::default();
    loop {
        let ready = super::call::wait(call, Some(forwarder), None, &[])?;
        let (sock_ready, sig_ready) = (ready.socket, ready.signals);
        if sig_ready {
            held.extend(forwarder.read()?);
        }
        if !sock_ready {
            continue;
        }
        if !buf
            .fill(call.socket())
            .map_err(|e| Error::io("read reply", e))?
        {
            return Err(Error::peer_gone("read reply"));
        }
        match buf.first_reply()? {
            None => {}
            Some(FirstReply::Accepted(names)) if names.iter().any(|n| n == CALL1) => break,
            Some(other) => {
                return Err(Error::protocol(format!(
                    "unexpected first reply from the setup process: {other:?}"
                )));
            }
        }
    }
    call.send_attributes(&caller.attrs, &caller.fds(), None)
}

fn poll_ready(fds: &mut [PollFd<'_>], timeout: PollTimeout) -> Result<()> {
    match poll(fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(Error::io("poll", e)),
    }
}

fn is_ready(fd: &PollFd<'_>) -> bool {
    fd.revents().is_some_and(|r| !r.is_empty())
}
