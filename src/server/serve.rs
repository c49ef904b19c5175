//! The server's event loop (upstream part 3 step 7, protocol.md §4.1):
//! take calls in, at most `max_servers` served at once, each handed to a
//! spare executor (`spares.rs`) and watched here until it ends
//! (`running.rs`); quit when idle, when the watcher says the socket is
//! gone, or when the program has changed on disk.
//!
//! A new connection is checked (its peer must be our own uid), greeted at
//! once, and its handshake read here, without blocking, by
//! [`Handshake`]; only a complete call gets an executor, as soon as a
//! slot is free. So an idle or slow connection costs other callers
//! nothing: at most [`MAX_HELD`] handshakes are under way, the oldest idle
//! one is dropped for a newcomer (one with bytes waiting never is), and an
//! unfinished one is dropped after the request timeout. Complete calls
//! wait for a slot, never dropped, up to [`MAX_WAITING`]; beyond the
//! limits newcomers wait in the listen backlog.
//!
//! The state is one [`Server`] value; each turn of the loop waits for
//! events and dispatches them to one small handler each. Quitting first
//! closes the listening socket (new callers start a fresh server), then
//! drains: the calls already held are still served, the spares dismissed.
//!
//! ```text
//!   server   fd0-2 /dev/null; LISTEN (non-blocking), WATCHI (held only so
//!            the watcher sees EOF when we go), WATCHE (non-blocking),
//!            each held call's socket (and, once complete, its fds), each
//!            running call's socket, a control socket per spare, a
//!            signalfd for SIGCHLD (blocked); syslog. All close-on-exec.
//! ```
//!
//! Every child forked is reaped: executors and dismissed spares in the
//! loop as each one ends, and the rest, blocking, before the server exits
//! (init may not reap).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{getsockopt, sockopt};

use super::Options;
use super::handshake::{Complete, Handshake};
use super::log::{Level, Log};
use super::reload::ReloadCheck;
use super::running::Running;
use super::signals;
use super::spares::{self, NotHanded, Spare, SpareFork, Waiting};
use crate::error::Error;
use crate::record::{ServerLine, ServerRecord};
use crate::sys;

/// After a failure to accept or fork, pause this long so a persistent
/// condition (out of fds, out of processes) does not spin the loop.
const ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Most connections the server holds whose handshake is under way
/// (protocol.md §4.1). At the limit, the oldest of them with nothing to
/// read (idle, or slow) makes room for a newcomer; when every one has
/// bytes waiting (a burst of real callers), the newcomer waits in the
/// listen backlog until they are read.
pub(super) const MAX_HELD: usize = 64;

/// Most complete calls waiting for a slot. They are never dropped (their
/// callers have sent everything and wait); beyond this many, newcomers
/// wait in the listen backlog. Each holds its socket and the caller's fds.
pub(super) const MAX_WAITING: usize = 1024;

/// The protocol fds the server keeps.
pub(super) struct ServerFds {
    /// The listening socket (non-blocking).
    pub(super) listen: UnixListener,
    /// Write end of the watcher's stdin: held, never written (the watcher
    /// exits when it closes, with us or when we start quitting).
    #[allow(dead_code)]
    pub(super) watchi: OwnedFd,
    /// Read end of the watcher's output (non-blocking).
    pub(super) watche: File,
}

/// The server's first call.
pub(super) enum First {
    /// Its socket (CALL): taken in as if just accepted.
    Call(UnixStream),
    /// Run in place by the setup process with this pid (protocol.md §7):
    /// it counts as a running call, for the idle timeout.
    InPlace(libc::pid_t),
}

/// The server's whole state.
pub(super) struct Server {
    /// `None` once quitting: the listener and the watcher fds are closed.
    fds: Option<ServerFds>,
    /// Why we are quitting, once we are (the calls held are still served).
    quitting: Option<(Level, String)>,
    reload: ReloadCheck,
    /// Calls running now, each in its executor.
    running: Vec<Running>,
    /// Spare executors, waiting for calls.
    spares: Vec<Spare>,
    /// Spares kept (`Options::pool_size`).
    pool_size: usize,
    /// Dismissed spares, and executors of calls dropped at the handover:
    /// to reap.
    leaving: Vec<libc::pid_t>,
    /// SIGCHLD (blocked): the executors' stops and ends.
    children: SignalFd,
    /// Our line in the server record, if the client made one (`--list`).
    record: Option<ServerRecord>,
    /// A pidfd of the setup process while it runs the first call in place.
    first_call: Option<OwnedFd>,
    /// Connections whose handshake is under way, oldest first.
    handshakes: Vec<Handshake>,
    /// Complete calls waiting for a free slot, oldest first.
    ready: VecDeque<Complete>,
    /// 0: no limit.
    max_servers: usize,
    idle_timeout: Option<Duration>,
    /// Since when nothing has been held or running.
    idle_since: Instant,
    request_timeout: Duration,
    max_errors: u32,
    /// Failures to accept or fork since a call was last started.
    errors: u32,
    /// Our effective uid: the only one we serve.
    uid: u32,
    log: Log,
}

/// What one poll entry is for.
#[derive(Debug, Clone, Copy)]
enum Source {
    Watcher,
    Listener,
    Handshake(usize),
    Caller(usize),
    /// A running call's session leader (on a pty): its reports.
    Leader(usize),
    Children,
    FirstCall,
}

/// What a handler says happens next.
enum Next {
    /// Go round the loop again.
    Continue,
    /// We are a new spare (in the child of a fork).
    Spare(Waiting),
    /// Stop taking calls, for this reason, logged at this level.
    Quit(Level, String),
}

impl Server {
    /// A server whose first call arrives on `first` (the socketpair the
    /// client made), if it has one: not when the setup process runs the
    /// first call in place (protocol.md §7).
    pub(super) fn new(
        fds: ServerFds,
        record: Option<(std::path::PathBuf, OwnedFd)>,
        reload: ReloadCheck,
        first: First,
        opts: &Options,
        log: Log,
    ) -> Result<Server, Error> {
        let children = signals::child_events().map_err(|e| Error::io("signalfd for SIGCHLD", e))?;
        let in_place = matches!(first, First::InPlace(_));
        let mut server = Server {
            fds: Some(fds),
            quitting: None,
            reload,
            running: Vec::new(),
            spares: Vec::new(),
            pool_size: opts.pool_size,
            leaving: Vec::new(),
            children,
            record: None,
            first_call: match first {
                // Gone already, or no pidfds: it holds no idle timeout.
                First::InPlace(pid) => sys::pidfd_open(pid).ok(),
                First::Call(_) => None,
            },
            handshakes: Vec::new(),
            ready: VecDeque::new(),
            max_servers: opts.max_servers,
            idle_timeout: opts.idle_timeout,
            idle_since: Instant::now(),
            request_timeout: opts.request_timeout,
            max_errors: opts.max_errors,
            errors: 0,
            uid: nix::unistd::geteuid().as_raw(),
            log,
        };
        if let Some((path, fd)) = record {
            // The first call run in place may have ended already (its
            // process is then gone: no pidfd).
            let me = std::process::id();
            let line = ServerLine {
                pid: me as i32,
                start_ticks: crate::record::start_ticks(&me.to_string()),
                library: "rust".into(),
                calls: u64::from(in_place),
                running: u32::from(server.first_call.is_some()),
                last_call: if in_place { sys::unix_now() } else { 0 },
            };
            server.record = ServerRecord::append(fd, line)
                .map_err(|e| log.warn(&Error::io("write the server record", e).to_string()))
                .ok();
            if let Some(record) = &server.record {
                Log::record_errors_in(path, record.error_offset());
            }
        }
        if let First::Call(first) = first {
            server.take_in(first);
        }
        Ok(server)
    }

    /// Serve until it is time to quit, then exit. Returns only in a newly
    /// forked spare; the server's fds are closed there when `self` is
    /// dropped on the way out.
    pub(super) fn run(mut self) -> Waiting {
        loop {
            self.expire_handshakes();
            let mut next = self.start_calls();
            if let Next::Continue = next {
                next = self.fill_pool();
            }
            if let Next::Continue = next {
                next = self.turn();
            }
            match next {
                Next::Continue => {}
                Next::Spare(spare) => return spare,
                Next::Quit(level, why) => self.begin_quit(level, why),
            }
            if self.quitting.is_some() && self.held() == 0 && self.running.is_empty() {
                self.quit()
            }
            if self.is_busy() {
                self.idle_since = Instant::now();
            }
        }
    }

    /// Connections held: handshaking, or waiting for a slot.
    fn held(&self) -> usize {
        self.handshakes.len() + self.ready.len()
    }

    /// Room to take one more connection in: under both limits, or an idle
    /// handshake to make room.
    fn has_room(&self) -> bool {
        self.ready.len() < MAX_WAITING
            && (self.handshakes.len() < MAX_HELD || self.oldest_idle_handshake().is_some())
    }

    /// The oldest handshake with nothing to read (no bytes, no EOF): a
    /// caller that has sent everything is never the one dropped.
    fn oldest_idle_handshake(&self) -> Option<usize> {
        let mut fds: Vec<PollFd<'_>> = self
            .handshakes
            .iter()
            .map(|h| PollFd::new(h.as_fd(), PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, PollTimeout::ZERO).is_err() {
            return None;
        }
        fds.iter()
            .position(|f| f.revents().is_none_or(|r| r.is_empty()))
    }

    fn is_busy(&self) -> bool {
        self.held() != 0 || !self.running.is_empty() || self.first_call.is_some()
    }

    fn full(&self) -> bool {
        self.max_servers != 0 && self.running.len() >= self.max_servers
    }

    /// Wait for events and handle them.
    fn turn(&mut self) -> Next {
        let (sources, revents) = match self.wait() {
            Ok(r) => r,
            Err(e) => {
                // We cannot wait for anything: drop what we hold.
                self.handshakes.clear();
                self.ready.clear();
                return Next::Quit(Level::Err, Error::io("poll", e).to_string());
            }
        };
        // The watcher first: if it says quit, nothing new is taken in.
        for (&source, &hit) in sources.iter().zip(&revents) {
            if hit
                && let Source::Watcher = source
                && let next @ Next::Quit(..) = self.on_watcher_output()
            {
                return next;
            }
        }
        // Running calls: their callers' signals, then their stops and ends.
        for (&source, &hit) in sources.iter().zip(&revents) {
            match source {
                Source::Caller(i) if hit => self.running[i].on_caller(self.log),
                Source::Leader(i) if hit => self.running[i].on_leader(self.log),
                Source::FirstCall if hit => {
                    self.first_call = None;
                    self.idle_since = Instant::now();
                    self.note_call(false);
                }
                _ => {}
            }
        }
        if sources
            .iter()
            .zip(&revents)
            .any(|(s, &hit)| hit && matches!(s, Source::Children))
        {
            self.on_children();
        }
        // Handshakes from the last index down, so removals keep the others'.
        for (&source, &hit) in sources.iter().zip(&revents).rev() {
            if hit && let Source::Handshake(i) = source {
                self.on_handshake(i);
            }
        }
        for (&source, &hit) in sources.iter().zip(&revents) {
            if hit && let Source::Listener = source {
                return self.on_connections();
            }
        }
        self.check_idle()
    }

    /// Poll everything: which sources are ready.
    fn wait<'s>(&'s self) -> io::Result<(Vec<Source>, Vec<bool>)> {
        let mut sources = Vec::new();
        let mut fds: Vec<PollFd<'s>> = Vec::new();
        let mut add = |source, fd: BorrowedFd<'s>| {
            sources.push(source);
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        };
        if let Some(f) = &self.fds {
            add(Source::Watcher, f.watche.as_fd());
            if self.has_room() {
                add(Source::Listener, f.listen.as_fd());
            }
        }
        for (i, h) in self.handshakes.iter().enumerate() {
            add(Source::Handshake(i), h.as_fd());
        }
        for (i, r) in self.running.iter().enumerate() {
            if let Some(fd) = r.caller() {
                add(Source::Caller(i), fd);
            }
            if let Some(fd) = r.leader() {
                add(Source::Leader(i), fd);
            }
        }
        add(Source::Children, self.children.as_fd());
        if let Some(fd) = &self.first_call {
            add(Source::FirstCall, fd.as_fd());
        }
        let mut timeout: Option<Duration> = None;
        let mut sooner = |t: Duration| timeout = Some(timeout.map_or(t, |old| old.min(t)));
        if let (false, Some(oldest)) = (
            self.request_timeout.is_zero(),
            self.handshakes.iter().map(|h| h.accepted).min(),
        ) {
            sooner((oldest + self.request_timeout).saturating_duration_since(Instant::now()));
        }
        if let (false, Some(idle)) = (self.is_busy(), self.idle_timeout) {
            sooner(idle.saturating_sub(self.idle_since.elapsed()));
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
        let revents = fds
            .iter()
            .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        Ok((sources, revents))
    }

    /// WATCHE is readable: EOF means the watcher has gone because the
    /// socket was removed or replaced; data is an error message from it.
    fn on_watcher_output(&mut self) -> Next {
        let Some(fds) = &mut self.fds else {
            return Next::Continue;
        };
        let mut buf = [0u8; 2048];
        match fds.watche.read(&mut buf) {
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

    /// LISTEN is readable: check for reload (upstream part 3 step 7.A),
    /// then take in what is waiting, as far as there is room.
    fn on_connections(&mut self) -> Next {
        if let Some(why) = self.reload.why_reload() {
            return Next::Quit(Level::Info, why);
        }
        loop {
            if self.ready.len() >= MAX_WAITING {
                return Next::Continue;
            }
            if self.handshakes.len() >= MAX_HELD {
                // The oldest idle one makes room; none idle: the newcomer
                // waits in the backlog while these are read.
                let Some(idle) = self.oldest_idle_handshake() else {
                    return Next::Continue;
                };
                drop(self.handshakes.remove(idle));
                self.log.debug(&format!(
                    "{MAX_HELD} handshakes under way: dropped the oldest idle one"
                ));
            }
            let Some(fds) = &self.fds else {
                return Next::Continue;
            };
            let sock = match fds.listen.accept() {
                Ok((sock, _)) => sock,
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
            // (Only a call started ends a run of failures: a call
            // accepted but never started has not been served.)
            if self.peer_allowed(&sock) {
                let ready = self.ready.len();
                self.take_in(sock);
                if self.ready.len() > ready {
                    // A whole call came with it: start it before taking
                    // in more.
                    return Next::Continue;
                }
            }
        }
    }

    /// Is the peer our own uid? If not, say so and refuse it.
    fn peer_allowed(&self, sock: &UnixStream) -> bool {
        match getsockopt(sock, sockopt::PeerCredentials) {
            Ok(cred) if cred.uid() == self.uid => true,
            Ok(cred) => {
                self.log.warn(&format!(
                    "refused a call from uid {} (pid {}): only uid {} may call this server",
                    cred.uid(),
                    cred.pid(),
                    self.uid
                ));
                false
            }
            Err(e) => {
                self.log
                    .warn(&Error::io("read a caller's credentials", e).to_string());
                false
            }
        }
    }

    /// Greet a connection and hold it until its handshake is done. Our
    /// client sends its request without waiting for the greeting, so it is
    /// usually here: it is read at once, not a poll later.
    fn take_in(&mut self, sock: UnixStream) {
        match Handshake::start(sock) {
            Ok(h) => {
                self.handshakes.push(h);
                self.on_handshake(self.handshakes.len() - 1);
            }
            Err(e) => self.log.debug(&format!("a caller left at once: {e}")),
        }
    }

    /// A held connection is readable: go on with its handshake.
    fn on_handshake(&mut self, i: usize) {
        match self.handshakes[i].advance() {
            Ok(false) => {}
            Ok(true) => match self.handshakes.remove(i).into_complete() {
                Ok(call) => self.ready.push_back(call),
                Err(e) => self.log.warn(&format!("dropped a call: {e}")),
            },
            Err(e) => {
                self.handshakes.remove(i);
                if e.is_peer_gone() {
                    self.log
                        .debug(&format!("a caller left before its call: {e}"));
                } else {
                    self.log.warn(&format!("dropped a call: {e}"));
                }
            }
        }
    }

    /// Drop the connections that have not finished their handshake in
    /// time (`Duration::ZERO`: no limit).
    fn expire_handshakes(&mut self) {
        let timeout = self.request_timeout;
        if timeout.is_zero() {
            return;
        }
        let before = self.handshakes.len();
        self.handshakes.retain(|h| h.accepted.elapsed() < timeout);
        if self.handshakes.len() < before {
            self.log.debug(&format!(
                "gave up on {} caller(s) that did not send a request within {} ms",
                before - self.handshakes.len(),
                timeout.as_millis()
            ));
        }
    }

    /// Hand each complete call to a spare (forked now if none is left)
    /// while there are free slots. A call whose caller has hung up while
    /// it waited is dropped: it is not started only to be interrupted.
    fn start_calls(&mut self) -> Next {
        while !self.full() {
            let Some(call) = self.ready.pop_front() else {
                break;
            };
            if caller_gone(&call) {
                self.log
                    .debug("a caller left while its call waited for a slot");
                continue;
            }
            let (spare, from_pool) = match self.spares.pop() {
                Some(spare) => (spare, true),
                None => match spares::fork() {
                    Ok(SpareFork::Spare(waiting)) => return Next::Spare(waiting),
                    Ok(SpareFork::Server(spare)) => (spare, false),
                    // Dropping the call makes the caller see a hang-up.
                    Err(e) => return self.failed(Error::io("fork an executor", e)),
                },
            };
            let pid = spare.pid;
            match spare.hand_over(call) {
                Ok(handed) => {
                    self.running.push(Running::new(handed));
                    self.errors = 0;
                    self.note_call(true);
                }
                Err(NotHanded { error, call }) => {
                    // The spare may have taken part of the call: kill it
                    // (reaped with the leaving ones).
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    self.leaving.push(pid);
                    match call {
                        // One from the pool that had died (the OOM killer,
                        // say) before we reaped it: the call goes to the
                        // next, or to a fork.
                        Some(call) if from_pool => {
                            self.log.warn(&format!(
                                "spare executor [{pid}] had gone ({error}): its call goes to another"
                            ));
                            self.ready.push_front(*call);
                        }
                        // The caller sees a hang-up.
                        _ => self.log.err(&format!("dropped a call: {error}")),
                    }
                }
            }
        }
        Next::Continue
    }

    /// Keep the server record (`--list`) up to date: a call has started
    /// (`true`) or ended. A failure to write it is logged once, and the
    /// record is then left alone.
    fn note_call(&mut self, started: bool) {
        let Some(record) = &mut self.record else {
            return;
        };
        let line = &mut record.line;
        if started {
            line.calls += 1;
            line.running += 1;
            line.last_call = sys::unix_now();
        } else {
            line.running = line.running.saturating_sub(1);
        }
        if let Err(e) = record.write() {
            self.log
                .warn(&Error::io("update the server record", e).to_string());
            self.record = None;
        }
    }

    /// Fork spares up to the pool size, after the calls are handed over
    /// (so off their critical path), unless quitting.
    fn fill_pool(&mut self) -> Next {
        while self.quitting.is_none() && self.spares.len() < self.pool_size {
            match spares::fork() {
                Ok(SpareFork::Spare(waiting)) => return Next::Spare(waiting),
                Ok(SpareFork::Server(spare)) => self.spares.push(spare),
                Err(e) => return self.failed(Error::io("fork a spare executor", e)),
            }
        }
        Next::Continue
    }

    /// SIGCHLD: report the running calls' stops and ends, and reap every
    /// child of ours that has ended.
    fn on_children(&mut self) {
        while let Ok(Some(_)) = self.children.read_signal() {}
        let log = self.log;
        let mut i = 0;
        while i < self.running.len() {
            match self.running[i].check(log) {
                Ok(None) => i += 1,
                Ok(Some(status)) => {
                    self.running.swap_remove(i).finish(status, log);
                    // Idle time counts from the end of the last call.
                    self.idle_since = Instant::now();
                    self.note_call(false);
                }
                Err(e) => {
                    // Not our child any more (someone else reaped it?).
                    let pid = self.running.swap_remove(i).pid;
                    log.warn(&Error::io(format!("wait for executor [{pid}]"), e).to_string());
                }
            }
        }
        self.spares
            .retain(|spare| match sys::try_wait_raw(spare.pid) {
                Ok(None) => true,
                Ok(Some(status)) => {
                    log.warn(&format!(
                        "spare executor [{}] ended, wait status 0x{status:x}",
                        spare.pid
                    ));
                    false
                }
                Err(_) => false,
            });
        self.leaving
            .retain(|&pid| matches!(sys::try_wait_raw(pid), Ok(None)));
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
            Some(idle) if !self.is_busy() && self.idle_since.elapsed() >= idle => Next::Quit(
                Level::Info,
                format!("idle for {} s, quitting", idle.as_secs_f64()),
            ),
            _ => Next::Continue,
        }
    }

    /// Stop taking calls: close the listening socket (so callers get a
    /// refusal at once and start a fresh server) and the watcher's fds
    /// (the watcher exits when its stdin reaches EOF). The calls already
    /// held are still served, unless we quit because forking fails. The
    /// spares are dismissed.
    fn begin_quit(&mut self, level: Level, why: String) {
        if self.quitting.is_some() {
            return;
        }
        self.fds = None;
        let dismissed = self.spares.drain(..).map(Spare::dismiss);
        self.leaving.extend(dismissed);
        if self.errors > self.max_errors {
            self.handshakes.clear();
            self.ready.clear();
        }
        self.quitting = Some((level, why));
    }

    /// Log why we quit, wait for the dismissed spares to go, and exit.
    /// (Every call has ended: the loop runs until then.)
    fn quit(self) -> ! {
        let Server {
            leaving,
            log,
            quitting,
            ..
        } = self;
        if let Some((level, why)) = quitting {
            log.log(level, &why);
        }
        for pid in leaving {
            if let Err(e) = sys::wait_raw(pid) {
                log.warn(&Error::io(format!("wait for spare executor [{pid}]"), e).to_string());
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

/// Has the caller of this waiting call hung up?
fn caller_gone(call: &Complete) -> bool {
    // A closed peer shows as POLLHUP on a Unix stream socket, whether or
    // not frames it sent are still to be read.
    let mut fds = [PollFd::new(call.call.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Call;
    use std::io::Write;

    fn waiting_call(sock: UnixStream) -> Complete {
        let null = || OwnedFd::from(File::open("/dev/null").unwrap());
        Complete {
            call: Call::new(sock),
            stdio: [null(), null(), null()],
            body: vec![0],
            extension: None,
        }
    }

    #[test]
    fn a_caller_that_hung_up_is_gone_one_that_sent_more_is_not() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let call = waiting_call(b);
        assert!(!caller_gone(&call));
        // A frame sent while waiting (a forwarded signal) is no hang-up.
        a.write_all(b"SIGP\0\0\0\x04\0\0\0\x02").unwrap();
        assert!(!caller_gone(&call));
        drop(a);
        assert!(caller_gone(&call));
    }
}
