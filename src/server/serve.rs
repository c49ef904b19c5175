//! The server's event loop (upstream part 3 step 7): accept calls and
//! fork a monitor for each, at most `max_servers` at once; reap monitors;
//! quit when idle, when the watcher says the socket is gone, or when the
//! program has changed on disk.
//!
//! The state is one [`Server`] value; each turn of the loop waits for
//! [`Ready`] events and dispatches them to one small handler, each of
//! which says what happens next ([`Next`]). New event sources (pre-forked
//! executors, a status command) are new fields, new `Ready` flags and new
//! handlers.
//!
//! ```text
//!   server   fd0-2 /dev/null; LISTEN (non-blocking), WATCHI (held only so
//!            the watcher sees EOF when we go), WATCHE (non-blocking),
//!            one pidfd per monitor; syslog. All close-on-exec.
//! ```
//!
//! Every monitor forked is reaped: in the loop as each one exits, and all
//! the rest, blocking, before the server exits (init may not reap).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::Options;
use super::child::{Child, TICK};
use super::log::{Level, Log};
use super::reload::ReloadCheck;
use crate::error::Error;
use crate::sys::{self, Forked};

/// After a failure to accept or fork, pause this long so a persistent
/// condition (out of fds, out of processes) does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The protocol fds the server keeps.
pub(super) struct ServerFds {
    /// The listening socket (non-blocking).
    pub(super) listen: UnixListener,
    /// Write end of the watcher's stdin: held, never written.
    pub(super) watchi: OwnedFd,
    /// Read end of the watcher's output (non-blocking).
    pub(super) watche: File,
}

/// The server's whole state.
pub(super) struct Server {
    fds: ServerFds,
    reload: ReloadCheck,
    /// Monitors running now, each serving one call.
    monitors: Vec<Child>,
    /// 0: no limit.
    max_servers: usize,
    idle_timeout: Option<Duration>,
    /// When the server last had no monitors and accepted nothing.
    idle_since: Instant,
    max_errors: u32,
    /// Failures to accept or fork since the last success.
    errors: u32,
    log: Log,
}

/// What woke the loop.
#[derive(Debug, Default)]
struct Ready {
    listen: bool,
    watche: bool,
}

/// What a handler says happens next.
enum Next {
    /// Go round the loop again.
    Continue,
    /// We are a new monitor (in the child of a fork): serve this call.
    Serve(UnixStream),
    /// Stop serving, for this reason, logged at this level.
    Quit(Level, String),
}

impl Server {
    /// A server whose first monitor (serving the call that started it) is
    /// `first`.
    pub(super) fn new(
        fds: ServerFds,
        reload: ReloadCheck,
        first: Child,
        opts: &Options,
        log: Log,
    ) -> Server {
        Server {
            fds,
            reload,
            monitors: vec![first],
            max_servers: opts.max_servers,
            idle_timeout: opts.idle_timeout,
            idle_since: Instant::now(),
            max_errors: opts.max_errors,
            errors: 0,
            log,
        }
    }

    /// Serve until it is time to quit, then exit. Returns only in a newly
    /// forked monitor, with its call's socket; the server's fds are closed
    /// there when `self` is dropped on the way out.
    pub(super) fn run(mut self) -> UnixStream {
        loop {
            self.reap_finished();
            let next = match self.wait() {
                Ok(ready) => self.dispatch(ready),
                Err(e) => Next::Quit(Level::Err, Error::io("poll", e).to_string()),
            };
            match next {
                Next::Continue => {}
                Next::Serve(call) => return call,
                Next::Quit(level, why) => self.quit(level, &why),
            }
        }
    }

    fn full(&self) -> bool {
        self.max_servers != 0 && self.monitors.len() >= self.max_servers
    }

    /// Wait for something to do. With the monitors at the limit, the
    /// listening socket is left out: callers wait in its queue.
    fn wait(&self) -> io::Result<Ready> {
        let watch_listen = !self.full();
        let mut fds = vec![PollFd::new(self.fds.watche.as_fd(), PollFlags::POLLIN)];
        if watch_listen {
            fds.push(PollFd::new(self.fds.listen.as_fd(), PollFlags::POLLIN));
        }
        let mut tick = false;
        for m in &self.monitors {
            match m.pidfd() {
                Some(fd) => fds.push(PollFd::new(fd, PollFlags::POLLIN)),
                None => tick = true,
            }
        }
        let mut timeout = tick.then_some(TICK);
        if let (true, Some(idle)) = (self.monitors.is_empty(), self.idle_timeout) {
            let left = idle.saturating_sub(self.idle_since.elapsed());
            timeout = Some(timeout.map_or(left, |t| t.min(left)));
        }
        // Round up, so we do not wake a little early and spin.
        let timeout = match timeout {
            None => PollTimeout::NONE,
            Some(t) => PollTimeout::try_from(t.as_millis().saturating_add(1).min(i32::MAX as u128))
                .unwrap_or(PollTimeout::MAX),
        };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let hit = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        Ok(Ready {
            watche: hit(&fds[0]),
            listen: watch_listen && hit(&fds[1]),
        })
    }

    /// Handle what woke us, the watcher first: if it says quit, no new
    /// call is accepted.
    fn dispatch(&mut self, ready: Ready) -> Next {
        if ready.watche
            && let next @ Next::Quit(..) = self.on_watcher_output()
        {
            return next;
        }
        if ready.listen {
            return self.on_call();
        }
        self.check_idle()
    }

    /// WATCHE is readable: EOF means the watcher has gone because the
    /// socket was removed or replaced; data is an error message from it.
    fn on_watcher_output(&mut self) -> Next {
        let mut buf = [0u8; 2048];
        match self.fds.watche.read(&mut buf) {
            Ok(0) => Next::Quit(
                Level::Info,
                "socket removed or replaced (fresh start or --kill?), quitting".into(),
            ),
            Ok(n) => Next::Quit(
                Level::Err,
                format!(
                    "watcher: {}, quitting",
                    String::from_utf8_lossy(&buf[..n]).trim_end()
                ),
            ),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Next::Continue
            }
            Err(e) => Next::Quit(
                Level::Err,
                format!("{}, quitting", Error::io("read watcher output", e)),
            ),
        }
    }

    /// LISTEN is readable: check for reload, then accept and fork a
    /// monitor (upstream part 3 step 7.A).
    fn on_call(&mut self) -> Next {
        if let Some(why) = self.reload.why_reload() {
            return Next::Quit(Level::Info, why);
        }
        let call = match self.fds.listen.accept() {
            Ok((call, _)) => call,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                        | io::ErrorKind::ConnectionAborted
                ) =>
            {
                return Next::Continue;
            }
            Err(e) => return self.failed(Error::io("accept a call", e)),
        };
        match sys::fork_checked() {
            Ok(Forked::Child) => Next::Serve(call),
            Ok(Forked::Parent(pid)) => {
                // The call's socket is the monitor's now.
                drop(call);
                self.monitors.push(Child::new(pid));
                self.errors = 0;
                Next::Continue
            }
            // Dropping the call makes the caller see EOF instead of a
            // greeting; it then starts a fresh server.
            Err(e) => self.failed(Error::io("fork a monitor", e)),
        }
    }

    /// Count a failure to accept or fork; quit after too many in a row.
    fn failed(&mut self, err: Error) -> Next {
        self.errors += 1;
        if self.errors > self.max_errors {
            return Next::Quit(
                Level::Err,
                format!("{err}; {} failures in a row, quitting", self.errors),
            );
        }
        self.log.warn(&err.to_string());
        std::thread::sleep(ERROR_PAUSE);
        Next::Continue
    }

    fn check_idle(&self) -> Next {
        match self.idle_timeout {
            Some(idle) if self.monitors.is_empty() && self.idle_since.elapsed() >= idle => {
                Next::Quit(
                    Level::Info,
                    format!("idle for {} s, quitting", idle.as_secs_f64()),
                )
            }
            _ => Next::Continue,
        }
    }

    /// Reap every monitor that has exited, and log any that failed.
    fn reap_finished(&mut self) {
        let before = self.monitors.len();
        let log = self.log;
        self.monitors.retain(|m| match m.try_reap() {
            Ok(None) => true,
            Ok(Some(status)) => {
                report_monitor(log, m.pid, status);
                false
            }
            Err(e) => {
                // Not our child any more (someone else reaped it?): forget it.
                log.warn(&Error::io(format!("wait for monitor [{}]", m.pid), e).to_string());
                false
            }
        });
        if before != 0 && self.monitors.is_empty() {
            self.idle_since = Instant::now();
        }
    }

    /// Stop: close the listening socket first (so callers get a refusal
    /// at once and start a fresh server), then wait for every running
    /// call to finish and exit.
    fn quit(self, level: Level, why: &str) -> ! {
        let Server {
            fds, monitors, log, ..
        } = self;
        let ServerFds {
            listen,
            watchi,
            watche,
        } = fds;
        drop(listen);
        // The watcher exits when its stdin (WATCHI) reaches EOF.
        drop(watchi);
        drop(watche);
        log.log(level, why);
        for m in monitors {
            let pid = m.pid;
            match m.reap() {
                Ok(status) => report_monitor(log, pid, status),
                Err(e) => log.warn(&Error::io(format!("wait for monitor [{pid}]"), e).to_string()),
            }
        }
        // Nothing else should be left, but leave no zombie if there is.
        while let Ok(Some((pid, status))) = sys::wait_any_raw() {
            log.warn(&format!(
                "reaped unexpected child [{pid}], wait status 0x{status:x}"
            ));
        }
        sys::exit_now(0)
    }
}

/// Log a monitor's end unless it is an ordinary one: exit 0 (the call was
/// served, or the caller left), or SIGPIPE. SIGALRM is the monitor giving
/// up on a caller that did not send its request in time.
fn report_monitor(log: Log, pid: libc::pid_t, status: i32) {
    if status == 0 || (libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGPIPE) {
        return;
    }
    if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM {
        log.debug(&format!(
            "monitor [{pid}] gave up on a caller that did not send its request in time"
        ));
        return;
    }
    log.warn(&format!(
        "monitor process [{pid}] failed with wait status 0x{status:x}"
    ));
}
