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

/// Default cap on the request body a server accepts (step 4), so a bad
/// client cannot make it allocate without bound. Linux allows about 2 MiB
/// of arguments and environment by default; this leaves room for a large
/// stack rlimit.
pub const MAX_REQUEST_LEN: u32 = 64 * 1024 * 1024;

/// Environment entries whose names start with this are reserved for
/// protocol extensions negotiated inside v1 (SPEC §7): our libraries strip
/// them before applying the caller's environment.
pub const RESERVED_ENV_PREFIX: &[u8] = b"PREFORK_INTERP_EXT";

/// Is this `NAME=value` entry reserved for protocol extensions?
pub fn is_reserved_env(entry: &[u8]) -> bool {
    entry.starts_with(RESERVED_ENV_PREFIX)
}

// ---------------------------------------------------------------------------
// The PREFORK_INTERP variable

/// The parsed value of `PREFORK_INTERP`:
/// `v1,SECS.NSECS LISTEN,CALL,WATCHI,WATCHE` (design.md §4.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

impl SetupEnv {
    /// The value to put in `PREFORK_INTERP`.
    pub fn format(&self) -> String {
        format!(
            "v1,{}.{:09} {},{},{},{}",
            self.stamp_secs, self.stamp_nsecs, self.listen, self.call, self.watchi, self.watche
        )
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
    /// `NAME=value` entries, in the caller's order.
    pub env: Vec<OsString>,
    /// `interpreter, [script,] args...`.
    pub args: Vec<OsString>,
}

impl Request {
    /// The body of step 4, without its length prefix.
    pub fn encode_body(&self) -> Vec<u8> {
        let size: usize = self
            .env
            .iter()
            .chain(&self.args)
            .map(|s| s.len() + 1)
            .sum::<usize>()
            + 1;
        let mut out = Vec::with_capacity(size);
        for e in &self.env {
            out.extend_from_slice(e.as_bytes());
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

    /// Parse the body of step 4.
    pub fn decode_body(body: &[u8]) -> Result<Request> {
        if body.last() != Some(&0) {
            return Err(Error::protocol("request does not end in a NUL"));
        }
        let mut strings = body[..body.len() - 1].split(|&b| b == 0);
        let mut env = Vec::new();
        loop {
            match strings.next() {
                None => {
                    return Err(Error::protocol(
                        "request has no empty string after the environment",
                    ));
                }
                Some([]) => break,
                Some(s) => env.push(OsString::from_vec(s.to_vec())),
            }
        }
        let args = strings.map(|s| OsString::from_vec(s.to_vec())).collect();
        Ok(Request { env, args })
    }
}

// ---------------------------------------------------------------------------
// A call socket

/// One call's socket, seen from either end.
#[derive(Debug)]
pub struct Call {
    sock: UnixStream,
}

/// What a server sent in its greeting besides the magic (always empty from
/// our libraries and from 7.0.0's Perl library).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Greeting {
    /// The greeting payload.
    pub extra: Vec<u8>,
}

fn write_all_nosignal(sock: &UnixStream, mut buf: &[u8], what: &str) -> Result<()> {
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

    /// Give the socket back.
    pub fn into_socket(self) -> UnixStream {
        self.sock
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
        let fds = [fd.as_raw_fd()];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [IoSlice::new(&[0])];
        loop {
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(1) => return Ok(()),
                Ok(n) => return Err(Error::msg(format!("send fd: sent {n} bytes, not 1"))),
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io(format!("send fd {}", fds[0]), e)),
            }
        }
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

    /// Steps 2-4, server side: returns the caller's fds 0, 1, 2 (close on
    /// exec) and the request. Bodies longer than `max_len` are refused.
    pub fn read_request(&mut self, max_len: u32) -> Result<([OwnedFd; 3], Request)> {
        let mut byte = [0u8; 1];
        self.read_exact(&mut byte, "read signalling byte")?;
        if byte[0] != 0 {
            return Err(Error::protocol(format!(
                "signalling byte is 0x{:02x}, not 0",
                byte[0]
            )));
        }
        let fds = [self.recv_fd()?, self.recv_fd()?, self.recv_fd()?];
        let mut len = [0u8; 4];
        self.read_exact(&mut len, "read request length")?;
        let len = u32::from_be_bytes(len);
        if len > max_len {
            return Err(Error::protocol(format!(
                "request of {len} bytes exceeds the limit of {max_len}"
            )));
        }
        let mut body = vec![0; len as usize];
        self.read_exact(&mut body, "read request")?;
        Ok((fds, Request::decode_body(&body)?))
    }

    /// Receive one byte carrying exactly one fd (step 3).
    fn recv_fd(&mut self) -> Result<OwnedFd> {
        let mut byte = [0u8; 1];
        let mut cmsg_buf = nix::cmsg_space!([RawFd; 1]);
        loop {
            let mut iov = [IoSliceMut::new(&mut byte)];
            let msg = match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg_buf),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
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
            return Ok(got.pop().expect("one fd"));
        }
    }

    /// Step 5, server side: send the executor's raw wait status.
    pub fn send_status(&mut self, status: i32) -> Result<()> {
        write_all_nosignal(&self.sock, &(status as u32).to_be_bytes(), "send status")
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
        };
        assert_eq!(e.format(), "v1,1700000000.000000005 3,4,6,7");
        assert_eq!(SetupEnv::parse(e.format().as_bytes()).unwrap(), e);
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
    fn whole_call_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut client, mut server) = (Call::new(a), Call::new(b));
        server.send_greeting().unwrap();
        assert_eq!(client.read_greeting().unwrap(), Greeting::default());
        let req = Request {
            env: vec![os("X=y")],
            args: vec![os("interp"), os("script"), os("arg")],
        };
        let (r0, _w0) = std::io::pipe().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        client
            .send_request([r0.as_fd(), devnull.as_fd(), devnull.as_fd()], &req)
            .unwrap();
        let (fds, got) = server.read_request(MAX_REQUEST_LEN).unwrap();
        assert_eq!(got, req);
        // The received fds are new descriptions of the same files.
        let st = |fd: BorrowedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        assert_eq!(st(fds[0].as_fd()), st(r0.as_fd()));
        assert_eq!(st(fds[1].as_fd()), st(devnull.as_fd()));
        server.send_status(42 << 8).unwrap();
        assert_eq!(client.read_status().unwrap(), 42 << 8);
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

    #[test]
    fn server_rejects_bad_requests() {
        // Wrong signalling byte.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[1]).unwrap();
        let e = Call::new(b).read_request(MAX_REQUEST_LEN).unwrap_err();
        assert!(e.to_string().contains("signalling byte"), "{e}");
        // A byte without an fd.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0, 0]).unwrap();
        let e = Call::new(b).read_request(MAX_REQUEST_LEN).unwrap_err();
        assert!(e.to_string().contains("expected one fd"), "{e}");
        // Two fds on one byte.
        let (a, b) = UnixStream::pair().unwrap();
        write_all_nosignal(&a, &[0], "x").unwrap();
        let fds = [0, 1];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(Call::new(b).read_request(MAX_REQUEST_LEN).is_err());
        // Hang-up part way is "peer gone".
        let (a, b) = UnixStream::pair().unwrap();
        write_all_nosignal(&a, &[0], "x").unwrap();
        drop(a);
        assert!(
            Call::new(b)
                .read_request(MAX_REQUEST_LEN)
                .unwrap_err()
                .is_peer_gone()
        );
        // Over-long request.
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let d = devnull.as_fd();
        client
            .send_request(
                [d, d, d],
                &Request {
                    env: vec![os("A=xxxxxxxx")],
                    args: vec![],
                },
            )
            .unwrap();
        let e = Call::new(b).read_request(4).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }
}
