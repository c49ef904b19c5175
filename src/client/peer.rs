//! Who is at the other end of a server socket: the client sends a call
//! (the caller's fds, environment and attributes) only to a server of its
//! own uid, and does not wait silently on one that never greets it.
//!
//! The uid comes from the kernel (`SO_PEERCRED`: the credentials of the
//! process that made the listening socket), so it holds whatever the run
//! directory looks like. A server that has not greeted us after
//! [`GREETING_PATIENCE`] may be stuck, or only busy (the 7.0.0 Perl
//! library accepts a call only when a slot is free), so we say so on
//! stderr, with the pids holding the socket, and go on waiting.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};

use super::rundir::RunDir;
use crate::error::{Error, Result, report};

/// How long a server may take to greet us before we say something.
pub const GREETING_PATIENCE: Duration = Duration::from_secs(3);

/// Refuse a server that is not our own uid.
pub fn check_server(sock: &UnixStream, shown: &str) -> Result<()> {
    let cred = getsockopt(sock, sockopt::PeerCredentials)
        .map_err(|e| Error::io(format!("read the credentials of {shown}"), e))?;
    let me = nix::unistd::geteuid().as_raw();
    if cred.uid() != me {
        return Err(Error::msg(format!(
            "server socket {shown} belongs to uid {} (pid {}), not to us (uid {me}): \
             refusing to send it this call; remove the socket",
            cred.uid(),
            cred.pid()
        )));
    }
    Ok(())
}

/// Wait until the greeting can be read; after [`GREETING_PATIENCE`] say
/// on stderr who holds the socket and how to stop it, then wait on.
pub fn await_greeting(sock: &UnixStream, dir: &RunDir, name: &str) {
    let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
    let patience = PollTimeout::try_from(GREETING_PATIENCE).unwrap_or(PollTimeout::MAX);
    loop {
        match poll(&mut fds, patience) {
            Ok(0) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            // Ready, or an error the read will report.
            _ => return,
        }
    }
    let pids = listener_pids(dir, name);
    let list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let (who, stop) = match pids.len() {
        0 => (
            "its process could not be found".to_string(),
            format!("remove {}", dir.shown(name)),
        ),
        1 => (format!("pid {list}"), format!("kill {list}")),
        _ => (format!("pids {list}"), format!("kill {list}")),
    };
    report(format_args!(
        "warning: the server at {} ({who}) has not answered in {} s; \
         still waiting, as it may only be busy (to stop it: {stop})",
        dir.shown(name),
        GREETING_PATIENCE.as_secs()
    ));
}

/// The processes holding the listening socket bound at `name` in `dir`.
/// The kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, the interface
/// of `ss -xlp`) tie each listening Unix socket to the inode of the file
/// it is bound to; each process's fds in `/proc` name the sockets they
/// hold. Only processes we may look at (ours) are found; nothing is
/// found without `/proc` or the diagnostics.
fn listener_pids(dir: &RunDir, name: &str) -> Vec<i32> {
    let Ok(Some(file)) = dir.stat(name) else {
        return Vec::new();
    };
    let sockets = match listening_sockets_bound_to(file.st_ino) {
        Ok(s) if !s.is_empty() => s,
        _ => return Vec::new(),
    };
    let wanted: Vec<String> = sockets.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids = Vec::new();
    let Ok(procs) = fs::read_dir("/proc") else {
        return pids;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// The inodes of the listening Unix sockets bound to the file whose inode
/// is `file_ino`, from one `SOCK_DIAG_BY_FAMILY` dump (linux/unix_diag.h).
fn listening_sockets_bound_to(file_ino: u64) -> nix::Result<Vec<u32>> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const TCP_LISTEN: u32 = 10;
    const UDIAG_SHOW_VFS: u32 = 0x2;
    const UNIX_DIAG_VFS: u16 = 1;

    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Netlink,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        nix::sys::socket::SockProtocol::NetlinkSockDiag,
    )?;
    // struct nlmsghdr (16 bytes), then struct unix_diag_req (24 bytes).
    let mut req = Vec::with_capacity(40);
    req.extend_from_slice(&40u32.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&[0; 8]); // sequence number, port id
    req.extend_from_slice(&[libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // states
    req.extend_from_slice(&0u32.to_ne_bytes()); // any socket inode
    req.extend_from_slice(&UDIAG_SHOW_VFS.to_ne_bytes());
    req.extend_from_slice(&[0xff; 8]); // no cookie
    nix::unistd::write(&sock, &req)?;

    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|s| u16::from_ne_bytes([s[0], s[1]]));
    let u32_at = |b: &[u8], i: usize| {
        b.get(i..i + 4)
            .map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
    };
    let mut found = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        let n = nix::unistd::read(&sock, &mut buf)?;
        if n == 0 {
            return Ok(found);
        }
        let mut msgs = &buf[..n];
        while let (Some(len), Some(kind)) = (u32_at(msgs, 0), u16_at(msgs, 4)) {
            let len = len as usize;
            if len < 16 || len > msgs.len() || kind == NLMSG_DONE || kind == NLMSG_ERROR {
                return Ok(found);
            }
            // struct unix_diag_msg: family, type, state, pad, inode (u32),
            // cookie (8 bytes); then attributes.
            let body = &msgs[16..len];
            if let Some(sock_ino) = u32_at(body, 4) {
                let mut attrs = body.get(16..).unwrap_or_default();
                while let (Some(alen), Some(atype)) = (u16_at(attrs, 0), u16_at(attrs, 2)) {
                    let alen = alen as usize;
                    if alen < 4 || alen > attrs.len() {
                        break;
                    }
                    // struct unix_diag_vfs: inode (u32), device (u32).
                    if atype == UNIX_DIAG_VFS && u32_at(attrs, 4).map(u64::from) == Some(file_ino) {
                        found.push(sock_ino);
                    }
                    attrs = attrs.get(alen.next_multiple_of(4)..).unwrap_or_default();
                }
            }
            msgs = msgs.get(len.next_multiple_of(4)..).unwrap_or_default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn finds_the_process_holding_a_listener() {
        let dir = std::env::temp_dir().join(format!("pfi-peer-{}", std::process::id()));
        let run_dir = RunDir::at(dir.clone()).unwrap();
        let _listener = UnixListener::bind(dir.join("stest")).unwrap();
        // A listener elsewhere under the same name is not it.
        let other = std::env::temp_dir().join(format!("pfi-peer2-{}", std::process::id()));
        fs::create_dir_all(&other).unwrap();
        let elsewhere = UnixListener::bind(other.join("stest")).unwrap();
        drop(elsewhere);
        assert_eq!(
            listener_pids(&run_dir, "stest"),
            vec![std::process::id() as i32]
        );
        assert!(listener_pids(&run_dir, "sno-such-socket").is_empty());
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(other).unwrap();
    }

    #[test]
    fn our_own_socket_passes_the_uid_check() {
        let (a, _b) = UnixStream::pair().unwrap();
        check_server(&a, "pair").unwrap();
    }
}
