//! The identity that names a server (SPEC §3): the lower-case hex SHA-256
//! of a byte stream that is byte-for-byte the one chiark-utils 7.0.0's C
//! client hashes, so both clients find the same socket.
//!
//! Each item is preceded by a key byte (domain separation); integers are in
//! native byte order, as the C structs hold them:
//!
//! ```text
//!   0x01
//!   'u' sizeof(struct utsname) as size_t     'u' the raw struct utsname
//!   '.' st_dev of "."   'i' st_ino of "."
//!   '/' st_dev of "/"   'i' st_ino of "/"
//!   per -G/-E, in order: 'G' STRING NUL
//!                        'E' VAR NUL, then 'v' VALUE NUL, or NUL if unset
//!   'i' INTERPRETER NUL
//!   'a' ARG NUL          per interpreter argument (our extension)
//!   's' SCRIPT NUL       if there is a script
//!   'b' BINARY NUL       the interpreter binary, when the caller's is not
//!                        the one recorded for the name without it (our
//!                        extension, `client::interpreter`)
//! ```
//!
//! This module is pure: the caller gathers the inputs (uname, stat).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use sha2::{Digest, Sha256};

use crate::client::cli::{Command, IdentItem};
use crate::sys::UTSNAME_LEN;

/// Fewest hex digits of the hash we accept in a socket name.
pub const MIN_HEX_LEN: usize = 33;

pub use crate::sys::DevIno;

/// Everything the hash covers besides the command line.
#[derive(Debug, Clone)]
pub struct Host {
    /// The raw `struct utsname`.
    pub utsname: [u8; UTSNAME_LEN],
    /// The current directory.
    pub cwd: DevIno,
    /// The root directory.
    pub root: DevIno,
}

struct Hasher(Sha256);

impl Hasher {
    fn key(&mut self, k: u8) {
        self.0.update([k]);
    }
    fn obj(&mut self, k: u8, bytes: &[u8]) {
        self.key(k);
        self.0.update(bytes);
    }
    fn string(&mut self, k: u8, s: &OsStr) {
        self.key(k);
        self.0.update(s.as_bytes());
        self.0.update([0]);
    }
}

/// The full 64-digit hex identity of `cmd` on `host`.
pub fn hex_identity(host: &Host, cmd: &Command) -> String {
    hex_identity_with(host, cmd, None)
}

/// [`hex_identity`], plus the interpreter binary `binary` if given.
pub fn hex_identity_with(host: &Host, cmd: &Command, binary: Option<&OsStr>) -> String {
    let mut h = Hasher(Sha256::new());
    h.key(1);
    h.obj(b'u', &UTSNAME_LEN.to_ne_bytes());
    h.obj(b'u', &host.utsname);
    h.obj(b'.', &host.cwd.dev.to_ne_bytes());
    h.obj(b'i', &host.cwd.ino.to_ne_bytes());
    h.obj(b'/', &host.root.dev.to_ne_bytes());
    h.obj(b'i', &host.root.ino.to_ne_bytes());
    for item in &cmd.ident_items {
        match item {
            IdentItem::String(s) => h.string(b'G', s),
            IdentItem::Env(name, value) => {
                h.string(b'E', name);
                match value {
                    Some(v) => h.string(b'v', v),
                    None => h.key(0),
                }
            }
        }
    }
    h.string(b'i', &cmd.interpreter);
    for a in &cmd.interpreter_args {
        h.string(b'a', a);
    }
    if let Some(s) = &cmd.script {
        h.string(b's', s);
    }
    if let Some(b) = binary {
        h.string(b'b', b);
    }
    h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// How many characters of identity fit in a socket path under `run_dir_len`
/// bytes of directory: `sun_path` is 108 bytes, less the `/s` prefix, the
/// NUL and spare room, as 7.0.0 computes it.
pub fn max_ident_len(run_dir_len: usize) -> isize {
    108 - run_dir_len as isize - 10 - 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::cli::{Mode, Parsed, parse};
    use std::ffi::OsString;

    fn host() -> Host {
        let mut utsname = [0u8; UTSNAME_LEN];
        for (i, field) in ["Linux", "box", "6.1.0", "#1 SMP", "x86_64", "(none)"]
            .iter()
            .enumerate()
        {
            utsname[i * 65..i * 65 + field.len()].copy_from_slice(field.as_bytes());
        }
        Host {
            utsname,
            cwd: DevIno {
                dev: 0x801,
                ino: 1234,
            },
            root: DevIno { dev: 0x801, ino: 2 },
        }
    }

    fn cmd(words: &[&str]) -> Command {
        let argv: Vec<OsString> = std::iter::once("p")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect();
        match parse(&argv).unwrap() {
            Parsed::Run(c) => c,
            other => unreachable!("{other:?}"),
        }
    }

    /// The byte stream built by hand, independently of `Hasher`.
    fn reference_bytes(host: &Host, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![1u8, b'u'];
        b.extend_from_slice(&390usize.to_ne_bytes());
        b.push(b'u');
        b.extend_from_slice(&host.utsname);
        b.push(b'.');
        b.extend_from_slice(&host.cwd.dev.to_ne_bytes());
        b.push(b'i');
        b.extend_from_slice(&host.cwd.ino.to_ne_bytes());
        b.push(b'/');
        b.extend_from_slice(&host.root.dev.to_ne_bytes());
        b.push(b'i');
        b.extend_from_slice(&host.root.ino.to_ne_bytes());
        b.extend_from_slice(tail);
        b
    }

    fn sha_hex(b: &[u8]) -> String {
        Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    #[test]
    fn matches_hand_built_stream() {
        let h = host();
        let c = cmd(&[
            "-U",
            "-Gg1",
            "-E",
            "PREFORK_TEST_UNSET_VAR",
            "perl",
            "/s.pl",
            "ignored",
        ]);
        let tail = b"Gg1\0EPREFORK_TEST_UNSET_VAR\0\0iperl\0s/s.pl\0";
        assert_eq!(hex_identity(&h, &c), sha_hex(&reference_bytes(&h, tail)));
    }

    #[test]
    fn set_env_value_is_hashed() {
        let h = host();
        let mut c = cmd(&["-U", "perl", "/s.pl"]);
        c.ident_items = vec![IdentItem::Env("X".into(), Some("1".into()))];
        let tail = b"EX\0v1\0iperl\0s/s.pl\0";
        assert_eq!(hex_identity(&h, &c), sha_hex(&reference_bytes(&h, tail)));
    }

    #[test]
    fn interpreter_args_and_no_script() {
        let h = host();
        let c = cmd(&["-U,perl,-w", "/s.pl"]);
        let tail = b"iperl\0a-w\0s/s.pl\0";
        assert_eq!(hex_identity(&h, &c), sha_hex(&reference_bytes(&h, tail)));
        let c = cmd(&["-U", "perl"]);
        assert_eq!(
            hex_identity(&h, &c),
            sha_hex(&reference_bytes(&h, b"iperl\0"))
        );
    }

    #[test]
    fn arguments_and_mode_do_not_change_the_identity() {
        let h = host();
        let a = cmd(&["-U", "perl", "/s.pl", "x"]);
        let mut b = cmd(&["-U", "-f", "perl", "/s.pl", "y", "z"]);
        assert_eq!(b.mode, Mode::Fresh);
        assert_eq!(hex_identity(&h, &a), hex_identity(&h, &b));
        b.ident_items.push(IdentItem::String("x".into()));
        assert_ne!(hex_identity(&h, &a), hex_identity(&h, &b));
        let mut other_dir = h.clone();
        other_dir.cwd.ino += 1;
        assert_ne!(hex_identity(&h, &a), hex_identity(&other_dir, &a));
    }

    #[test]
    fn identity_length_limit() {
        assert_eq!(max_ident_len(30), 66);
        assert_eq!(max_ident_len(63), 33);
        assert!(max_ident_len(64) < MIN_HEX_LEN as isize);
    }
}
