//! A call's handshake, read by the server loop without blocking
//! (protocol.md §4.1): the greeting, then steps 2-4 (and, with `call1`,
//! the accept frame, the `ATTR` frame and the caller's extra fds) as the
//! bytes arrive, so a slow or idle connection holds no executor and
//! delays no other caller. Only a complete call gets an executor. The setup process
//! running the first call in place (protocol.md §7) reads the same
//! handshake, after its own greeting, waiting for it
//! ([`Handshake::complete_within`]).
//!
//! Each item is read exactly (never a byte past it), so an fd sent with the
//! next byte is never read as plain data and lost. The request body grows
//! with what has arrived, up to [`MAX_REQUEST_LEN`], and is kept whole:
//! the executor splits it.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::executor::Extension;
use crate::error::{Error, Result};
use crate::protocol::{
    Attributes, Call, Frame, MAX_REQUEST_LEN, Request, check_frame_len, recv_fd,
};

/// A call whose handshake is done: what its executor and the server's
/// watch over it need.
pub(super) struct Complete {
    /// The call's socket (blocking again).
    pub(super) call: Call,
    /// The caller's fds 0, 1 and 2 (close-on-exec).
    pub(super) stdio: [OwnedFd; 3],
    /// The request body as it came, checked (`Request::check_body`).
    pub(super) body: Vec<u8>,
    /// With `call1`: the caller's attributes and extra fds.
    pub(super) extension: Option<Extension>,
}

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The signalling byte (step 2).
    Signal,
    /// The three stdio fds (step 3).
    Stdio,
    /// The request length (step 4).
    Length,
    /// The request body, of this length.
    Body(usize),
    /// A frame's tag and length (§6.2).
    FrameHead,
    /// A frame's body, after this head.
    FrameBody([u8; 8]),
    /// The extra fds the `ATTR` frame announced (§6.3).
    ExtraFds,
}

/// Reading a body, at most this much at a time.
const CHUNK: usize = 64 * 1024;

/// One connection's handshake in progress.
pub(super) struct Handshake {
    call: Call,
    /// When the connection was accepted: the deadline counts from here.
    pub(super) accepted: Instant,
    step: Step,
    /// The bytes of the current fixed-size item.
    item: Vec<u8>,
    stdio: Vec<OwnedFd>,
    body: Vec<u8>,
    attrs: Option<Attributes>,
    extra: Vec<(RawFd, OwnedFd)>,
    /// May this call have a pty (`pty1`, protocol.md §9)? Not in place.
    pty_allowed: bool,
    /// We accepted `pty1`.
    pty_accepted: bool,
    /// With `pty1`: the slave, after the extra fds.
    slave: Option<OwnedFd>,
}

impl Handshake {
    /// Greet a new connection (step 1) and start reading its handshake.
    pub(super) fn start(sock: UnixStream) -> Result<Handshake> {
        let mut call = Self::nonblocking(sock)?;
        // Eight bytes on a new socket: they fit its empty buffer.
        call.send_greeting()?;
        Ok(Self::greeted(call, true))
    }

    /// Greet the first call's socket with the `inplace1` greeting (the
    /// setup process runs the call itself, protocol.md §7) and start
    /// reading its handshake.
    pub(super) fn start_in_place(sock: UnixStream) -> Result<Handshake> {
        let mut call = Self::nonblocking(sock)?;
        // Sixteen bytes on a socket nothing was sent on yet: they fit.
        // In place the call runs in the caller's session, on its terminal:
        // no pty (protocol.md §7).
        call.send_in_place_greeting()?;
        Ok(Self::greeted(call, false))
    }

    fn nonblocking(sock: UnixStream) -> Result<Call> {
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("make a call's socket non-blocking", e))?;
        Ok(Call::new(sock))
    }

    fn greeted(call: Call, pty_allowed: bool) -> Handshake {
        Handshake {
            call,
            accepted: Instant::now(),
            step: Step::Signal,
            item: Vec::new(),
            stdio: Vec::new(),
            body: Vec::new(),
            attrs: None,
            extra: Vec::new(),
            pty_allowed,
            pty_accepted: false,
            slave: None,
        }
    }

    /// Read what has arrived and go as far as it allows: true once the
    /// handshake is complete ([`Handshake::into_complete`]). An error (a
    /// protocol error, or the caller gone) ends the connection.
    pub(super) fn advance(&mut self) -> Result<bool> {
        loop {
            match self.step {
                Step::Signal => {
                    let Some(byte) = self.read_item(1)? else {
                        return Ok(false);
                    };
                    if byte[0] != 0 {
                        return Err(Error::protocol(format!(
                            "signalling byte is 0x{:02x}, not 0",
                            byte[0]
                        )));
                    }
                    self.step = Step::Stdio;
                }
                Step::Stdio => {
                    let Some(fd) = recv_fd(self.call.socket())? else {
                        return Ok(false);
                    };
                    self.stdio.push(fd);
                    if self.stdio.len() == 3 {
                        self.step = Step::Length;
                    }
                }
                Step::Length => {
                    let Some(len) = self.read_item(4)? else {
                        return Ok(false);
                    };
                    let len = u32::from_be_bytes(len.try_into().expect("4 bytes"));
                    if len > MAX_REQUEST_LEN {
                        return Err(Error::protocol(format!(
                            "request of {len} bytes exceeds the limit of {MAX_REQUEST_LEN}"
                        )));
                    }
                    self.step = Step::Body(len as usize);
                }
                Step::Body(len) => {
                    if !self.read_body(len)? {
                        return Ok(false);
                    }
                    let mut offer = Request::check_body(&self.body)?;
                    if !offer.call1 {
                        return Ok(true);
                    }
                    offer.pty1 &= self.pty_allowed;
                    self.pty_accepted = offer.pty1;
                    self.call.send_frame(&Frame::Accept(offer.accepted()))?;
                    self.step = Step::FrameHead;
                }
                Step::FrameHead => {
                    let Some(head) = self.read_item(8)? else {
                        return Ok(false);
                    };
                    let head: [u8; 8] = head.try_into().expect("8 bytes");
                    let len = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
                    check_frame_len(&head[..4], len)?;
                    self.step = Step::FrameBody(head);
                }
                Step::FrameBody(head) => {
                    let len = u32::from_be_bytes(head[4..].try_into().expect("4 bytes"));
                    let Some(body) = self.read_item(len as usize)? else {
                        return Ok(false);
                    };
                    let whole = [&head[..], &body].concat();
                    match Frame::parse(&whole)?.map(|(frame, _)| frame) {
                        Some(Frame::Attr(attrs)) => {
                            if !attrs.pty.is_empty() && !self.pty_accepted {
                                return Err(Error::protocol(
                                    "ATTR asks for a pty, which was not accepted",
                                ));
                            }
                            let want = attrs.fds.len() + usize::from(!attrs.pty.is_empty());
                            self.attrs = Some(attrs);
                            if want == 0 {
                                return Ok(true);
                            }
                            self.step = Step::ExtraFds;
                        }
                        // Frames we do not know come before ATTR: skip them.
                        Some(Frame::Unknown(_)) => self.step = Step::FrameHead,
                        Some(Frame::Malformed(tag, why)) => {
                            return Err(Error::protocol(format!(
                                "bad {} frame: {why}",
                                String::from_utf8_lossy(&tag)
                            )));
                        }
                        other => {
                            return Err(Error::protocol(format!(
                                "expected the ATTR frame, got {other:?}"
                            )));
                        }
                    }
                }
                Step::ExtraFds => {
                    let Some(fd) = recv_fd(self.call.socket())? else {
                        return Ok(false);
                    };
                    let attrs = self.attrs.as_ref().expect("ATTR read");
                    let numbers = &attrs.fds;
                    if self.extra.len() < numbers.len() {
                        self.extra.push((numbers[self.extra.len()], fd));
                    } else {
                        // protocol.md §9.2: the pty's slave comes last.
                        self.slave = Some(fd);
                    }
                    if self.extra.len() == numbers.len()
                        && (attrs.pty.is_empty() || self.slave.is_some())
                    {
                        return Ok(true);
                    }
                }
            }
        }
    }

    /// Read the rest of a `len`-byte item into `self.item`: the whole item
    /// once it is all there, `None` until then.
    fn read_item(&mut self, len: usize) -> Result<Option<Vec<u8>>> {
        while self.item.len() < len {
            let mut chunk = [0u8; 512];
            let want = (len - self.item.len()).min(chunk.len());
            match read_some(self.call.socket(), &mut chunk[..want])? {
                Some(n) => self.item.extend_from_slice(&chunk[..n]),
                None => return Ok(None),
            }
        }
        Ok(Some(std::mem::take(&mut self.item)))
    }

    /// Read more of a `len`-byte request body: true once it is complete.
    fn read_body(&mut self, len: usize) -> Result<bool> {
        let mut chunk = vec![0u8; CHUNK.min(len.max(1))];
        while self.body.len() < len {
            let want = (len - self.body.len()).min(chunk.len());
            match read_some(self.call.socket(), &mut chunk[..want])? {
                Some(n) => {
                    // Grow by what came, never to the announced length.
                    self.body.reserve_exact(n);
                    self.body.extend_from_slice(&chunk[..n]);
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Read the whole handshake, waiting for the bytes as they come (the
    /// first call run in place, protocol.md §7): the complete call, or an
    /// error if it is not complete within `timeout` of the greeting
    /// (`Duration::ZERO`: no limit).
    pub(super) fn complete_within(mut self, timeout: Duration) -> Result<Complete> {
        let deadline = (!timeout.is_zero()).then(|| self.accepted + timeout);
        while !self.advance()? {
            let wait = match deadline {
                None => PollTimeout::NONE,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::protocol(format!(
                            "no complete request within {} ms",
                            timeout.as_millis()
                        )));
                    }
                    // Rounded up, so we do not wake a little early and spin.
                    PollTimeout::try_from(left.as_millis().saturating_add(1))
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            match poll(&mut [PollFd::new(self.as_fd(), PollFlags::POLLIN)], wait) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(Error::io("wait for the request", e)),
            }
        }
        self.into_complete()
    }

    /// The complete call (after [`Handshake::advance`] said so); its
    /// socket stays non-blocking, as the server's loop watches it.
    pub(super) fn into_complete(self) -> Result<Complete> {
        let stdio: [OwnedFd; 3] = self
            .stdio
            .try_into()
            .map_err(|_| Error::protocol("handshake not complete: stdio fds missing"))?;
        Ok(Complete {
            call: self.call,
            stdio,
            body: self.body,
            extension: self.attrs.map(|attrs| Extension {
                attrs,
                extra: self.extra,
                slave: self.slave,
            }),
        })
    }
}

impl AsFd for Handshake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.call.as_fd()
    }
}

/// One read: `Some(n)` bytes (n > 0), `None` if nothing is there yet;
/// end of file is the caller gone.
fn read_some(sock: &UnixStream, buf: &mut [u8]) -> Result<Option<usize>> {
    loop {
        match (&*sock).read(buf) {
            Ok(0) => return Err(Error::peer_gone("read the request")),
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(Error::io("read the request", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Attributes, Offer};
    use std::ffi::OsString;
    use std::io::{IoSlice, Write};
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

    fn os(s: &str) -> OsString {
        OsString::from(s)
    }

    /// Run a server-side handshake on `sock` until it completes or fails
    /// (the client side has written everything, or gone).
    fn handshake(sock: UnixStream) -> Result<Complete> {
        let mut h = Handshake::start(sock)?;
        for _ in 0..2000 {
            if h.advance()? {
                return h.into_complete();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("handshake neither completed nor failed");
    }

    /// Steps 2 and 3 by hand: the signalling byte and three fds.
    fn send_stdio(a: &mut UnixStream) {
        let devnull = std::fs::File::open("/dev/null").unwrap();
        a.write_all(&[0]).unwrap();
        for _ in 0..3 {
            sendmsg::<()>(
                a.as_raw_fd(),
                &[IoSlice::new(&[0])],
                &[ControlMessage::ScmRights(&[devnull.as_raw_fd()])],
                MsgFlags::empty(),
                None,
            )
            .unwrap();
        }
    }

    #[test]
    fn whole_call_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let req = Request {
            env: vec![os("X=y")],
            args: vec![os("interp"), os("script"), os("arg")],
            ..Default::default()
        };
        let (r0, _w0) = std::io::pipe().unwrap();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        client
            .send_request([r0.as_fd(), devnull.as_fd(), devnull.as_fd()], &req)
            .unwrap();
        let done = handshake(b).unwrap();
        assert_eq!(client.read_greeting().unwrap(), Default::default());
        assert_eq!(Request::decode_body(&done.body).unwrap(), req);
        assert!(done.extension.is_none());
        // The received fds are new descriptions of the same files.
        let st = |fd: BorrowedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        assert_eq!(st(done.stdio[0].as_fd()), st(r0.as_fd()));
        assert_eq!(st(done.stdio[1].as_fd()), st(devnull.as_fd()));
        let mut server = done.call;
        server.send_status(42 << 8).unwrap();
        assert_eq!(client.read_status().unwrap(), 42 << 8);
    }

    #[test]
    fn call1_handshake_takes_attributes_and_extra_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let req = Request {
            env: vec![os("X=y")],
            args: vec![os("interp")],
            offer: Offer {
                call1: true,
                ..Default::default()
            },
        };
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let d = devnull.as_fd();
        client.send_request([d, d, d], &req).unwrap();
        let server = std::thread::spawn(move || handshake(b).unwrap());
        client.read_greeting().unwrap();
        let mut accept = [0u8; 4];
        std::io::Read::read_exact(&mut client.socket(), &mut accept).unwrap();
        assert_eq!(&accept, b"PFXA");
        let attrs = Attributes {
            umask: Some(0o27),
            fds: vec![7],
            ..Default::default()
        };
        client.send_attributes(&attrs, &[d], None).unwrap();
        let done = server.join().unwrap();
        let ext = done.extension.unwrap();
        assert_eq!(ext.attrs.umask, Some(0o27));
        assert_eq!(ext.extra.len(), 1);
        assert_eq!(ext.extra[0].0, 7);
        assert!(ext.slave.is_none());
    }

    /// Send a request offering `offer` and read the accept frame's names.
    fn offered(client: &mut Call, offer: Offer) -> Vec<String> {
        let req = Request {
            env: vec![os("X=y")],
            args: vec![os("interp")],
            offer,
        };
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let d = devnull.as_fd();
        client.send_request([d, d, d], &req).unwrap();
        client.read_greeting().unwrap();
        let mut head = [0u8; 8];
        std::io::Read::read_exact(&mut client.socket(), &mut head).unwrap();
        assert_eq!(&head[..4], b"PFXA");
        let mut body = vec![0u8; u32::from_be_bytes(head[4..].try_into().unwrap()) as usize];
        std::io::Read::read_exact(&mut client.socket(), &mut body).unwrap();
        String::from_utf8(body)
            .unwrap()
            .split(',')
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn pty1_is_accepted_with_call1_and_the_slave_follows_the_extra_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let server = std::thread::spawn(move || handshake(b).unwrap());
        let offer = Offer {
            call1: true,
            pty1: true,
        };
        assert_eq!(offered(&mut client, offer), ["call1", "pty1"]);
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let (r, _w) = std::io::pipe().unwrap();
        let attrs = Attributes {
            fds: vec![9],
            pty: vec![0, 2],
            ..Default::default()
        };
        client
            .send_attributes(&attrs, &[devnull.as_fd()], Some(r.as_fd()))
            .unwrap();
        let ext = server.join().unwrap().extension.unwrap();
        assert_eq!(ext.attrs.pty, [0, 2]);
        assert_eq!(ext.extra.len(), 1);
        let st = |fd: BorrowedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        assert_eq!(st(ext.slave.unwrap().as_fd()), st(r.as_fd()));
    }

    #[test]
    fn pty1_is_not_accepted_in_place_nor_without_call1() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let h = Handshake::start_in_place(b).unwrap();
        let server = std::thread::spawn(move || h.complete_within(Duration::from_secs(10)));
        let offer = Offer {
            call1: true,
            pty1: true,
        };
        assert_eq!(offered(&mut client, offer), ["call1"]);
        // Asking for one anyway is a protocol error.
        let attrs = Attributes {
            pty: vec![0],
            ..Default::default()
        };
        client.send_frame(&Frame::Attr(attrs)).unwrap();
        assert!(server.join().unwrap().is_err());
        let offer = Offer {
            call1: false,
            pty1: true,
        };
        assert_eq!(offer.accepted(), Vec::<String>::new());
    }

    #[test]
    fn in_place_greeting_then_a_whole_call_read_blocking() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut client = Call::new(a);
        let h = Handshake::start_in_place(b).unwrap();
        assert!(client.read_greeting().unwrap().in_place());
        let req = Request {
            env: vec![os("X=y")],
            args: vec![os("interp"), os("arg")],
            offer: Offer {
                call1: true,
                ..Default::default()
            },
        };
        let server = std::thread::spawn(move || h.complete_within(Duration::from_secs(10)));
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let d = devnull.as_fd();
        client.send_request([d, d, d], &req).unwrap();
        let mut accept = [0u8; 4];
        std::io::Read::read_exact(&mut client.socket(), &mut accept).unwrap();
        assert_eq!(&accept, b"PFXA");
        client
            .send_attributes(&Attributes::default(), &[], None)
            .unwrap();
        let done = server.join().unwrap().unwrap();
        assert_eq!(Request::decode_body(&done.body).unwrap(), req);
        assert!(done.extension.is_some());
        // Still non-blocking, for the server's loop.
        assert!(
            nix::fcntl::fcntl(&done.call, nix::fcntl::FcntlArg::F_GETFL)
                .map(|f| nix::fcntl::OFlag::from_bits_truncate(f)
                    .contains(nix::fcntl::OFlag::O_NONBLOCK))
                .unwrap()
        );
    }

    #[test]
    fn a_blocking_read_gives_up_after_the_timeout() {
        let (_a, b) = UnixStream::pair().unwrap();
        let start = Instant::now();
        let h = Handshake::start_in_place(b).unwrap();
        let e = h.complete_within(Duration::from_millis(50)).err().unwrap();
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(e.to_string().contains("within 50 ms"), "{e}");
        // The caller going away is not waited for.
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        let h = Handshake::start_in_place(b);
        let e = match h {
            Ok(h) => h.complete_within(Duration::ZERO).err().unwrap(),
            Err(e) => e,
        };
        assert!(e.is_peer_gone(), "{e}");
    }

    #[test]
    fn bad_requests_are_refused() {
        // Wrong signalling byte.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[1]).unwrap();
        let e = handshake(b).err().unwrap();
        assert!(e.to_string().contains("signalling byte"), "{e}");
        // A byte without an fd.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0, 0]).unwrap();
        let e = handshake(b).err().unwrap();
        assert!(e.to_string().contains("expected one fd"), "{e}");
        // Two fds on one byte.
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0]).unwrap();
        let fds = [0, 1];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&[0])],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(handshake(b).is_err());
        // Hang-up part way is "peer gone".
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[0]).unwrap();
        drop(a);
        assert!(handshake(b).err().unwrap().is_peer_gone());
        // A length over the limit is refused as soon as it is read.
        let (mut a, b2) = UnixStream::pair().unwrap();
        send_stdio(&mut a);
        a.write_all(&(MAX_REQUEST_LEN + 1).to_be_bytes()).unwrap();
        let e = handshake(b2).err().unwrap();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
        // A body without the empty string after the environment.
        let (mut a, b) = UnixStream::pair().unwrap();
        send_stdio(&mut a);
        a.write_all(&4u32.to_be_bytes()).unwrap();
        a.write_all(b"A=1\0").unwrap();
        let e = handshake(b).err().unwrap();
        assert!(e.to_string().contains("no empty string"), "{e}");
    }
}
