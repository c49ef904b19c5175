//! The identity hash (SPEC §3) against fixed vectors, so it is checked on
//! machines without the C client too: `hex_identity` is a pure function
//! of the host (uname, st_dev/st_ino of `.` and `/`) and the command line,
//! so the host can be any values we like.
//!
//! Two kinds of vector, both literal constants below:
//!
//! - [`FROM_C_CLIENT`]: captured from the reference C client
//!   (chiark-utils-bin 7.0.0, amd64): it was run once, in
//!   `/tmp/pfi-vectors`, on the host whose uname and directory numbers
//!   are [`captured_host`], with each command line; the expected value is
//!   the name of the socket it created (less the `s`), and its run
//!   directory was short enough for all 64 digits. Ground truth for
//!   7.0.0's byte layout.
//! - [`MADE_UP`]: made-up hosts (including numbers whose bytes all differ,
//!   to pin the byte order) and command lines, among them our extension
//!   (interpreter arguments). Expected values computed once by the
//!   independent implementation in `common/identity.rs`, written from the
//!   SPEC's byte layout alone; that implementation is also checked here
//!   against the captured C client vectors, and in `client.rs`
//!   (`socket_name_matches_the_c_client`) against the C client live where
//!   it is installed.
//!
//! Integers are hashed in native byte order, so the constants hold on
//! 64-bit little-endian Linux (x86_64, aarch64...) only.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use common::identity::{RefHost, RefItem, reference_hex, utsname};
use prefork_interp::client::cli::{Command, IdentItem, Parsed, parse};
use prefork_interp::client::identity::{DevIno, Host, hex_identity};

/// A command line (after the client's name), with the values the `-E`
/// variables have: (name, value or None if unset).
struct Vector {
    argv: &'static [&'static [u8]],
    env: &'static [(&'static [u8], Option<&'static [u8]>)],
    hex: &'static str,
}

/// The host the C client vectors were captured on.
fn captured_host() -> RefHost {
    RefHost {
        utsname: utsname([
            b"Linux",
            b"vm",
            b"6.18.44-fc-v669",
            b"#1 SMP PREEMPT_DYNAMIC @0",
            b"x86_64",
            b"(none)",
        ]),
        // `stat -c '%d %i' /tmp/pfi-vectors /`
        cwd: (65024, 10010700),
        root: (65024, 2),
    }
}

/// Captured from `/usr/bin/prefork-interp` 7.0.0 on [`captured_host`],
/// run in `/tmp/pfi-vectors` with `PFI_VEC_SET=value PFI_VEC_EMPTY=` and
/// `PFI_VEC_UNSET` unset.
const FROM_C_CLIENT: &[Vector] = &[
    Vector {
        argv: &[b"-U", b"perl", b"/tmp/pfi-vectors/script.pl"],
        env: &[],
        hex: "9ce3119f77ef40d696a2a0f9b717bf3cd311af74ec249e61e4216a6e074cc30c",
    },
    Vector {
        argv: &[
            b"-U",
            b"-G",
            b"g1",
            b"-G",
            b"",
            b"perl",
            b"/tmp/pfi-vectors/script.pl",
        ],
        env: &[],
        hex: "31b2bc97e15f9a1ee683b43e604c184cfa871af81833ff1dee997fda2db7af78",
    },
    Vector {
        argv: &[
            b"-U",
            b"-E",
            b"PFI_VEC_SET",
            b"-E",
            b"PFI_VEC_EMPTY",
            b"-E",
            b"PFI_VEC_UNSET",
            b"-G",
            b"x",
            b"perl",
            b"/tmp/pfi-vectors/script.pl",
        ],
        env: &[
            (b"PFI_VEC_SET", Some(b"value")),
            (b"PFI_VEC_EMPTY", Some(b"")),
            (b"PFI_VEC_UNSET", None),
        ],
        hex: "c5fd4d2769fa751c8b10e40dcfc3aca6848a622a403b85758aa39b00bb6e3709",
    },
    Vector {
        argv: &[b"-U", b"perl", b"/tmp/pfi-vectors/sc\xffript.pl"],
        env: &[],
        hex: "797c53006534b2ea31bc0247a30c024001919b96a1b0c4b7f8018102b30fc472",
    },
    Vector {
        // No script (the setup failed, but the socket was made first).
        argv: &[b"-U", b"perl"],
        env: &[],
        hex: "aa85ddbf7c30db9b85dba6d254b0c6126b130346a93a857cddc28fa2d6dbd050",
    },
];

/// Made-up hosts: the first is ordinary, the second has device and inode
/// numbers whose eight bytes all differ.
fn made_up_host(n: usize) -> RefHost {
    match n {
        0 => RefHost {
            utsname: utsname([
                b"Linux",
                b"box",
                b"6.1.0-18-amd64",
                b"#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
                b"x86_64",
                b"(none)",
            ]),
            cwd: (0x801, 1234),
            root: (0x801, 2),
        },
        _ => RefHost {
            utsname: utsname([
                b"Linux",
                b"node.example.org",
                b"6.12.0",
                b"#7",
                b"aarch64",
                b"example.org",
            ]),
            cwd: (0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210),
            root: (0xffff_ffff_ffff_fffe, 1),
        },
    }
}

/// Computed by `reference_hex` (`common/identity.rs`) for each host of
/// [`made_up_host`]: `(host, vector)`.
const MADE_UP: &[(usize, Vector)] = &[
    (
        0,
        Vector {
            argv: &[b"-U", b"perl", b"/s.pl", b"x", b"y"],
            env: &[],
            hex: "7b51d93b874e02e25f6bf23566d40d9fc14abcea3d072e23c7e401bbab1427d7",
        },
    ),
    (
        1,
        Vector {
            argv: &[b"-U", b"perl", b"/s.pl", b"x", b"y"],
            env: &[],
            hex: "ebd3469a4a9292de8332bdafa201c7cf576682803077a7d76f5e2b0c77ce7ae4",
        },
    ),
    (
        0,
        Vector {
            // Our extension: interpreter arguments in the `#!` form.
            argv: &[b"-U,perl,-w,-T", b"/s.pl"],
            env: &[],
            hex: "54634127b39ee603a8275c23da86fc2fa50c267593247db739bdeed0048ab764",
        },
    ),
    (
        1,
        Vector {
            argv: &[
                b"-U",
                b"-Gone",
                b"-E",
                b"HOME",
                b"-G",
                b"two",
                b"-E",
                b"PFI_UNSET",
                b"python3",
                b"/srv/a b.py",
                b"arg",
            ],
            env: &[(b"HOME", Some(b"/home/u")), (b"PFI_UNSET", None)],
            hex: "27d09244d1b308635d3b5556eeb38f3de95e580c7b79999a73986b4c10817926",
        },
    ),
    (
        0,
        Vector {
            // -f changes nothing in the identity; no script.
            argv: &[b"-U", b"-f", b"/usr/bin/perl"],
            env: &[],
            hex: "d2d727c503b7227279f2c93e461261163429e906c841536ba2f04863ebad46b7",
        },
    ),
];

fn host_of(r: &RefHost) -> Host {
    Host {
        utsname: r.utsname.clone().try_into().expect("390 bytes"),
        cwd: DevIno {
            dev: r.cwd.0,
            ino: r.cwd.1,
        },
        root: DevIno {
            dev: r.root.0,
            ino: r.root.1,
        },
    }
}

/// The client's parse of `v`'s command line, with the `-E` values `v`
/// gives (not this process's environment).
fn command_of(v: &Vector) -> Command {
    let argv: Vec<OsString> = std::iter::once(&b"prefork-interp"[..])
        .chain(v.argv.iter().copied())
        .map(|a| OsString::from_vec(a.to_vec()))
        .collect();
    let mut cmd = match parse(&argv) {
        Ok(Parsed::Run(cmd)) => cmd,
        other => panic!("{argv:?}: {other:?}"),
    };
    for item in &mut cmd.ident_items {
        if let IdentItem::Env(name, value) = item {
            let (_, given) = v
                .env
                .iter()
                .find(|(n, _)| *n == name.as_bytes())
                .unwrap_or_else(|| panic!("no value given for -E {name:?}"));
            *value = given.map(|g| OsString::from_vec(g.to_vec()));
        }
    }
    cmd
}

/// The independent implementation's answer for `v` on `host`.
fn reference_of(host: &RefHost, v: &Vector) -> String {
    let cmd = command_of(v);
    let items: Vec<RefItem<'_>> = cmd
        .ident_items
        .iter()
        .map(|i| match i {
            IdentItem::String(s) => RefItem::G(s.as_bytes()),
            IdentItem::Env(n, value) => {
                RefItem::E(n.as_bytes(), value.as_ref().map(|v| v.as_bytes()))
            }
        })
        .collect();
    let args: Vec<&[u8]> = cmd.interpreter_args.iter().map(|a| a.as_bytes()).collect();
    reference_hex(
        host,
        &items,
        cmd.interpreter.as_bytes(),
        &args,
        cmd.script.as_ref().map(|s| s.as_bytes()),
    )
}

#[test]
#[cfg(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
))]
fn hex_identity_matches_the_c_clients_captured_vectors() {
    let host = host_of(&captured_host());
    for v in FROM_C_CLIENT {
        assert_eq!(hex_identity(&host, &command_of(v)), v.hex, "{:?}", v.argv);
    }
}

#[test]
#[cfg(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
))]
fn the_reference_implementation_matches_the_c_clients_captured_vectors() {
    let host = captured_host();
    for v in FROM_C_CLIENT {
        assert_eq!(reference_of(&host, v), v.hex, "{:?}", v.argv);
    }
}

#[test]
#[cfg(all(
    target_os = "linux",
    target_endian = "little",
    target_pointer_width = "64"
))]
fn hex_identity_matches_the_made_up_vectors() {
    for (h, v) in MADE_UP {
        let host = made_up_host(*h);
        assert_eq!(
            reference_of(&host, v),
            v.hex,
            "reference, host {h}, {:?}",
            v.argv
        );
        assert_eq!(
            hex_identity(&host_of(&host), &command_of(v)),
            v.hex,
            "host {h}, {:?}",
            v.argv
        );
    }
}

#[test]
fn hex_identity_matches_the_reference_on_any_host() {
    // Native byte order, whatever it is: the two implementations agree on
    // every vector and host.
    let hosts = [captured_host(), made_up_host(0), made_up_host(1)];
    for host in &hosts {
        for v in FROM_C_CLIENT.iter().chain(MADE_UP.iter().map(|(_, v)| v)) {
            assert_eq!(
                hex_identity(&host_of(host), &command_of(v)),
                reference_of(host, v),
                "{:?}",
                v.argv
            );
        }
    }
}

#[test]
fn every_input_changes_the_identity() {
    let base = made_up_host(0);
    let v = &MADE_UP[0].1;
    let want = reference_of(&base, v);
    let mut hosts = Vec::new();
    for i in 0..6 {
        let mut h = base.clone();
        h.utsname[i * 65 + 64] = 1; // even a byte after the field's NUL
        hosts.push(h);
    }
    let tweaks: [fn(&mut RefHost); 4] = [
        |h| h.cwd.0 += 1,
        |h| h.cwd.1 += 1,
        |h| h.root.0 += 1,
        |h| h.root.1 += 1,
    ];
    for f in tweaks {
        let mut h = base.clone();
        f(&mut h);
        hosts.push(h);
    }
    for h in &hosts {
        let got = hex_identity(&host_of(h), &command_of(v));
        assert_ne!(got, want, "{h:?}");
        assert_eq!(got, reference_of(h, v));
    }
}
