//! `exit_with CODE [WORDS...]`: write WORDS, space-separated, and a newline
//! to stdout, then exit with CODE (0-255).
//!
//! The smallest possible prefork-interp server, used by the tests and the
//! benchmarks to measure the client and the protocol alone:
//!
//! ```text
//! cargo build --release --example exit_with
//! prefork-interp -U target/release/examples/exit_with 3 hello world   # prints, exits 3
//! target/release/examples/exit_with 3 hello world                     # the same, standalone
//! ```
//!
//! Words need not be UTF-8: they are written back byte for byte.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;

use prefork_interp::server::{self, Options};

fn main() {
    let call = match server::initialisation_complete(&Options::new()) {
        Ok(call) => call,
        Err(e) => {
            eprintln!("exit_with: {e}");
            std::process::exit(127);
        }
    };
    let mut args = call.args().iter();
    let Some(code) = args
        .next()
        .and_then(|c| c.to_str())
        .and_then(|c| c.parse::<u8>().ok())
    else {
        eprintln!("usage: exit_with CODE [WORDS...]   (CODE is 0-255)");
        std::process::exit(127);
    };
    let mut line = Vec::new();
    for (i, word) in args.enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        line.extend_from_slice(word.as_bytes());
    }
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&line).and_then(|()| out.flush()) {
        // A reader that went away is the caller's business, not an error.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("exit_with: write to stdout: {e}");
            std::process::exit(127);
        }
    }
    std::process::exit(code.into());
}
