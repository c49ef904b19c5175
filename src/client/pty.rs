//! The pty relay (protocol.md §9, design.md §8): a served call whose
//! caller is on a terminal gets a pseudo-terminal of ours as its
//! controlling terminal, and we copy bytes between the pty's master and the
//! caller's terminal, as `ssh -t` does.
//!
//! ```text
//!   caller's terminal ──(our /dev/tty fd, raw while we are in front)──┐
//!        ▲                                                            │ keys
//!        │ output                                                     ▼
//!   client: Relay ◄──────────── pty master ───────────────────────► (input)
//!                                   │  the kernel's line discipline:
//!                                   │  ^C ^Z ^\, echo, SIGWINCH, SIGTTIN
//!                                   ▼
//!   executor: fds 0-2 that were the caller's terminal → the pty slave,
//!   the controlling terminal of the session its parent, the call's
//!   leader, leads (server/session.rs)
//! ```
//!
//! The caller's terminal is put back as we found it whenever we stop
//! relaying: at the end of the call (on every way out: [`Relay`] restores
//! it when dropped), and before we stop ourselves like the script. While
//! we are in the background of the caller's terminal we neither read it
//! nor change its mode: what is typed is the shell's. The server hears
//! where our job is (`ptybg`, `FGND`), and the call's leader puts the pty's
//! foreground in step, so the kernel stops a script reading its pty while
//! we are in the background, as for a direct run.

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::PollFlags;
use nix::sys::termios::{SetArg, Termios, cfmakeraw, tcgetattr, tcsetattr};
use nix::unistd::getpgrp;
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::error::{Error, Result};

/// Bytes moved per read: a pty hands out at most a few KiB at a time.
const CHUNK: usize = 64 * 1024;

/// In the background, how often we look whether we are in front again.
const FRONT_RECHECK: std::time::Duration = std::time::Duration::from_millis(100);

/// Most typed bytes held for a script that does not read them yet; beyond
/// that we stop reading the terminal (the kernel's own queue is 4 KiB).
const MAX_PENDING_INPUT: usize = 64 * 1024;

/// Does the caller's terminal go through a pty, and which fds are it?
#[derive(Debug)]
pub struct Plan {
    /// Our own descriptor of the caller's terminal (`/dev/tty`).
    tty: File,
    /// Which of fds 0-2 are the caller's terminal (the slave replaces them).
    pub stdio: Vec<RawFd>,
    /// Our session.
    sid: libc::pid_t,
}

/// Is `fd` a terminal, the controlling terminal of session `sid`?
fn is_controlling_terminal(fd: RawFd, sid: libc::pid_t) -> bool {
    // SAFETY: isatty and tcgetsid only read the state of whatever `fd` is
    // (an error for a closed fd or one that is no terminal).
    unsafe { libc::isatty(fd) == 1 && libc::tcgetsid(fd) == sid }
}

impl Plan {
    /// A plan if one of fds 0-2 is our controlling terminal; `None` if
    /// none is, or we have no controlling terminal, or `off` (`-T`).
    pub fn for_caller(off: bool) -> Option<Plan> {
        if off {
            return None;
        }
        let sid = nix::unistd::getsid(None).ok()?.as_raw();
        let stdio: Vec<RawFd> = (0..3)
            .filter(|&fd| is_controlling_terminal(fd, sid))
            .collect();
        if stdio.is_empty() {
            return None;
        }
        let tty = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open("/dev/tty")
            .ok()?;
        Some(Plan { tty, stdio, sid })
    }

    /// Is `fd` (an extra fd of the caller's) the caller's terminal too?
    pub fn is_terminal(&self, fd: RawFd) -> bool {
        is_controlling_terminal(fd, self.sid)
    }

    /// Make the pty: the caller's terminal settings and window size copied
    /// to it. Returns the relay and the slave to send.
    pub fn open(self) -> Result<(Relay, OwnedFd)> {
        let current =
            tcgetattr(&self.tty).map_err(|e| Error::io("tcgetattr on the terminal", e))?;
        let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
            .map_err(|e| Error::io("posix_openpt", e))?;
        nix::pty::grantpt(&master).map_err(|e| Error::io("grantpt", e))?;
        nix::pty::unlockpt(&master).map_err(|e| Error::io("unlockpt", e))?;
        let name = nix::pty::ptsname_r(&master).map_err(|e| Error::io("ptsname", e))?;
        let slave: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .map_err(|e| Error::io(format!("open {name}"), e))?
            .into();
        tcsetattr(&slave, SetArg::TCSANOW, &current)
            .map_err(|e| Error::io("copy the terminal settings to the pty", e))?;
        let master = OwnedFd::from(master);
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
            .map_err(|e| Error::io("make the pty master non-blocking", e))?;
        // Started in the background, the terminal has the settings of
        // whatever is in front (a shell's line editor): the caller's own
        // are copied again when we first come to the front.
        let front = in_front(&self.tty);
        let relay = Relay {
            tty: self.tty,
            master,
            saved: None,
            synced: front,
            told_front: front,
            input: Vec::new(),
            tty_gone: false,
            master_done: false,
        };
        relay.copy_window_size();
        Ok((relay, slave))
    }
}

/// The relay of one call (see the module comment).
pub struct Relay {
    /// The caller's terminal (our own descriptor, blocking).
    tty: File,
    /// The pty's master (non-blocking).
    master: OwnedFd,
    /// While the caller's terminal is in raw mode, set by us: its
    /// settings before, put back when we stop relaying.
    saved: Option<Termios>,
    /// The pty has the caller's settings as they are when we are in front.
    synced: bool,
    /// Where the server last heard our job is (`ptybg`, `FGND`).
    told_front: bool,
    /// Typed bytes the pty has not taken yet.
    input: Vec<u8>,
    /// The caller's terminal has hung up: no more reading it.
    tty_gone: bool,
    /// Every slave descriptor is closed (`EIO` on the master).
    master_done: bool,
}

/// Which relay fds are ready, from a poll.
#[derive(Debug, Default, Clone, Copy)]
pub struct Ready {
    /// The master's events.
    pub master: Option<PollFlags>,
    /// The caller's terminal's events.
    pub tty: Option<PollFlags>,
}

/// Is our process group the foreground of `tty`?
fn in_front(tty: &File) -> bool {
    nix::unistd::tcgetpgrp(tty).is_ok_and(|g| g == getpgrp())
}

impl Relay {
    /// Is our process group the caller's terminal's foreground?
    fn in_front(&self) -> bool {
        in_front(&self.tty)
    }

    /// Are we not relaying the terminal's keys (not in raw mode), though
    /// the terminal is there?
    fn keys_waiting(&self) -> bool {
        self.saved.is_none() && !self.tty_gone
    }

    /// Start or resume relaying: raw mode if we are in front, the window
    /// size copied (it may have changed while we were stopped).
    pub fn resume(&mut self) {
        if self.keys_waiting() && self.in_front() {
            self.enter_raw_mode();
        }
        self.copy_window_size();
    }

    /// The caller's terminal in raw mode, its settings kept to put back
    /// (and, the first time, copied to the pty if they were not yet).
    fn enter_raw_mode(&mut self) {
        let Ok(current) = tcgetattr(&self.tty) else {
            return;
        };
        if !std::mem::replace(&mut self.synced, true) {
            let _ = tcsetattr(&self.master, SetArg::TCSANOW, &current);
        }
        let mut raw = current.clone();
        cfmakeraw(&mut raw);
        // TCSADRAIN: what we wrote is shown first; typed keys are kept.
        if tcsetattr(&self.tty, SetArg::TCSADRAIN, &raw).is_ok() {
            self.saved = Some(current);
        }
        super::debug(|| format!("relay: raw mode {}", self.saved.is_some()));
    }

    /// While we are not relaying the terminal's keys (in the background),
    /// how soon to look again whether we have come to the front: a shell's
    /// `fg` of a running job sends no signal.
    pub fn recheck(&self) -> Option<std::time::Duration> {
        self.keys_waiting().then_some(FRONT_RECHECK)
    }

    /// After [`Relay::recheck`]'s time: relay the keys if we are in front.
    pub fn check_front(&mut self) {
        if self.keys_waiting() && self.in_front() {
            self.resume();
        }
    }

    /// Did our job come to the front or go to the background since we last
    /// said (protocol.md §9.2 `FGND`)? Where it is now, if so.
    pub fn job_moved(&mut self) -> Option<bool> {
        let front = self.in_front();
        (front != std::mem::replace(&mut self.told_front, front)).then_some(front)
    }

    /// Where our job is when the call starts (`ATTR` key `ptybg`).
    pub fn starts_in_front(&self) -> bool {
        self.told_front
    }

    /// Stop relaying for a while (we are about to stop like the script):
    /// the caller's terminal as we found it.
    pub fn pause(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = tcsetattr(&self.tty, SetArg::TCSADRAIN, &saved);
        }
    }

    /// The window size of the caller's terminal onto the pty (the kernel
    /// then sends SIGWINCH to the pty's foreground group if it changed).
    pub fn copy_window_size(&self) {
        let mut size = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into `size`, which is ours;
        // TIOCSWINSZ only reads it.
        unsafe {
            if libc::ioctl(self.tty.as_raw_fd(), libc::TIOCGWINSZ, &mut size) == 0 {
                libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size);
            }
        }
    }

    /// Do we poll the master (until every slave descriptor is closed)?
    fn polls_master(&self) -> bool {
        !self.master_done
    }

    /// Do we read the caller's terminal (in front, with room for more)?
    fn polls_tty(&self) -> bool {
        self.saved.is_some() && !self.tty_gone && self.input.len() < MAX_PENDING_INPUT
    }

    /// The fds to poll and for what.
    pub fn interest(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        let mut fds = Vec::with_capacity(2);
        if self.polls_master() {
            let mut events = PollFlags::POLLIN;
            if !self.input.is_empty() {
                events |= PollFlags::POLLOUT;
            }
            fds.push((self.master.as_fd(), events));
        }
        if self.polls_tty() {
            fds.push((self.tty.as_fd(), PollFlags::POLLIN));
        }
        fds
    }

    /// Which of [`Relay::interest`]'s fds `revents` belong to.
    pub fn ready(&self, revents: &[Option<PollFlags>]) -> Ready {
        let mut ready = Ready::default();
        let mut it = revents.iter().copied();
        if self.polls_master() {
            ready.master = it.next().flatten();
        }
        if self.polls_tty() {
            ready.tty = it.next().flatten();
        }
        ready
    }

    /// Move what is ready.
    pub fn pump(&mut self, ready: Ready) -> Result<()> {
        let set = |f: Option<PollFlags>| f.is_some_and(|f| !f.is_empty());
        if set(ready.tty) {
            self.read_terminal();
        }
        if set(ready.master) {
            self.write_input();
            self.copy_output()?;
        }
        Ok(())
    }

    /// Typed keys into our buffer.
    fn read_terminal(&mut self) {
        let mut buf = [0u8; 4096];
        match (&self.tty).read(&mut buf) {
            Ok(0) => self.tty_gone = true,
            Ok(n) => self.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
            // EIO: hung up, or (it cannot be, we checked) in the background.
            Err(_) => self.tty_gone = true,
        }
        self.write_input();
    }

    /// Our buffer of typed keys into the pty, as far as it takes them.
    fn write_input(&mut self) {
        while !self.input.is_empty() {
            match nix::unistd::write(&self.master, &self.input) {
                Ok(n) => drop(self.input.drain(..n)),
                Err(nix::errno::Errno::EINTR) => {}
                // EAGAIN: full; EIO: nobody has the slave open any more.
                Err(_) => return,
            }
        }
    }

    /// What the script wrote, onto the caller's terminal, until the pty has
    /// no more for now or every slave descriptor is closed.
    fn copy_output(&mut self) -> Result<()> {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match nix::unistd::read(&self.master, &mut buf) {
                Ok(0) | Err(nix::errno::Errno::EIO) => {
                    self.master_done = true;
                    return Ok(());
                }
                Ok(n) => {
                    // A terminal that hung up takes nothing: drop the output,
                    // as the kernel does for a direct run's writes.
                    if (&self.tty).write_all(&buf[..n]).is_err() {
                        self.tty_gone = true;
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("read the pty", e)),
            }
        }
    }

    /// After the script's exit: the rest of its output, until every slave
    /// descriptor is closed, or nothing has come for `quiet` (something it
    /// started still holds the slave).
    pub fn drain(&mut self, quiet: std::time::Duration) -> Result<()> {
        let timeout =
            nix::poll::PollTimeout::try_from(quiet).unwrap_or(nix::poll::PollTimeout::MAX);
        while !self.master_done {
            let mut fds = [nix::poll::PollFd::new(
                self.master.as_fd(),
                PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) => return Ok(()),
                Ok(_) => self.copy_output()?,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("poll the pty", e)),
            }
        }
        Ok(())
    }
}

impl Drop for Relay {
    /// Every way out of a call puts the caller's terminal back.
    fn drop(&mut self) {
        self.pause();
    }
}
