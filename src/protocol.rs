//! Wire protocol v1, written once and used by both the client and the Rust
//! server side (`server`). Byte layouts are in `docs/protocol.md`; the step
//! numbers below are that document's.
//!
//! This module only moves bytes and fds over an already connected socket
//! and parses the `PREFORK_INTERP` variable. It never forks, never touches
//! signals and never decides policy (timeouts, retries): callers do.
//!
//! ```text
//!   server → client   "PFI\n" + u32 length (always 0 from us) + extra   step 1
//!   client → server   0x00                                              step 2
//!   client → server   3 × (1 byte + SCM_RIGHTS fd): caller's fd 0,1,2   step 3
//!   client → server   u32 BE length + env strings, "", args             step 4
//!   server → client   u32 BE wait status                                step 5
//! ```
//!
//! Extension `call1` (§6), negotiated inside v1: the client offers it with
//! the reserved environment entry `PREFORK_INTERP_EXT=call1` (parsed into
//! [`Offer`], never passed to the program); a server that accepts answers
//! with a `PFXA` [`Frame`] instead of staying silent until the status, and
//! from then on both sides exchange frames: the caller's [`Attributes`]
//! and extra fds, forwarded signals, stops and the final status.
//!
//! ```text
//!   client → server   ... request with PREFORK_INTERP_EXT=call1         step 4
//!   server → client   frame PFXA "call1"                                §6.1
//!   client → server   frame ATTR + one SCM_RIGHTS message per extra fd  §6.3
//!   client → server   frames SIGP / SIGG (forwarded signals)            §6.5
//!   server → client   frames STOP (executor stopped), EXIT (status)     §6.5
//! ```

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg};

use crate::error::{Error, Result};

/// Name of the environment variable that tells the script side it is the
/// setup process of a new server (design.md §4).
pub const ENV_VAR: &str = "PREFORK_INTERP";

/// The greeting magic (step 1).
pub const GREETING_MAGIC: [u8; 4] = *b"PFI\n";

/// The only greeting a server may send if it is to work with the 7.0.0 C
/// client, which reads the length without byte-swapping.
pub const GREETING_V1: [u8; 8] = *b"PFI\n\0\0\0\0";

/// Largest greeting payload a client accepts; anything bigger is garbage.
pub const MAX_GREETING_EXTRA: u32 = 64 * 1024;

/// The largest request body (step 4) our servers accept (protocol.md
/// §4.1): Linux refuses to `exec` a program whose argument and environment
/// strings exceed 6 MiB (3/4 of the 8 MiB default stack limit, whatever
/// the rlimit), and a client sends a subset of its own arguments and its
/// environment; 4 KiB more for extension entries.
pub const MAX_REQUEST_LEN: u32 = 6 * 1024 * 1024 + 4096;

/// Environment entries whose names start with this are reserved for
/// protocol extensions negotiated inside v1 (SPEC §7): [`Request`] parses
/// them into its [`Offer`] instead of its environment.
pub const RESERVED_ENV_PREFIX: &[u8] = b"PREFORK_INTERP_EXT";

/// The reserved entry that offers extensions: `PREFORK_INTERP_EXT=call1`.
pub const OFFER_VAR: &str = "PREFORK_INTERP_EXT";

/// The name of extension `call1` (§6).
pub const CALL1: &str = "call1";

/// The name of extension `pty1` (§9): offered with `call1`, the call gets
/// a pseudo-terminal of the client's as its controlling terminal.
pub const PTY1: &str = "pty1";

/// Extension `inplace1` (protocol.md §7): announced by the client in the
/// first word of `PREFORK_INTERP`, answered by the setup process with a
/// greeting whose payload is this name; the setup process then runs the
/// first call itself.
pub const INPLACE1: &str = "inplace1";

/// Is this `NAME=value` entry reserved for protocol extensions?
pub fn is_reserved_env(entry: &[u8]) -> bool {
    entry.starts_with(RESERVED_ENV_PREFIX)
}

// ---------------------------------------------------------------------------
// The PREFORK_INTERP variable

/// The parsed value of `PREFORK_INTERP`:
/// `v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE` (design.md §4.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupEnv {
    /// Seconds part of the socket's mtime: files newer than the stamp
    /// mean the server is out of date.
    pub stamp_secs: i64,
    /// Nanoseconds part of the stamp (0..1e9).
    pub stamp_nsecs: u32,
    /// Listening socket (non-blocking).
    pub listen: RawFd,
    /// The first call's socket (blocking).
    pub call: RawFd,
    /// Write end of the watcher's stdin; only the server holds it.
    pub watchi: RawFd,
    /// Read end of the watcher's stdout/stderr (non-blocking).
    pub watche: RawFd,
    /// The client announced `inplace1` (protocol.md §7): the setup process
    /// may run the first call itself.
    pub in_place: bool,
    /// With `record1` (protocol.md §8): the server record's path, the
    /// rest of the value after the fds and a space (it may hold spaces).
    pub record: Option<Vec<u8>>,
}

impl SetupEnv {
    /// The value to put in `PREFORK_INTERP`.
    pub fn format(&self) -> Vec<u8> {
        let in_place = if self.in_place {
            format!(",{INPLACE1}")
        } else {
            String::new()
        };
        let record = match self.record {
            Some(_) => format!(",{}", crate::record::RECORD1),
            None => String::new(),
        };
        let mut value = format!(
            "v1,{}.{:09}{in_place}{record} {},{},{},{}",
            self.stamp_secs, self.stamp_nsecs, self.listen, self.call, self.watchi, self.watche
        )
        .into_bytes();
        if let Some(path) = &self.record {
            value.push(b' ');
            value.extend_from_slice(path);
        }
        value
    }

    /// Parse a `PREFORK_INTERP` value. Extra items after the known ones
    /// and extra space-separated words are ignored, as the protocol asks.
    pub fn parse(value: &[u8]) -> Result<SetupEnv> {
        let bad = |why: &str| {
            Error::protocol(format!(
                "{ENV_VAR}={:?}: {why}",
                String::from_utf8_lossy(value)
            ))
        };
        let mut words = value.split(|&b| b == b' ');
        let head = words.next().unwrap_or_default();
        let fds = words.next().ok_or_else(|| bad("no file descriptor list"))?;
        let mut items = head.split(|&b| b == b',');
        if items.next() != Some(b"v1") {
            return Err(bad("not protocol v1"));
        }
        let stamp = items.next().ok_or_else(|| bad("no timestamp"))?;
        let stamp = std::str::from_utf8(stamp).map_err(|_| bad("bad timestamp"))?;
        let (secs, nsecs) = stamp.split_once('.').ok_or_else(|| bad("bad timestamp"))?;
        let stamp_secs: i64 = secs.parse().map_err(|_| bad("bad timestamp"))?;
        if nsecs.len() != 9 || !nsecs.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("timestamp nanoseconds are not 9 digits"));
        }
        let stamp_nsecs: u32 = nsecs.parse().map_err(|_| bad("bad timestamp"))?;
        let items: Vec<&[u8]> = items.collect();
        let in_place = items.contains(&INPLACE1.as_bytes());
        let has_record = items.contains(&crate::record::RECORD1.as_bytes());
        let mut fd_items = fds.split(|&b| b == b',');
        let mut next_fd = |name: &str| -> Result<RawFd> {
            let item = fd_items
                .next()
                .ok_or_else(|| bad(&format!("no {name} fd")))?;
            std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse::<RawFd>().ok())
                .filter(|&fd| fd >= 0)
                .ok_or_else(|| bad(&format!("bad {name} fd")))
        };
        Ok(SetupEnv {
            stamp_secs,
            stamp_nsecs,
            listen: next_fd("LISTEN")?,
            call: next_fd("CALL")?,
            watchi: next_fd("WATCHI")?,
            watche: next_fd("WATCHE")?,
            in_place,
            record: match has_record {
                true => {
                    // Everything after the second space: a path may hold
                    // spaces of its own.
                    let mut spaces = value.iter().enumerate().filter(|&(_, &b)| b == b' ');
                    let rest = spaces.nth(1).map(|(i, _)| &value[i + 1..]);
                    match rest {
                        Some(path) if !path.is_empty() => Some(path.to_vec()),
                        _ => return Err(bad("record1 announced but no record path")),
                    }
                }
                false => None,
            },
        })
    }
}

// ---------------------------------------------------------------------------
// The request (step 4)

/// What a caller asks for: its environment and its arguments.
///
/// On the wire the arguments are `interpreter, [script,] args...` exactly as
/// the 7.0.0 C client sends them. What the program should see of them
/// depends on the script side (a script drops the interpreter and itself, a
/// program run as the interpreter only its own name: see `server`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// `NAME=value` entries, in the caller's order, without reserved ones.
    pub env: Vec<OsString>,
    /// `interpreter, [script,] args...`.
    pub args: Vec<OsString>,
    /// The extensions the client offers (reserved entries on the wire).
    pub offer: Offer,
}

/// The extensions a client offers in its request (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// Extension `call1`.
    pub call1: bool,
    /// Extension `pty1` (§9); only meaningful with `call1`.
    pub pty1: bool,
}

impl Offer {
    /// The reserved environment entry announcing this offer, if any.
    fn entry(&self) -> Option<Vec<u8>> {
        let names = self.accepted();
        (!names.is_empty()).then(|| format!("{OFFER_VAR}={}", names.join(",")).into_bytes())
    }

    /// The names a server of ours accepts from this offer, in the order of
    /// the accept frame: `pty1` only with `call1`.
    pub fn accepted(&self) -> Vec<String> {
        let mut names = Vec::new();
        if self.call1 {
            names.push(CALL1.to_string());
            if self.pty1 {
                names.push(PTY1.to_string());
            }
        }
        names
    }

    /// Take in one reserved entry: names we do not know are ignored.
    fn take(&mut self, entry: &[u8]) {
        let Some(value) = entry
            .strip_prefix(OFFER_VAR.as_bytes())
            .and_then(|rest| rest.strip_prefix(b"="))
        else {
            return;
        };
        for name in value.split(|&b| b == b',') {
            if name == CALL1.as_bytes() {
                self.call1 = true;
            } else if name == PTY1.as_bytes() {
                self.pty1 = true;
            }
        }
    }
}

impl Request {
    /// The body of step 4, without its length prefix.
    /// Reserved entries in `env` are left out: only [`Request::offer`]
    /// puts one on the wire, last in the environment.
    pub fn encode_body(&self) -> Vec<u8> {
        let offer = self.offer.entry();
        let size = self.body_len_with(&offer);
        let mut out = Vec::with_capacity(size);
        for e in self.wire_env(&offer) {
            out.extend_from_slice(e);
            out.push(0);
        }
        out.push(0);
        for a in &self.args {
            out.extend_from_slice(a.as_bytes());
            out.push(0);
        }
        debug_assert_eq!(out.len(), size);
        out
    }

    /// The length of [`Request::encode_body`]'s body, without making it.
    pub fn body_len(&self) -> usize {
        self.body_len_with(&self.offer.entry())
    }

    fn body_len_with(&self, offer: &Option<Vec<u8>>) -> usize {
        self.wire_env(offer).map(|e| e.len() + 1).sum::<usize>()
            + self.args.iter().map(|s| s.len() + 1).sum::<usize>()
            + 1
    }

    /// The environment entries that go on the wire: the reserved ones
    /// left out, the `offer` entry last.
    fn wire_env<'a>(&'a self, offer: &'a Option<Vec<u8>>) -> impl Iterator<Item = &'a [u8]> {
        self.env
            .iter()
            .map(|e| e.as_bytes())
            .filter(|e| !is_reserved_env(e))
            .chain(offer.as_deref())
    }

    /// Check the shape of the body of step 4 (it ends in NUL and has the
    /// empty string after the environment) and read its offer, without
    /// copying anything out of it: a server keeps the body as it came.
    pub fn check_body(body: &[u8]) -> Result<Offer> {
        let Some((&0, strings)) = body.split_last() else {
            return Err(Error::protocol("request does not end in a NUL"));
        };
        let mut offer = Offer::default();
        for s in strings.split(|&b| b == 0) {
            if s.is_empty() {
                return Ok(offer);
            }
            if is_reserved_env(s) {
                offer.take(s);
            }
        }
        Err(Error::protocol(
            "request has no empty string after the environment",
        ))
    }

    /// Parse the body of step 4.
    pub fn decode_body(body: &[u8]) -> Result<Request> {
        if body.last() != Some(&0) {
            return Err(Error::protocol("request does not end in a NUL"));
        }
        let mut strings = body[..body.len() - 1].split(|&b| b == 0);
        let mut env = Vec::new();
        let mut offer = Offer::default();
        loop {
            match strings.next() {
                None => {
                    return Err(Error::protocol(
                        "request has no empty string after the environment",
                    ));
                }
                Some([]) => break,
                Some(s) if is_reserved_env(s) => offer.take(s),
                Some(s) => env.push(OsString::from_vec(s.to_vec())),
            }
        }
        let args = strings.map(|s| OsString::from_vec(s.to_vec())).collect();
        Ok(Request { env, args, offer })
    }
}

// ---------------------------------------------------------------------------
// Extension call1: frames and attributes (§6.2-6.5)

/// Largest frame body either side accepts (§6.2).
pub const MAX_FRAME_BODY: u32 = 65536;

/// Most extra fds (besides 0-2) a client passes and a server accepts.
pub const MAX_EXTRA_FDS: usize = 256;

/// Resource limit value meaning "no limit" (`RLIM_INFINITY`), `inf` on
/// the wire.
pub const RLIM_INFINITY: u64 = u64::MAX;

/// One frame of extension `call1` (§6.2): a 4-letter tag, a u32 BE
/// length, a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `PFXA`, server → client: the accepted extension names.
    Accept(Vec<String>),
    /// `ATTR`, client → server: the caller's attributes (then its fds).
    Attr(Attributes),
    /// `SIGP`, client → server: deliver this signal to the executor.
    SignalProcess(i32),
    /// `SIGG`, client → server: deliver this signal to the call's group.
    SignalGroup(i32),
    /// `STOP`, server → client: the executor stopped with this signal.
    Stopped(i32),
    /// `EXIT`, server → client: the executor's raw wait status; last.
    Exit(u32),
    /// `FGND`, client → server, with `pty1` (§9.2): the client is now in
    /// the foreground (`true`) or the background of the caller's terminal.
    Foreground(bool),
    /// A frame with a tag we do not know (skipped, as §6.2 asks).
    Unknown([u8; 4]),
    /// A frame with a known tag whose body is wrong (§6.2: the server logs
    /// and skips it, the client fails): the tag and what is wrong.
    Malformed([u8; 4], String),
}

const TAG_ACCEPT: [u8; 4] = *b"PFXA";
const TAG_ATTR: [u8; 4] = *b"ATTR";
const TAG_SIGP: [u8; 4] = *b"SIGP";
const TAG_SIGG: [u8; 4] = *b"SIGG";
const TAG_STOP: [u8; 4] = *b"STOP";
const TAG_EXIT: [u8; 4] = *b"EXIT";
const TAG_FGND: [u8; 4] = *b"FGND";

fn tag_text(tag: &[u8]) -> String {
    String::from_utf8_lossy(tag).escape_debug().to_string()
}

/// A body over [`MAX_FRAME_BODY`] is a protocol error (§6.2).
pub fn check_frame_len(tag: &[u8], len: u32) -> Result<()> {
    if len > MAX_FRAME_BODY {
        return Err(Error::protocol(format!(
            "{} frame of {len} bytes exceeds the limit of {MAX_FRAME_BODY}",
            tag_text(tag)
        )));
    }
    Ok(())
}

fn u32_body(tag: &[u8], body: &[u8]) -> Result<u32> {
    let b: [u8; 4] = body.try_into().map_err(|_| {
        Error::protocol(format!(
            "{} frame has a {}-byte body, not 4",
            tag_text(tag),
            body.len()
        ))
    })?;
    Ok(u32::from_be_bytes(b))
}

fn signal_body(tag: &[u8], body: &[u8]) -> Result<i32> {
    let n = u32_body(tag, body)?;
    i32::try_from(n)
        .ok()
        .filter(|&s| (1..=64).contains(&s))
        .ok_or_else(|| Error::protocol(format!("{} frame: no signal {n}", tag_text(tag))))
}

impl Frame {
    /// The frame as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body): ([u8; 4], Vec<u8>) = match self {
            Frame::Accept(names) => (TAG_ACCEPT, names.join(",").into_bytes()),
            Frame::Attr(a) => (TAG_ATTR, a.encode_body()),
            Frame::SignalProcess(s) => (TAG_SIGP, (*s as u32).to_be_bytes().to_vec()),
            Frame::SignalGroup(s) => (TAG_SIGG, (*s as u32).to_be_bytes().to_vec()),
            Frame::Stopped(s) => (TAG_STOP, (*s as u32).to_be_bytes().to_vec()),
            Frame::Exit(status) => (TAG_EXIT, status.to_be_bytes().to_vec()),
            Frame::Foreground(front) => (TAG_FGND, u32::from(*front).to_be_bytes().to_vec()),
            Frame::Unknown(tag) | Frame::Malformed(tag, _) => (*tag, Vec::new()),
        };
        let mut out = Vec::with_capacity(8 + body.len());
        out.extend_from_slice(&tag);
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Parse the frame at the front of `buf`: `None` if it is not all
    /// there yet, else the frame and how many bytes it took.
    pub fn parse(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let tag: [u8; 4] = buf[..4].try_into().expect("4 bytes");
        let len = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
        check_frame_len(&tag, len)?;
        let end = 8 + len as usize;
        if buf.len() < end {
            return Ok(None);
        }
        let body = &buf[8..end];
        let frame = match Frame::decode(tag, body) {
            Ok(frame) => frame,
            Err(e) => Frame::Malformed(tag, e.to_string()),
        };
        Ok(Some((frame, end)))
    }

    fn decode(tag: [u8; 4], body: &[u8]) -> Result<Frame> {
        Ok(match tag {
            TAG_ACCEPT => Frame::Accept(
                String::from_utf8_lossy(body)
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            TAG_ATTR => Frame::Attr(Attributes::decode_body(body)?),
            TAG_SIGP => Frame::SignalProcess(signal_body(&tag, body)?),
            TAG_SIGG => Frame::SignalGroup(signal_body(&tag, body)?),
            TAG_STOP => Frame::Stopped(signal_body(&tag, body)?),
            TAG_EXIT => Frame::Exit(u32_body(&tag, body)?),
            TAG_FGND => match u32_body(&tag, body)? {
                0 => Frame::Foreground(false),
                1 => Frame::Foreground(true),
                n => return Err(Error::protocol(format!("FGND frame: {n} is not 0 or 1"))),
            },
            other => Frame::Unknown(other),
        })
    }
}

/// What the server sent first after a request that offered `call1`
/// (§6.1 step 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstReply {
    /// A v1 server: this is the executor's wait status; the call is over.
    Status(u32),
    /// The server accepted these extensions; frames follow.
    Accepted(Vec<String>),
}

/// Parse the first reply at the front of `buf`: `None` if more bytes are
/// needed, else the reply and how many bytes it took.
pub fn parse_first_reply(buf: &[u8]) -> Result<Option<(FirstReply, usize)>> {
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[..4] != TAG_ACCEPT {
        let status = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        return Ok(Some((FirstReply::Status(status), 4)));
    }
    Ok(match Frame::parse(buf)? {
        Some((Frame::Accept(names), used)) => Some((FirstReply::Accepted(names), used)),
        Some(_) => unreachable!("a PFXA tag parses as Frame::Accept"),
        None => None,
    })
}

/// One resource limit of the caller (`getrlimit`), [`RLIM_INFINITY`] for
/// none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    /// The resource number (`RLIMIT_NOFILE` is 7 on Linux).
    pub resource: u32,
    /// The soft limit.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// The caller's process attributes that a direct run would inherit (§6.3).
/// `None` or empty: not sent, leave the server's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// The umask.
    pub umask: Option<u32>,
    /// The nice value.
    pub nice: Option<i32>,
    /// Every resource limit.
    pub rlimits: Vec<Rlimit>,
    /// The signals the caller ignores (`SIG_IGN`).
    pub ignored: Option<Vec<i32>>,
    /// The caller's blocked signals.
    pub blocked: Option<Vec<i32>>,
    /// The numbers of the extra fds that follow the `ATTR` frame.
    pub fds: Vec<RawFd>,
    /// Extension `pty1` (§9.2): the numbers among 0-2 that the pty's
    /// slave replaces; the slave follows the extra fds. Empty: no pty.
    pub pty: Vec<RawFd>,
    /// With `pty`: the client starts in the background of the caller's
    /// terminal (`ptybg=1`).
    pub pty_background: bool,
}

fn join_numbers<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn limit_text(v: u64) -> String {
    if v == RLIM_INFINITY {
        "inf".into()
    } else {
        v.to_string()
    }
}

impl Attributes {
    /// The `ATTR` body: NUL-terminated `key=value` strings.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut items = Vec::new();
        if let Some(umask) = self.umask {
            items.push(format!("umask={umask:03o}"));
        }
        if let Some(nice) = self.nice {
            items.push(format!("nice={nice}"));
        }
        for r in &self.rlimits {
            items.push(format!(
                "rlimit={},{},{}",
                r.resource,
                limit_text(r.soft),
                limit_text(r.hard)
            ));
        }
        if let Some(sigs) = &self.ignored {
            items.push(format!("sigign={}", join_numbers(sigs)));
        }
        if let Some(sigs) = &self.blocked {
            items.push(format!("sigmask={}", join_numbers(sigs)));
        }
        items.push(format!("fds={}", join_numbers(&self.fds)));
        if !self.pty.is_empty() {
            items.push(format!("pty={}", join_numbers(&self.pty)));
            if self.pty_background {
                items.push("ptybg=1".into());
            }
        }
        let mut out = Vec::new();
        for item in items {
            out.extend_from_slice(item.as_bytes());
            out.push(0);
        }
        out
    }

    /// Parse an `ATTR` body. Unknown keys are ignored; a malformed value
    /// of a known key is an error.
    pub fn decode_body(body: &[u8]) -> Result<Attributes> {
        if !body.is_empty() && body.last() != Some(&0) {
            return Err(Error::protocol("ATTR body does not end in a NUL"));
        }
        let mut a = Attributes::default();
        for item in body.split(|&b| b == 0).filter(|i| !i.is_empty()) {
            let item =
                std::str::from_utf8(item).map_err(|_| Error::protocol("ATTR item is not ASCII"))?;
            let bad = || Error::protocol(format!("bad ATTR item {item:?}"));
            let Some((key, value)) = item.split_once('=') else {
                return Err(bad());
            };
            let numbers = |v: &str| -> Result<Vec<i32>> {
                v.split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|_| bad()))
                    .collect()
            };
            let limit = |v: &str| -> Result<u64> {
                if v == "inf" {
                    Ok(RLIM_INFINITY)
                } else {
                    v.parse().map_err(|_| bad())
                }
            };
            match key {
                "umask" => {
                    a.umask = Some(
                        u32::from_str_radix(value, 8)
                            .ok()
                            .filter(|&m| m <= 0o777)
                            .ok_or_else(bad)?,
                    )
                }
                "nice" => a.nice = Some(value.parse().map_err(|_| bad())?),
                "rlimit" => {
                    let parts: Vec<&str> = value.split(',').collect();
                    let [res, soft, hard] = parts[..] else {
                        return Err(bad());
                    };
                    a.rlimits.push(Rlimit {
                        resource: res.parse().map_err(|_| bad())?,
                        soft: limit(soft)?,
                        hard: limit(hard)?,
                    });
                }
                "sigign" => a.ignored = Some(numbers(value)?),
                "sigmask" => a.blocked = Some(numbers(value)?),
                "fds" => {
                    a.fds = numbers(value)?;
                    if a.fds.len() > MAX_EXTRA_FDS || a.fds.iter().any(|&fd| fd < 3) {
                        return Err(bad());
                    }
                }
                "ptybg" => {
                    a.pty_background = match value {
                        "0" => false,
                        "1" => true,
                        _ => return Err(bad()),
                    }
                }
                "pty" => {
                    a.pty = numbers(value)?;
                    let ascending = a.pty.windows(2).all(|w| w[0] < w[1]);
                    if a.pty.is_empty()
                        || !ascending
                        || a.pty.iter().any(|&fd| !(0..3).contains(&fd))
                    {
                        return Err(bad());
                    }
                }
                _ => {}
            }
        }
        Ok(a)
    }
}

/// Bytes received on a call socket that frames are parsed from, for a
/// side that polls the socket.
#[derive(Debug, Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Read what the (readable) socket has. `Ok(false)`: end of file.
    pub fn fill(&mut self, sock: &UnixStream) -> std::io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match (&*sock).read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The first reply after an offering request (client side).
    pub fn first_reply(&mut self) -> Result<Option<FirstReply>> {
        Ok(parse_first_reply(&self.buf)?.map(|(reply, used)| {
            self.buf.drain(..used);
            reply
        }))
    }

    /// The next complete frame, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        Ok(Frame::parse(&self.buf)?.map(|(frame, used)| {
            self.buf.drain(..used);
            frame
        }))
    }
}

// ---------------------------------------------------------------------------
// A call socket

/// One call's socket, seen from either end.
#[derive(Debug)]
pub struct Call {
    sock: UnixStream,
}

/// What a server sent in its greeting besides the magic: empty, or
/// `inplace1` from a setup process running the first call (protocol.md §7).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    /// The greeting payload.
    pub extra: Vec<u8>,
}

impl Greeting {
    /// Is this the greeting of a setup process running the call in place?
    pub fn in_place(&self) -> bool {
        self.extra == INPLACE1.as_bytes()
    }
}

/// Write all of `buf`, without SIGPIPE: a peer gone is an error saying so.
pub fn write_all_nosignal(sock: &UnixStream, mut buf: &[u8], what: &str) -> Result<()> {
    while !buf.is_empty() {
        match send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(0) => return Err(Error::peer_gone(what)),
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io(what, e)),
        }
    }
    Ok(())
}

impl Call {
    /// Wrap a connected socket.
    pub fn new(sock: UnixStream) -> Call {
        Call { sock }
    }

    /// The socket, e.g. to set a timeout or poll it.
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        self.sock.read_exact(buf).map_err(|e| Error::io(what, e))
    }

    // --- client side -------------------------------------------------------

    /// Step 1, client side. EOF before or inside the greeting is a
    /// [`Error::is_peer_gone`] error: the caller treats such a server as
    /// stale and starts a fresh one.
    pub fn read_greeting(&mut self) -> Result<Greeting> {
        let mut head = [0u8; 8];
        self.read_exact(&mut head[..4], "read greeting")?;
        if head[..4] != GREETING_MAGIC {
            return Err(Error::protocol(format!(
                "got unexpected greeting 0x{}",
                head[..4]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            )));
        }
        self.read_exact(&mut head[4..], "read greeting length")?;
        let len = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
        if len > MAX_GREETING_EXTRA {
            return Err(Error::protocol(format!(
                "greeting of {len} bytes is too long"
            )));
        }
        let mut extra = vec![0; len as usize];
        self.read_exact(&mut extra, "read greeting")?;
        Ok(Greeting { extra })
    }

    /// Steps 2-4, client side: the signalling byte, the three stdio fds,
    /// then the request.
    pub fn send_request(&mut self, stdio: [BorrowedFd<'_>; 3], req: &Request) -> Result<()> {
        write_all_nosignal(&self.sock, &[0], "send signalling byte")?;
        for fd in stdio {
            self.send_fd(fd)?;
        }
        let body = req.encode_body();
        let len = u32::try_from(body.len())
            .map_err(|_| Error::msg("arguments and environment exceed 4 GiB"))?;
        let mut msg = Vec::with_capacity(4 + body.len());
        msg.extend_from_slice(&len.to_be_bytes());
        msg.extend_from_slice(&body);
        write_all_nosignal(&self.sock, &msg, "send request")
    }

    fn send_fd(&mut self, fd: BorrowedFd<'_>) -> Result<()> {
        send_fd(&self.sock, fd)
    }

    /// Step 5, client side: the executor's raw wait status.
    pub fn read_status(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read_exact(&mut b, "read status")?;
        Ok(u32::from_be_bytes(b))
    }

    // --- server side -------------------------------------------------------

    /// Step 1, server side: the 8-byte v1 greeting.
    pub fn send_greeting(&mut self) -> Result<()> {
        write_all_nosignal(&self.sock, &GREETING_V1, "send greeting")
    }

    /// Step 1 of the first call run in place (extension `inplace1`,
    /// protocol.md §7): the greeting whose payload names the extension.
    pub fn send_in_place_greeting(&mut self) -> Result<()> {
        let mut greeting = GREETING_MAGIC.to_vec();
        greeting.extend_from_slice(&(INPLACE1.len() as u32).to_be_bytes());
        greeting.extend_from_slice(INPLACE1.as_bytes());
        write_all_nosignal(&self.sock, &greeting, "send greeting")
    }

    // --- extension call1, both sides ---------------------------------------

    /// Send one frame (§6.2).
    pub fn send_frame(&self, frame: &Frame) -> Result<()> {
        write_all_nosignal(&self.sock, &frame.encode(), "send frame")
    }

    /// §6.3, client side: the `ATTR` frame, then each extra fd in its own
    /// message, in the order of `attrs.fds` (which must match `fds`).
    /// With `pty1` (§9.2) the pty's slave follows, in one more message.
    pub fn send_attributes(
        &mut self,
        attrs: &Attributes,
        fds: &[BorrowedFd<'_>],
        slave: Option<BorrowedFd<'_>>,
    ) -> Result<()> {
        debug_assert_eq!(attrs.fds.len(), fds.len());
        debug_assert_eq!(attrs.pty.is_empty(), slave.is_none());
        self.send_frame(&Frame::Attr(attrs.clone()))?;
        for &fd in fds.iter().chain(slave.as_ref()) {
            self.send_fd(fd)?;
        }
        Ok(())
    }

    /// Step 5, server side: send the executor's raw wait status.
    pub fn send_status(&mut self, status: i32) -> Result<()> {
        write_all_nosignal(&self.sock, &(status as u32).to_be_bytes(), "send status")
    }
}

/// Send one message of one byte carrying exactly one fd (steps 3 and
/// §6.3): the counterpart of [`recv_fd`].
pub fn send_fd(sock: &UnixStream, fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(&[0])];
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(1) => return Ok(()),
            Ok(n) => return Err(Error::msg(format!("send fd: sent {n} bytes, not 1"))),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io(format!("send fd {}", fds[0]), e)),
        }
    }
}

/// Receive one message of one byte carrying exactly one fd (steps 3 and
/// §6.3), close-on-exec. `Ok(None)`: nothing has arrived yet (a
/// non-blocking socket). Reading one byte at a time keeps each fd with
/// its own byte.
pub fn recv_fd(sock: &UnixStream) -> Result<Option<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut cmsg_buf = nix::cmsg_space!([RawFd; 1]);
    loop {
        let mut iov = [IoSliceMut::new(&mut byte)];
        let msg = match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(Error::io("receive fd", e)),
        };
        if msg.bytes == 0 {
            return Err(Error::peer_gone("receive fd"));
        }
        let truncated = msg.flags.contains(MsgFlags::MSG_CTRUNC);
        let mut got: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs().map_err(|e| Error::io("receive fd", e))? {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for fd in fds {
                    // SAFETY: the kernel just installed this fd in our
                    // table for this message; nothing else owns it.
                    got.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        if truncated {
            return Err(Error::protocol("fd message truncated (too many fds?)"));
        }
        if got.len() != 1 {
            return Err(Error::protocol(format!(
                "expected one fd with the byte, got {}",
                got.len()
            )));
        }
        return Ok(got.pop());
    }
}

impl AsFd for Call {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    #[test]
    fn setup_env_round_trip() {
        let e = SetupEnv {
            stamp_secs: 1700000000,
            stamp_nsecs: 5,
            listen: 3,
            call: 4,
            watchi: 6,
            watche: 7,
            in_place: false,
            record: None,
        };
        assert_eq!(e.format(), b"v1,1700000000.000000005 3,4,6,7");
        assert_eq!(SetupEnv::parse(&e.format()).unwrap(), e);
        let e = SetupEnv {
            in_place: true,
            ..e
        };
        assert_eq!(e.format(), b"v1,1700000000.000000005,inplace1 3,4,6,7");
        assert_eq!(SetupEnv::parse(&e.format()).unwrap(), e);
        let e = SetupEnv {
            record: Some(b"/run dir/m1".to_vec()),
            ..e
        };
        assert_eq!(
            e.format(),
            b"v1,1700000000.000000005,inplace1,record1 3,4,6,7 /run dir/m1"
        );
        assert_eq!(SetupEnv::parse(&e.format()).unwrap(), e);
        // Announced, but no path: malformed.
        assert!(SetupEnv::parse(b"v1,1.000000000,record1 3,4,5,6").is_err());
        assert!(SetupEnv::parse(b"v1,1.000000000,record1 3,4,5,6 ").is_err());
    }

    #[test]
    fn setup_env_ignores_extra_items_and_words() {
        let e = SetupEnv::parse(b"v1,12.123456789,x 3,4,5,6,9 \xff\xfe junk").unwrap();
        assert_eq!((e.stamp_secs, e.stamp_nsecs), (12, 123456789));
        assert_eq!((e.listen, e.call, e.watchi, e.watche), (3, 4, 5, 6));
    }

    #[test]
    fn setup_env_rejects_malformed() {
        for bad in [
            &b""[..],
            b"v2,1.000000000 3,4,5,6",
            b"v1 3,4,5,6",
            b"v1,1.5 3,4,5,6",
            b"v1,1.00000000x 3,4,5,6",
            b"v1,1.000000000",
            b"v1,1.000000000 3,4,5",
            b"v1,1.000000000 3,4,-5,6",
            b"v1,x.000000000 3,4,5,6",
        ] {
            assert!(
                SetupEnv::parse(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn request_round_trip() {
        let r = Request {
            env: vec![os("A=1"), os("B=")],
            args: vec![os("python3"), os("/x/s.py"), os(""), os("a b")],
            ..Default::default()
        };
        let body = r.encode_body();
        assert_eq!(body, b"A=1\0B=\0\0python3\0/x/s.py\0\0a b\0");
        assert_eq!(Request::decode_body(&body).unwrap(), r);
    }

    #[test]
    fn request_empty_and_non_utf8() {
        let r = Request::default();
        assert_eq!(r.encode_body(), b"\0");
        assert_eq!(Request::decode_body(b"\0").unwrap(), r);
        let r = Request {
            env: vec![],
            args: vec![OsString::from_vec(vec![0xff, 0x80])],
            ..Default::default()
        };
        assert_eq!(Request::decode_body(&r.encode_body()).unwrap(), r);
    }

    #[test]
    fn request_rejects_malformed() {
        for bad in [&b""[..], b"A=1", b"A=1\0", b"A=1\0B=2\0", b"\0x"] {
            assert!(Request::decode_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_env() {
        assert!(is_reserved_env(b"PREFORK_INTERP_EXT=1"));
        assert!(is_reserved_env(b"PREFORK_INTERP_EXT_SIGNALS=1"));
        assert!(!is_reserved_env(b"PREFORK_INTERP=v1"));
        assert!(!is_reserved_env(b"HOME=/"));
    }

    #[test]
    fn offer_is_parsed_from_reserved_entries_and_sent_last() {
        let r = Request {
            env: vec![os("A=1"), os("PREFORK_INTERP_EXT=stale"), os("B=2")],
            args: vec![os("i")],
            offer: Offer {
                call1: true,
                pty1: false,
            },
        };
        let body = r.encode_body();
        assert_eq!(body, b"A=1\0B=2\0PREFORK_INTERP_EXT=call1\0\0i\0");
        let got = Request::decode_body(&body).unwrap();
        assert_eq!(got.env, [os("A=1"), os("B=2")]);
        assert!(got.offer.call1);
        // Unknown names and other reserved entries: no offer, not env.
        let got = Request::decode_body(b"PREFORK_INTERP_EXT=x,y\0PREFORK_INTERP_EXT_Z=call1\0\0")
            .unwrap();
        assert_eq!(got.offer, Offer::default());
        assert!(got.env.is_empty());
        let got = Request::decode_body(b"PREFORK_INTERP_EXT=zz,call1\0\0").unwrap();
        assert!(got.offer.call1);
        // pty1 comes with call1, after it.
        let offer = Offer {
            call1: true,
            pty1: true,
        };
        let r = Request {
            offer,
            ..Request::default()
        };
        assert_eq!(r.encode_body(), b"PREFORK_INTERP_EXT=call1,pty1\0\0");
        assert_eq!(Request::decode_body(&r.encode_body()).unwrap().offer, offer);
    }

    #[test]
    fn attr_pty_names_stdio_fds_only() {
        let a = Attributes {
            pty: vec![0, 2],
            ..Attributes::default()
        };
        assert_eq!(a.encode_body(), b"fds=\0pty=0,2\0");
        assert_eq!(Attributes::decode_body(&a.encode_body()).unwrap(), a);
        for bad in [
            "pty=\0",
            "pty=3\0",
            "pty=1,0\0",
            "pty=0,0\0",
            "pty=-1\0",
            "pty=x\0",
        ] {
            assert!(Attributes::decode_body(bad.as_bytes()).is_err(), "{bad:?}");
        }
        // Without the key: no pty.
        assert!(Attributes::decode_body(b"fds=\0").unwrap().pty.is_empty());
        let a = Attributes {
            pty: vec![1],
            pty_background: true,
            ..Attributes::default()
        };
        assert_eq!(a.encode_body(), b"fds=\0pty=1\0ptybg=1\0");
        assert_eq!(Attributes::decode_body(&a.encode_body()).unwrap(), a);
        assert!(Attributes::decode_body(b"pty=1\0ptybg=2\0").is_err());
    }

    #[test]
    fn fgnd_frames_carry_0_or_1() {
        for front in [false, true] {
            let bytes = Frame::Foreground(front).encode();
            assert_eq!(&bytes[..8], b"FGND\0\0\0\x04");
            assert_eq!(
                Frame::parse(&bytes).unwrap().unwrap().0,
                Frame::Foreground(front)
            );
        }
        let bad = [&b"FGND\0\0\0\x04"[..], &2u32.to_be_bytes()].concat();
        assert!(matches!(
            Frame::parse(&bad).unwrap().unwrap().0,
            Frame::Malformed(..)
        ));
    }

    #[test]
    fn attr_worked_example_of_protocol_md() {
        let a = Attributes {
            pty: Vec::new(),
            pty_background: false,
            umask: Some(0o027),
            nice: Some(0),
            rlimits: vec![Rlimit {
                resource: 7,
                soft: 200,
                hard: 524288,
            }],
            ignored: Some(vec![1]),
            blocked: Some(vec![]),
            fds: vec![3],
        };
        let mut want = b"ATTR\0\0\0\x3d".to_vec();
        want.extend_from_slice(
            b"umask=027\0nice=0\0rlimit=7,200,524288\0sigign=1\0sigmask=\0fds=3\0",
        );
        let frame = Frame::Attr(a.clone());
        assert_eq!(frame.encode(), want);
        assert_eq!(Frame::parse(&want).unwrap(), Some((frame, want.len())));
        // Infinity, unknown keys, absent keys.
        let got = Attributes::decode_body(b"rlimit=3,inf,inf\0colour=blue\0").unwrap();
        assert_eq!(got.rlimits[0].soft, RLIM_INFINITY);
        assert_eq!(got.umask, None);
        for bad in [
            &b"umask=9\0"[..],
            b"rlimit=1,2\0",
            b"fds=2\0",
            b"nice=x\0",
            b"noequals\0",
            b"umask=022",
        ] {
            assert!(Attributes::decode_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signal_and_status_frames_of_protocol_md() {
        let sigg = Frame::SignalGroup(2).encode();
        assert_eq!(sigg, b"SIGG\0\0\0\x04\0\0\0\x02");
        let exit = Frame::Exit(130 << 8).encode();
        assert_eq!(exit, b"EXIT\0\0\0\x04\0\0\x82\0");
        let mut buf = FrameBuf::default();
        buf.buf
            .extend_from_slice(&Frame::Accept(vec![CALL1.into()]).encode());
        buf.buf.extend_from_slice(&exit[..5]);
        assert_eq!(
            buf.first_reply().unwrap(),
            Some(FirstReply::Accepted(vec!["call1".into()]))
        );
        assert_eq!(buf.next_frame().unwrap(), None, "half a frame");
        buf.buf.extend_from_slice(&exit[5..]);
        buf.buf.extend_from_slice(b"ZZZZ\0\0\0\x01x");
        assert_eq!(buf.next_frame().unwrap(), Some(Frame::Exit(130 << 8)));
        assert_eq!(buf.next_frame().unwrap(), Some(Frame::Unknown(*b"ZZZZ")));
        // A v1 status is a first reply too; bad frames are errors.
        assert_eq!(
            parse_first_reply(&[0, 0, 3, 0]).unwrap(),
            Some((FirstReply::Status(0x300), 4))
        );
        for bad in [&b"SIGP\0\0\0\x04\0\0\0\x63"[..], b"SIGP\0\0\0\x02\0\0"] {
            let parsed = Frame::parse(bad).unwrap().unwrap();
            assert!(
                matches!(parsed.0, Frame::Malformed(t, _) if t == *b"SIGP"),
                "{parsed:?}"
            );
            assert_eq!(parsed.1, bad.len());
        }
        assert!(Frame::parse(b"XXXX\0\x01\0\x01").is_err(), "over the limit");
    }

    #[test]
    fn garbage_greetings() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"HTTP/1.0").unwrap();
        let e = Call::new(b).read_greeting().unwrap_err();
        assert!(e.to_string().contains("0x48545450"), "{e}");

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"PF").unwrap();
        drop(a);
        assert!(Call::new(b).read_greeting().unwrap_err().is_peer_gone());

        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"PFI\n\xff\xff\xff\xff").unwrap();
        assert!(!Call::new(b).read_greeting().unwrap_err().is_peer_gone());
    }
}
