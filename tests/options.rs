//! The Rust library's option defaults are the ones docs/options.md gives
//! for all three libraries (its `text` block of `name default` lines);
//! the Python and Perl tests check theirs against the same block.

use std::time::Duration;

use prefork_interp::server::{CALLS_PER_CPU, Options};

/// `name default` pairs from the first ```text block of docs/options.md.
fn documented() -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/options.md"))
        .expect("docs/options.md");
    let block = doc
        .split("```text\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```text block in docs/options.md");
    block
        .lines()
        .filter_map(|l| {
            let (name, default) = l.split_once(' ')?;
            Some((name.to_string(), default.trim().to_string()))
        })
        .collect()
}

#[test]
fn rust_defaults_are_the_documented_ones() {
    let o = Options::new();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let doc = documented();
    assert!(doc.len() >= 10, "{doc:?}");
    for (name, default) in &doc {
        let ours: Option<String> = match name.as_str() {
            "max_servers" => {
                assert_eq!(default, "8*cpus");
                assert_eq!(CALLS_PER_CPU, 8);
                Some(if o.get_max_servers() == 8 * cpus {
                    "8*cpus".into()
                } else {
                    o.get_max_servers().to_string()
                })
            }
            "pool_size" => Some(o.get_pool_size().to_string()),
            "idle_timeout" => Some(
                o.get_idle_timeout()
                    .map_or("none".into(), |d| d.as_secs().to_string()),
            ),
            "request_timeout" => Some(o.get_request_timeout().as_secs().to_string()),
            "max_errors" => Some(o.get_max_errors().to_string()),
            "autoreload" => Some(o.get_autoreload().to_string()),
            "autoreload_extra" => Some(if o.get_autoreload_extra().is_empty() {
                "none".into()
            } else {
                format!("{:?}", o.get_autoreload_extra())
            }),
            // Rust has syslog on or off; on is the documented facility.
            "log_facility" => Some(if o.get_syslog() {
                "LOG_USER".into()
            } else {
                "none".into()
            }),
            "log_file" => Some(
                o.get_log_file()
                    .map_or("none".into(), |p| p.display().to_string()),
            ),
            // Python and Perl only: a Rust program exits as it chooses.
            "fast_exit" => None,
            other => panic!("docs/options.md names {other}, which the Rust library lacks"),
        };
        if let Some(ours) = ours {
            assert_eq!(&ours, default, "{name}");
        }
    }
}

#[test]
fn every_option_has_a_setter_with_its_documented_meaning() {
    let o = Options::new()
        .max_servers(0)
        .pool_size(0)
        .idle_timeout(None)
        .request_timeout(Duration::ZERO)
        .max_errors(1)
        .autoreload(false)
        .autoreload_extra("/etc/x.conf")
        .syslog(false)
        .log_file("/tmp/x.log");
    assert_eq!(o.get_max_servers(), 0);
    assert_eq!(o.get_pool_size(), 0);
    assert_eq!(o.get_idle_timeout(), None);
    assert_eq!(o.get_request_timeout(), Duration::ZERO);
    assert_eq!(o.get_max_errors(), 1);
    assert!(!o.get_autoreload());
    assert_eq!(
        o.get_autoreload_extra(),
        [std::path::PathBuf::from("/etc/x.conf")]
    );
    assert!(!o.get_syslog());
    assert_eq!(o.get_log_file(), Some(std::path::Path::new("/tmp/x.log")));
}
