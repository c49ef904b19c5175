//! The `prefork-interp` binary: see the library's `client` module.
//!
//! `#![no_main]` keeps Rust's runtime start-up out of the way: in
//! particular it leaves SIGPIPE as the caller had it (the standard `main`
//! would ignore it), which the setup process and so the script inherit,
//! just as with the C client.
#![cfg_attr(not(test), no_main)]

/// The C entry point (under `cargo test` the test harness has its own).
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(
    _argc: std::ffi::c_int,
    _argv: *const *const std::ffi::c_char,
) -> std::ffi::c_int {
    prefork_interp::client::main()
}
