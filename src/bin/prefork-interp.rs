//! The `prefork-interp` binary: see the library's `client` module.
//!
//! `#![no_main]` keeps Rust's runtime start-up out of the way: in
//! particular it leaves SIGPIPE as the caller had it (the standard `main`
//! would ignore it), which the setup process and so the script inherit,
//! just as with the C client.  The arguments are taken from `main`'s own:
//! without Rust's start-up, `std::env::args_os` has them only where glibc
//! hands them to it, not with musl.
#![cfg_attr(not(test), no_main)]

/// The C entry point (under `cargo test` the test harness has its own).
///
/// # Safety
///
/// Called by the C runtime only, with its `argc` and `argv`.
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn main(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    use std::os::unix::ffi::OsStrExt;
    let count = usize::try_from(argc).unwrap_or(0);
    let args = (0..count)
        .map(|i| {
            // SAFETY: the C runtime calls main with argv[0..argc], each a
            // NUL-terminated string that lives as long as the process.
            let arg = unsafe { std::ffi::CStr::from_ptr(*argv.add(i)) };
            std::ffi::OsStr::from_bytes(arg.to_bytes()).to_os_string()
        })
        .collect();
    prefork_interp::client::main(args)
}
