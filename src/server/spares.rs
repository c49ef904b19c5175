//! Spare executors: forks of the server made before they are needed, so
//! no fork is on a warm call's critical path (`Options::pool_size`).
//!
//! A spare blocks on a control socket of its own, costing no CPU. For a
//! complete call, the server makes the spare the leader of the call's
//! process group and hands it the call over that socket; the spare
//! becomes the call's executor (`executor.rs`), and the server forks a
//! replacement after the handover. The server keeps the call's socket and
//! watches the call itself (`running.rs`): there is no monitor process.
//! Android's zygote keeps its pool of unspecialised processes the same
//! way.
//!
//! ```text
//!   spare   a fork of the server, dies with it (PR_SET_PDEATHSIG SIGKILL)
//!           fds: its end of the control socket; every fd of the server's
//!           closed (the program's own fds stay, as in any executor)
//! ```
//!
//! Control socket, server to spare (a stream; numbers are u32 big-endian):
//!
//! 1. 12 bytes: the request body's length, the encoded attributes' length
//!    ([`NO_ATTRS`] without `call1`), the number of fds that follow;
//! 2. each fd in a one-byte message of its own: the caller's fds 0, 1 and
//!    2, then its extra fds, in the order of the attributes' `fds` item,
//!    then with `pty1` the pty's slave (the attributes' `pty` item says);
//! 3. the request body, then the attributes (an `ATTR` frame body).
//!
//! EOF instead of step 1: the server is quitting; the spare exits 0.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::sys::signal::Signal;
use nix::unistd::{Pid, setpgid};

use super::Invocation;
use super::executor::{self, Extension, Role};
use super::handshake::Complete;
use super::log::Log;
use super::session;
use super::signals::Program;
use crate::error::{Error, Result};
use crate::protocol::{Attributes, Call, recv_fd, send_fd, write_all_nosignal};
use crate::sys::{self, Forked};

/// The attributes' length in step 1 for a call without `call1`.
const NO_ATTRS: u32 = u32::MAX;

/// A spare, seen from the server.
#[derive(Debug)]
pub(super) struct Spare {
    /// Its pid (we reap it).
    pub(super) pid: libc::pid_t,
    control: UnixStream,
}

/// A call handed over, as the server watches it.
pub(super) struct Handed {
    /// The spare's pid: the executor, or on a pty the call's session leader.
    pub(super) pid: libc::pid_t,
    /// The call's socket.
    pub(super) call: Call,
    /// With `call1`: frames both ways.
    pub(super) framed: bool,
    /// On a pty: the control socket, over which the leader reports.
    pub(super) leader: Option<UnixStream>,
}

/// A handover that failed ([`Spare::hand_over`]).
pub(super) struct NotHanded {
    /// Why.
    pub(super) error: Error,
    /// The call, if the spare had gone (another may take it).
    pub(super) call: Option<Box<Complete>>,
}

/// A spare, seen from itself: waiting for its call.
pub(super) struct Waiting {
    control: UnixStream,
    server: Pid,
}

/// Which side of [`fork`] we are on.
pub(super) enum SpareFork {
    /// The server, with its new spare.
    Server(Spare),
    /// The new spare.
    Spare(Waiting),
}

/// Fork a spare. In the child, the caller must drop everything of the
/// server's (returning from the server's loop does) before
/// [`Waiting::become_executor`].
pub(super) fn fork() -> std::io::Result<SpareFork> {
    let (ours, theirs) = UnixStream::pair()?;
    let server = nix::unistd::getpid();
    Ok(match sys::fork_checked()? {
        Forked::Child => SpareFork::Spare(Waiting {
            control: theirs,
            server,
        }),
        Forked::Parent(pid) => SpareFork::Server(Spare { pid, control: ours }),
    })
}

impl Spare {
    /// Hand `call` to this spare, which becomes its executor, leading the
    /// call's process group (on a pty: the call's session leader, which
    /// forks the executor, `session.rs`). Returns what the server watches
    /// the call with. On failure, the call comes back with the error if
    /// the spare had gone: it cannot have taken the whole call, and
    /// another spare may.
    pub(super) fn hand_over(self, call: Complete) -> std::result::Result<Handed, NotHanded> {
        if let Err(error) = self.send(&call) {
            let call = error.is_peer_gone().then(|| Box::new(call));
            return Err(NotHanded { error, call });
        }
        let slave = call.extension.as_ref().is_some_and(|e| e.slave.is_some());
        Ok(Handed {
            pid: self.pid,
            framed: call.extension.is_some(),
            call: call.call,
            leader: slave.then_some(self.control),
        })
    }

    /// The handover's bytes and fds (the layout at the top of this file).
    fn send(&self, call: &Complete) -> Result<()> {
        let Complete {
            stdio,
            body,
            extension,
            ..
        } = call;
        // The executor does the same; whichever runs first wins, and the
        // other's is a harmless repeat (or EACCES once the program has
        // exec'd). Done here too so the group exists for a signal that
        // comes before the executor has run. Not with a pty: the executor
        // then leads a new session, which a group leader cannot
        // (protocol.md §9.3).
        let slave = extension.as_ref().and_then(|e| e.slave.as_ref());
        if slave.is_none() {
            let _ = setpgid(Pid::from_raw(self.pid), Pid::from_raw(self.pid));
        }
        let attrs = extension.as_ref().map(|e| {
            Attributes {
                fds: e.extra.iter().map(|&(n, _)| n).collect(),
                ..e.attrs.clone()
            }
            .encode_body()
        });
        let len = |n: usize| u32::try_from(n).map_err(|_| Error::msg("call too big to hand over"));
        let extra = extension.as_ref().map_or(&[][..], |e| &e.extra[..]);
        let mut head = Vec::with_capacity(12);
        head.extend_from_slice(&len(body.len())?.to_be_bytes());
        let attrs_len = match &attrs {
            Some(a) => len(a.len())?,
            None => NO_ATTRS,
        };
        head.extend_from_slice(&attrs_len.to_be_bytes());
        let nfds = 3 + extra.len() + usize::from(slave.is_some());
        head.extend_from_slice(&len(nfds)?.to_be_bytes());
        let what = "hand a call to a spare executor";
        let at = |e: Error| e.at(format!("{what} [{}]", self.pid));
        write_all_nosignal(&self.control, &head, what).map_err(at)?;
        for fd in stdio.iter().map(|fd| fd.as_fd()) {
            send_fd(&self.control, fd).map_err(at)?;
        }
        for fd in extra.iter().map(|(_, fd)| fd).chain(slave) {
            send_fd(&self.control, fd.as_fd()).map_err(at)?;
        }
        let attrs = attrs.as_deref().unwrap_or_default();
        let mut rest = Vec::with_capacity(body.len() + attrs.len());
        rest.extend_from_slice(body);
        rest.extend_from_slice(attrs);
        write_all_nosignal(&self.control, &rest, what).map_err(at)
    }

    /// Tell the spare to go (EOF on its control socket): its pid, to reap.
    pub(super) fn dismiss(self) -> libc::pid_t {
        self.pid
    }
}

impl Waiting {
    /// Wait for a call, then become its executor and return it to the
    /// program. Exits 0 when the server dismisses us, 127 on failure
    /// (logged).
    pub(super) fn become_executor(self, log: Log, program: &Program) -> Invocation {
        executor::die_with(self.server, Signal::SIGKILL, log);
        Log::forget_record();
        super::setup::set_title("spare");
        let (stdio, body, extension) = match receive(&self.control) {
            Ok(Some(call)) => call,
            Ok(None) => sys::exit_now(0),
            Err(e) => {
                log.err(&e.to_string());
                sys::exit_now(127)
            }
        };
        // On a pty, the call runs in a session of its own: we lead it, and
        // the executor is our child (session.rs); only it returns here.
        match extension.as_ref().and_then(|e| e.slave.as_ref()) {
            Some(slave) => {
                let background = extension.as_ref().is_some_and(|e| e.attrs.pty_background);
                drop(session::lead(self.control, slave, background, log));
            }
            None => drop(self.control),
        }
        let invocation = executor::take_request(body);
        // What a direct run of this call shows: the program and the
        // caller's arguments (cut to the room the first run's had).
        let mut cmdline = invocation.program().as_encoded_bytes().to_vec();
        for arg in invocation.args() {
            cmdline.push(0);
            cmdline.extend_from_slice(arg.as_encoded_bytes());
        }
        let _ = sys::set_cmdline(&cmdline);
        executor::become_executor(stdio, extension, program, invocation, log, Role::Forked)
    }
}

type Received = ([OwnedFd; 3], Vec<u8>, Option<Extension>);

/// The spare's side of the handover: `None` on EOF before anything.
fn receive(control: &UnixStream) -> Result<Option<Received>> {
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match (&*control).read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(Error::peer_gone("read a call from the server")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read a call from the server", e)),
        }
    }
    let word = |i: usize| u32::from_be_bytes(head[i..i + 4].try_into().expect("4 bytes"));
    let (body_len, attrs_len, nfds) = (word(0) as usize, word(4), word(8) as usize);
    if nfds < 3 {
        return Err(Error::protocol(format!(
            "a call handed over with {nfds} fds"
        )));
    }
    let mut fds = Vec::with_capacity(nfds);
    for _ in 0..nfds {
        match recv_fd(control)? {
            Some(fd) => fds.push(fd),
            None => return Err(Error::protocol("control socket is non-blocking")),
        }
    }
    let attrs_bytes = if attrs_len == NO_ATTRS {
        0
    } else {
        attrs_len as usize
    };
    let mut rest = vec![0; body_len + attrs_bytes];
    (&*control)
        .read_exact(&mut rest)
        .map_err(|e| Error::io("read a call from the server", e))?;
    let attrs = rest.split_off(body_len);
    let mut extra = fds.split_off(3);
    let stdio: [OwnedFd; 3] = fds.try_into().expect("three fds");
    let extension = if attrs_len == NO_ATTRS {
        None
    } else {
        let attrs = Attributes::decode_body(&attrs)?;
        let slave = if attrs.pty.is_empty() {
            None
        } else {
            extra.pop()
        };
        if attrs.fds.len() != extra.len() || slave.is_none() != attrs.pty.is_empty() {
            return Err(Error::protocol("fd numbers and fds handed over differ"));
        }
        let extra = attrs.fds.iter().copied().zip(extra).collect();
        Some(Extension {
            attrs,
            extra,
            slave,
        })
    };
    Ok(Some((stdio, rest, extension)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::fd::AsRawFd;

    fn null() -> OwnedFd {
        OwnedFd::from(File::open("/dev/null").unwrap())
    }

    fn hand(extension: Option<Extension>) -> Received {
        let (server, spare) = UnixStream::pair().unwrap();
        let (call, _caller) = UnixStream::pair().unwrap();
        let complete = Complete {
            call: Call::new(call),
            stdio: [null(), null(), null()],
            body: b"A=1\0\0prog\0arg\0".to_vec(),
            extension,
        };
        let spare_side = Spare {
            pid: 0x7fff_fff0,
            control: server,
        };
        let handed = spare_side.hand_over(complete).ok().unwrap();
        let received = receive(&spare).unwrap().unwrap();
        assert_eq!(handed.framed, received.2.is_some());
        let slave = received.2.as_ref().is_some_and(|e| e.slave.is_some());
        assert_eq!(handed.leader.is_some(), slave);
        received
    }

    #[test]
    fn a_spare_gone_gives_the_call_back() {
        let (server, spare) = UnixStream::pair().unwrap();
        drop(spare); // what the spare's death does to its end
        let (call, _caller) = UnixStream::pair().unwrap();
        let complete = Complete {
            call: Call::new(call),
            stdio: [null(), null(), null()],
            body: b"A=1\0\0prog\0arg\0".to_vec(),
            extension: None,
        };
        let gone = Spare {
            pid: 0x7fff_fff0,
            control: server,
        };
        let Err(NotHanded { error, call }) = gone.hand_over(complete) else {
            panic!("handed to a spare that had gone");
        };
        assert!(error.is_peer_gone(), "{error}");
        let call = call.expect("the call comes back");
        assert_eq!(call.body, b"A=1\0\0prog\0arg\0");
        // And the next spare takes it whole.
        let (server, spare) = UnixStream::pair().unwrap();
        let next = Spare {
            pid: 0x7fff_fff1,
            control: server,
        };
        assert!(next.hand_over(*call).is_ok());
        let (_, body, _) = receive(&spare).unwrap().unwrap();
        assert_eq!(body, b"A=1\0\0prog\0arg\0");
    }

    #[test]
    fn a_plain_call_crosses_whole() {
        let (stdio, body, extension) = hand(None);
        assert_eq!(body, b"A=1\0\0prog\0arg\0");
        assert!(extension.is_none());
        assert!(stdio.iter().all(|fd| fd.as_raw_fd() > 2));
    }

    #[test]
    fn attributes_and_extra_fds_keep_their_numbers() {
        let attrs = Attributes {
            umask: Some(0o027),
            nice: Some(3),
            blocked: Some(vec![10, 12]),
            ..Attributes::default()
        };
        let (_, _, extension) = hand(Some(Extension {
            attrs: attrs.clone(),
            extra: vec![(7, null()), (42, null())],
            slave: None,
        }));
        let got = extension.unwrap();
        assert_eq!(got.attrs.umask, attrs.umask);
        assert_eq!(got.attrs.nice, attrs.nice);
        assert_eq!(got.attrs.blocked, attrs.blocked);
        assert_eq!(
            got.extra.iter().map(|&(n, _)| n).collect::<Vec<_>>(),
            [7, 42]
        );
        assert!(got.slave.is_none());
    }

    #[test]
    fn a_pty_slave_crosses_after_the_extra_fds() {
        let (r, _w) = std::io::pipe().unwrap();
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        let want = ino(&OwnedFd::from(r.try_clone().unwrap()));
        let attrs = Attributes {
            pty: vec![1],
            ..Attributes::default()
        };
        let (_, _, extension) = hand(Some(Extension {
            attrs,
            extra: vec![(5, null())],
            slave: Some(OwnedFd::from(r)),
        }));
        let got = extension.unwrap();
        assert_eq!(got.attrs.pty, [1]);
        assert_eq!(got.extra.len(), 1);
        assert_eq!(ino(got.slave.as_ref().unwrap()), want);
    }

    #[test]
    fn eof_before_a_call_means_go() {
        let (server, spare) = UnixStream::pair().unwrap();
        drop(server);
        assert!(receive(&spare).unwrap().is_none());
    }

    #[test]
    fn a_truncated_handover_is_an_error() {
        let (server, spare) = UnixStream::pair().unwrap();
        write_all_nosignal(&server, &[0, 0, 0, 4], "test").unwrap();
        drop(server);
        assert!(receive(&spare).is_err());
    }
}
