//! An implementation of the identity hash (SPEC §3) written from the
//! SPEC's byte layout alone, independently of `src/client/identity.rs`:
//! the tests compare the two, and this one with the C client.

use std::path::Path;

use sha2::{Digest, Sha256};

/// `sizeof(struct utsname)` on Linux with glibc: six fields of 65 bytes.
pub const UTSNAME_LEN: usize = 6 * 65;

/// What the hash covers besides the command line.
#[derive(Debug, Clone)]
pub struct RefHost {
    /// The raw `struct utsname`.
    pub utsname: Vec<u8>,
    /// st_dev and st_ino of the current directory.
    pub cwd: (u64, u64),
    /// st_dev and st_ino of `/`.
    pub root: (u64, u64),
}

/// One `-G` or `-E` option.
#[derive(Debug, Clone, Copy)]
pub enum RefItem<'a> {
    /// `-G STRING`.
    G(&'a [u8]),
    /// `-E VAR`, with the variable's value (None: unset).
    E(&'a [u8], Option<&'a [u8]>),
}

/// A raw `struct utsname` from its six fields (sysname, nodename, release,
/// version, machine, domainname), each zero-padded to 65 bytes.
pub fn utsname(fields: [&[u8]; 6]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(UTSNAME_LEN);
    for f in fields {
        assert!(f.len() < 65, "utsname field too long: {f:?}");
        raw.extend_from_slice(f);
        raw.resize(raw.len() + 65 - f.len(), 0);
    }
    raw
}

/// The real host, as a client running in `cwd` sees it.
pub fn this_host(cwd: &Path) -> RefHost {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let u = nix::sys::utsname::uname().expect("uname");
    let dev_ino = |p: &Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.dev(), md.ino())
    };
    RefHost {
        utsname: utsname([
            u.sysname().as_bytes(),
            u.nodename().as_bytes(),
            u.release().as_bytes(),
            u.version().as_bytes(),
            u.machine().as_bytes(),
            u.domainname().as_bytes(),
        ]),
        cwd: dev_ino(cwd),
        root: dev_ino(Path::new("/")),
    }
}

/// The 64 hex digits of the identity, hashed over the SPEC §3 layout:
///
/// 1. `0x01`;
/// 2. `u`, then sizeof(struct utsname) as a 64-bit native-endian size_t;
/// 3. `u`, then the raw struct utsname;
/// 4. `.` st_dev of `.`, `i` st_ino of `.` (8 bytes each, native);
/// 5. `/` st_dev of `/`, `i` st_ino of `/`;
/// 6. per option, in order: `G` STRING NUL, or `E` VAR NUL then `v`
///    VALUE NUL if set, else a single NUL;
/// 7. `i` INTERPRETER NUL; our extension: `a` ARG NUL per interpreter
///    argument (design.md §7); then `s` SCRIPT NUL if there is a script.
pub fn reference_hex(
    host: &RefHost,
    items: &[RefItem<'_>],
    interpreter: &[u8],
    interpreter_args: &[&[u8]],
    script: Option<&[u8]>,
) -> String {
    assert_eq!(host.utsname.len(), UTSNAME_LEN);
    let mut b: Vec<u8> = vec![0x01];
    b.push(b'u');
    b.extend((UTSNAME_LEN as u64).to_ne_bytes());
    b.push(b'u');
    b.extend(&host.utsname);
    for (key, (dev, ino)) in [(b'.', host.cwd), (b'/', host.root)] {
        b.push(key);
        b.extend(dev.to_ne_bytes());
        b.push(b'i');
        b.extend(ino.to_ne_bytes());
    }
    let string = |b: &mut Vec<u8>, key: u8, s: &[u8]| {
        b.push(key);
        b.extend(s);
        b.push(0);
    };
    for item in items {
        match *item {
            RefItem::G(s) => string(&mut b, b'G', s),
            RefItem::E(var, value) => {
                string(&mut b, b'E', var);
                match value {
                    Some(v) => string(&mut b, b'v', v),
                    None => b.push(0),
                }
            }
        }
    }
    string(&mut b, b'i', interpreter);
    for a in interpreter_args {
        string(&mut b, b'a', a);
    }
    if let Some(s) = script {
        string(&mut b, b's', s);
    }
    Sha256::digest(&b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}
