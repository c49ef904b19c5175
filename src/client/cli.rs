//! The command line (SPEC §2), compatible with chiark-utils 7.0.0:
//!
//! ```text
//! prefork-interp  [<option> ..] <interpreter>  [<script> [<args> ...]]
//! prefork-interp  [<option>,..],<interpreter>   <script> [<args> ...]
//! prefork-interp '[<option> ..] <interpreter>'  <script> [<args> ...]
//! ```
//!
//! The last two forms are what the kernel passes for a `#!` line: all the
//! words of the line arrive as one argument. If the first argument starts
//! with `-` and contains a space or a comma, it is split on spaces and
//! commas into options, the interpreter, and (our extension) the
//! interpreter's own arguments: `#!/usr/bin/prefork-interp -U,perl,-w`
//! runs `perl -w SCRIPT`. Also our extension: separate options may come
//! before the combined argument, so `prefork-interp --kill -U,perl,-w
//! SCRIPT` stops the server that `#!` line starts.
//!
//! Options are parsed like upstream's `myopt`: short options may be bundled
//! (`-Uf`), a short option's value may be attached (`-EVAR`, `-E=VAR`) or be
//! the next word, and `--` ends the options.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::DevIno;

/// What to do with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Use the existing server, starting one if needed.
    Normal,
    /// `-f`: always start a fresh server (the old one quits).
    Fresh,
    /// `--kill`: stop any existing server and run nothing.
    Kill,
    /// `--list`, while parsing only: see [`Parsed::List`].
    List,
    /// `--kill-all`, while parsing only: see [`Parsed::KillAll`].
    KillAll,
}

/// A `-G` or `-E` option, which adds to the identity in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentItem {
    /// `-G STRING`.
    String(OsString),
    /// `-E VAR`: the variable's name and its value now (None if unset).
    Env(OsString, Option<OsString>),
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `-U` was given (required: it names the only argument mediation).
    pub unlaundered: bool,
    /// `-f`, `--kill` or neither.
    pub mode: Mode,
    /// `-G`/`-E` items, in order.
    pub ident_items: Vec<IdentItem>,
    /// `-g IDENT`: use this instead of the hash.
    pub ident: Option<OsString>,
    /// The interpreter, as given (looked up in `PATH` if it has no `/`).
    pub interpreter: OsString,
    /// The interpreter's own arguments (combined form only).
    pub interpreter_args: Vec<OsString>,
    /// The script, if any.
    pub script: Option<OsString>,
    /// The script's arguments.
    pub args: Vec<OsString>,
    /// `-T`: no pseudo-terminal for the call, even on a terminal
    /// (protocol.md §9; also [`NO_PTY_VAR`]). Not part of the identity.
    pub no_pty: bool,
}

/// Set (to anything but the empty string), this environment variable
/// does what `-T` does.
pub const NO_PTY_VAR: &str = "PREFORK_INTERP_NO_PTY";

/// The result of parsing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// `--help`: print [`USAGE`] and exit 0.
    Help,
    /// `--version` or `-V`: print [`version`] and exit 0.
    Version,
    /// `--list [--json]`: show this user's servers (`client::servers`).
    List {
        /// As a JSON array, for tools.
        json: bool,
    },
    /// `--kill-all`: stop every server of this user.
    KillAll,
    /// Run (or kill) a server.
    Run(Command),
}

/// The `--help` text.
pub const USAGE: &str = "\
usage: #!/usr/local/bin/prefork-interp [<options>],<interpreter>[,<interpreter-arg>...]
       prefork-interp [<options>] <interpreter> [<script> [<args>...]]
       prefork-interp '[<options>] <interpreter>' <script> [<args>...]

Runs <script> under <interpreter> through a server that the script starts
once (when it calls its library's initialisation_complete()) and that then
serves every call by a fresh fork.

options:
  -U          unlaundered argument mediation (required): the script gets all
              arguments and environment variables
  -f          start a fresh server; the old one quits
  --kill      stop any existing server for this script; run nothing
  --list      show this user's servers: pid, calls, memory, script...
              (--list --json: the same as JSON); takes no other argument
  --kill-all  stop every server of this user; takes no other argument
  -E VAR      the value (or absence) of environment variable VAR is part of
              the server's identity
  -G STRING   STRING is part of the server's identity
  -g IDENT    use IDENT as the identity instead of the hash
  -T          no pseudo-terminal: a served call on a terminal gets the
              caller's terminal fds as they are, not as its controlling
              terminal (also PREFORK_INTERP_NO_PTY=1)
  --help      print this message and exit
  -V, --version
              print the version and exit

environment:
  PREFORK_INTERP_RUN_DIR   use this directory for sockets and locks
  PREFORK_INTERP_DEBUG     trace what the client does on stderr
  PREFORK_INTERP_NO_PTY    set and non-empty: as -T
";

/// The `--version` line (without its newline).
pub fn version() -> String {
    format!("prefork-interp {}", env!("CARGO_PKG_VERSION"))
}

/// Parse `argv` (including `argv[0]`).
pub fn parse(argv: &[OsString]) -> Result<Parsed> {
    let rest = argv.get(1..).unwrap_or_default();
    // A `#!` line with DOS line endings: the kernel keeps the `\r`.
    if let Some(first) = rest
        .first()
        .filter(|w| w.as_bytes().starts_with(b"-") && ends_in_cr(w))
    {
        let last = split_combined(first).pop().unwrap_or_default();
        let what = if last.as_bytes().starts_with(b"-") {
            "#! line"
        } else {
            "interpreter name"
        };
        return Err(Error::msg(format!("{what} {CR_HINT}")));
    }
    let mut cmd = Command {
        unlaundered: false,
        mode: Mode::Normal,
        ident_items: Vec::new(),
        ident: None,
        interpreter: OsString::new(),
        interpreter_args: Vec::new(),
        script: None,
        args: Vec::new(),
        no_pty: false,
    };

    // Separate options first; they stop at a combined argument, which may
    // follow them (`--kill -U,perl,-w SCRIPT`) or come first (`#!` lines).
    let mut words = rest;
    let mut json = false;
    if let Some(info) = parse_options(&mut words, &mut cmd, &mut json)? {
        return Ok(info);
    }
    if json && !matches!(cmd.mode, Mode::List) {
        return Err(Error::usage("--json goes with --list"));
    }
    match cmd.mode {
        Mode::List | Mode::KillAll if !words.is_empty() => {
            return Err(Error::usage(format!(
                "--list and --kill-all take no other argument (got {:?})",
                words[0]
            )));
        }
        Mode::List => return Ok(Parsed::List { json }),
        Mode::KillAll => return Ok(Parsed::KillAll),
        _ => {}
    }
    if let Some((first, after)) = words.split_first().filter(|(w, _)| is_combined(w)) {
        let split = split_combined(first);
        let mut split = split.as_slice();
        if let Some(info) = parse_options(&mut split, &mut cmd, &mut json)? {
            return Ok(info);
        }
        if json || matches!(cmd.mode, Mode::List | Mode::KillAll) {
            return Err(Error::usage(
                "--list, --json and --kill-all are not for a #! line",
            ));
        }
        let (interp, interp_args) = split
            .split_first()
            .ok_or_else(|| Error::usage("combined argument lacks <interpreter>"))?;
        cmd.interpreter = interp.clone();
        cmd.interpreter_args = interp_args.to_vec();
        let (script, args) = after.split_first().ok_or_else(|| {
            Error::usage("no script argument (expected after combined #! options)")
        })?;
        cmd.script = Some(script.clone());
        cmd.args = args.to_vec();
    } else {
        let (interp, after) = words
            .split_first()
            .ok_or_else(|| Error::usage("need interpreter argument"))?;
        cmd.interpreter = interp.clone();
        if let Some((script, args)) = after.split_first() {
            cmd.script = Some(script.clone());
            cmd.args = args.to_vec();
        }
    }

    if !cmd.unlaundered {
        return Err(Error::usage(
            "need -U (specifying unlaundered argument handling)",
        ));
    }
    if cmd.interpreter.is_empty() {
        return Err(Error::usage("empty interpreter name"));
    }
    if ends_in_cr(&cmd.interpreter) {
        return Err(Error::msg(format!("interpreter name {CR_HINT}")));
    }
    Ok(Parsed::Run(cmd))
}

/// What to say about a word that ends in a carriage return.
const CR_HINT: &str = "ends in a carriage return: the script has DOS line endings \
                       (convert it with dos2unix)";

fn ends_in_cr(word: &OsStr) -> bool {
    word.as_bytes().last() == Some(&b'\r')
}

/// Before starting a server: make sure the interpreter is not itself a
/// `prefork-interp` script, which is what `#!/usr/bin/prefork-interp -U`
/// (no interpreter named) amounts to: the kernel passes the script as the
/// interpreter, and running it would start another client for the same
/// server, which waits for our lock for ever.
pub fn check_interpreter(cmd: &Command) -> Result<()> {
    let interp = Path::new(&cmd.interpreter);
    if !cmd.interpreter.as_bytes().contains(&b'/') {
        return Ok(());
    }
    let Ok(mut file) = std::fs::File::open(interp) else {
        // Missing or unreadable: the exec will say why.
        return Ok(());
    };
    let mut head = [0u8; 256];
    let n = std::io::Read::read(&mut file, &mut head).unwrap_or(0);
    let Some(line) = head[..n].strip_prefix(b"#!") else {
        return Ok(());
    };
    let line = line.split(|&b| b == b'\n').next().unwrap_or_default();
    let Some(program) = line
        .split(|&b| b == b' ' || b == b'\t')
        .find(|w| !w.is_empty())
    else {
        return Ok(());
    };
    let program = Path::new(OsStr::from_bytes(program));
    let ours = std::fs::metadata("/proc/self/exe").ok();
    let same_file = match (std::fs::metadata(program), ours) {
        (Ok(a), Some(b)) => DevIno::of(&a) == DevIno::of(&b),
        _ => false,
    };
    if same_file || program.file_name() == Some(OsStr::new("prefork-interp")) {
        return Err(Error::msg(format!(
            "{} is a prefork-interp script, not an interpreter: its #! line names \
             no interpreter (write it as #!{} -U,python3, with your interpreter)",
            interp.display(),
            program.display()
        )));
    }
    Ok(())
}

/// Is this the single combined argument of a `#!` line?
fn is_combined(arg: &OsStr) -> bool {
    let b = arg.as_bytes();
    b.first() == Some(&b'-') && b.iter().any(|&c| c == b' ' || c == b',')
}

/// Split a combined argument on spaces and commas, dropping empty words.
fn split_combined(arg: &OsStr) -> Vec<OsString> {
    arg.as_bytes()
        .split(|&c| c == b' ' || c == b',')
        .filter(|w| !w.is_empty())
        .map(|w| OsString::from_vec(w.to_vec()))
        .collect()
}

/// Consume leading options from `words`. Returns `Help` or `Version` for
/// the options that stop parsing.
fn parse_options(
    words: &mut &[OsString],
    cmd: &mut Command,
    json: &mut bool,
) -> Result<Option<Parsed>> {
    while let Some((word, rest)) = words.split_first() {
        let w = word.as_bytes();
        if w.first() != Some(&b'-') || w.len() == 1 || is_combined(word) {
            break;
        }
        *words = rest;
        if w == b"--" {
            break;
        }
        if let Some(long) = w.strip_prefix(b"--") {
            match long {
                b"help" => return Ok(Some(Parsed::Help)),
                b"version" => return Ok(Some(Parsed::Version)),
                b"kill" => cmd.mode = Mode::Kill,
                b"list" => cmd.mode = Mode::List,
                b"json" => *json = true,
                b"kill-all" => cmd.mode = Mode::KillAll,
                _ => {
                    let name = String::from_utf8_lossy(long);
                    if let Some((opt, _)) = name.split_once('=')
                        && matches!(
                            opt,
                            "help" | "version" | "kill" | "list" | "json" | "kill-all"
                        )
                    {
                        return Err(Error::usage(format!(
                            "--{opt} option does not take a value"
                        )));
                    }
                    return Err(Error::usage(format!("unknown option --{name}")));
                }
            }
            continue;
        }
        let mut i = 1;
        while i < w.len() {
            let c = w[i];
            i += 1;
            match c {
                b'U' => cmd.unlaundered = true,
                b'f' => cmd.mode = Mode::Fresh,
                b'T' => cmd.no_pty = true,
                b'V' => return Ok(Some(Parsed::Version)),
                b'g' | b'G' | b'E' => {
                    let value = if i < w.len() {
                        let v = &w[i..];
                        i = w.len();
                        OsString::from_vec(v.strip_prefix(b"=").unwrap_or(v).to_vec())
                    } else {
                        let (v, rest) = words.split_first().ok_or_else(|| {
                            Error::usage(format!("-{} option takes a value", c as char))
                        })?;
                        *words = rest;
                        v.clone()
                    };
                    match c {
                        b'g' => cmd.ident = Some(value),
                        b'G' => cmd.ident_items.push(IdentItem::String(value)),
                        _ => {
                            let val = getenv(&value);
                            cmd.ident_items.push(IdentItem::Env(value, val));
                        }
                    }
                }
                _ => {
                    if c == b'=' && i >= 2 && matches!(w[i - 2], b'U' | b'f' | b'T') {
                        return Err(Error::usage(format!(
                            "-{} option does not take a value",
                            w[i - 2] as char
                        )));
                    }
                    return Err(Error::usage(format!(
                        "unknown option -{}",
                        String::from_utf8_lossy(&[c])
                    )));
                }
            }
        }
    }
    Ok(None)
}

/// `getenv(3)`: the value of `name` now, if set. A name that cannot be a
/// variable name (empty, or with `=`) is never set.
fn getenv(name: &OsStr) -> Option<OsString> {
    let n = name.as_bytes();
    if n.is_empty() || n.contains(&b'=') || n.contains(&0) {
        return None;
    }
    std::env::var_os(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(words: &[&str]) -> Vec<OsString> {
        std::iter::once("prefork-interp")
            .chain(words.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn run(words: &[&str]) -> Command {
        match parse(&argv(words)).unwrap() {
            Parsed::Run(c) => c,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn err(words: &[&str]) -> String {
        parse(&argv(words)).unwrap_err().to_string()
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn separate_form() {
        let c = run(&["-U", "python3", "/s.py", "a", "-b"]);
        assert!(c.unlaundered);
        assert_eq!(c.mode, Mode::Normal);
        assert_eq!(c.interpreter, "python3");
        assert!(c.interpreter_args.is_empty());
        assert_eq!(c.script.as_deref(), Some(OsStr::new("/s.py")));
        assert_eq!(c.args, os(&["a", "-b"]));
    }

    #[test]
    fn separate_form_without_script() {
        let c = run(&["-U", "perl"]);
        assert_eq!(c.interpreter, "perl");
        assert_eq!(c.script, None);
        assert!(c.args.is_empty());
    }

    #[test]
    fn dash_t_turns_the_pty_off_in_either_form() {
        assert!(!run(&["-U", "python3", "/s.py"]).no_pty);
        assert!(run(&["-UT", "python3", "/s.py"]).no_pty);
        assert!(run(&["-U,-T,python3", "/s.py"]).no_pty);
        assert!(run(&["-T", "-U,python3", "/s.py"]).no_pty);
        assert!(err(&["-T=1", "-U", "python3"]).contains("-T option does not take a value"));
    }

    #[test]
    fn comma_combined_form() {
        let c = run(&["-U,python3", "/s.py", "x"]);
        assert_eq!(c.interpreter, "python3");
        assert_eq!(c.script.as_deref(), Some(OsStr::new("/s.py")));
        assert_eq!(c.args, os(&["x"]));
    }

    #[test]
    fn space_combined_form() {
        let c = run(&["-U -f perl", "/s.pl"]);
        assert_eq!(c.mode, Mode::Fresh);
        assert_eq!(c.interpreter, "perl");
    }

    #[test]
    fn combined_form_with_interpreter_args() {
        let c = run(&["-U,perl,-w", "/s.pl", "a"]);
        assert_eq!(c.interpreter, "perl");
        assert_eq!(c.interpreter_args, os(&["-w"]));
        let c = run(&["-U python3 -X dev", "/s.py"]);
        assert_eq!(c.interpreter, "python3");
        assert_eq!(c.interpreter_args, os(&["-X", "dev"]));
    }

    #[test]
    fn combined_form_options_with_values() {
        let c = run(&["-U,-E,LANG,-GHELLO,-g=myid,python3", "/s.py"]);
        assert_eq!(c.ident.as_deref(), Some(OsStr::new("myid")));
        assert_eq!(c.ident_items[1], IdentItem::String("HELLO".into()));
        assert!(matches!(&c.ident_items[0], IdentItem::Env(n, _) if n == "LANG"));
    }

    #[test]
    fn separate_options_before_a_combined_argument() {
        let c = run(&["--kill", "-U,perl,-w", "/s.pl"]);
        assert_eq!(c.mode, Mode::Kill);
        assert_eq!(c.interpreter, "perl");
        assert_eq!(c.interpreter_args, os(&["-w"]));
        assert_eq!(c.script.as_deref(), Some(OsStr::new("/s.pl")));
        let c = run(&["-f", "-G", "a,b", "-U perl", "/s.pl", "x"]);
        assert_eq!(c.mode, Mode::Fresh);
        assert_eq!(c.ident_items, vec![IdentItem::String("a,b".into())]);
        assert_eq!(c.args, os(&["x"]));
    }

    #[test]
    fn combined_form_needs_script_and_interpreter() {
        assert!(err(&["-U,python3"]).contains("no script argument"));
        assert!(err(&["-U,-f", "/s.py"]).contains("lacks <interpreter>"));
    }

    #[test]
    fn dash_dash_ends_options() {
        let c = run(&["-U", "--", "-weird-interp", "s"]);
        assert_eq!(c.interpreter, "-weird-interp");
    }

    #[test]
    fn bundled_and_attached_options() {
        let c = run(&["-UfGabc", "-E", "HOME", "--kill", "sh", "s"]);
        assert_eq!(c.mode, Mode::Kill);
        assert_eq!(c.ident_items[0], IdentItem::String("abc".into()));
        assert_eq!(
            c.ident_items[1],
            IdentItem::Env("HOME".into(), std::env::var_os("HOME"))
        );
    }

    #[test]
    fn env_item_records_absence() {
        let c = run(&["-U", "-E", "PREFORK_INTERP_TEST_SURELY_UNSET", "sh"]);
        assert_eq!(
            c.ident_items,
            vec![IdentItem::Env(
                "PREFORK_INTERP_TEST_SURELY_UNSET".into(),
                None
            )]
        );
        let c = run(&["-U", "-E", "A=B", "sh"]);
        assert_eq!(c.ident_items, vec![IdentItem::Env("A=B".into(), None)]);
    }

    #[test]
    fn help_wins_wherever_it_is() {
        assert_eq!(parse(&argv(&["--help"])).unwrap(), Parsed::Help);
        assert_eq!(parse(&argv(&["-U", "--help", "-Z"])).unwrap(), Parsed::Help);
        assert_eq!(parse(&argv(&["-U,--help,x", "s"])).unwrap(), Parsed::Help);
    }

    #[test]
    fn version_wins_wherever_it_is() {
        for words in [
            &["--version"][..],
            &["-V"],
            &["-U", "-V", "perl"],
            &["-UV"],
            &["-U,-V,python3", "s"],
            &["--version", "--help"],
        ] {
            assert_eq!(parse(&argv(words)).unwrap(), Parsed::Version, "{words:?}");
        }
        assert!(err(&["--version=1"]).contains("does not take a value"));
        assert_eq!(
            version(),
            format!("prefork-interp {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn dos_line_endings_are_named() {
        let e = err(&["-U,python3\r", "s.py"]);
        assert!(
            e.contains("interpreter name ends in a carriage return"),
            "{e}"
        );
        let e = err(&["-U\r", "s.py"]);
        assert!(e.contains("#! line ends in a carriage return"), "{e}");
        let e = err(&["-U,perl,-w\r", "s.pl"]);
        assert!(e.contains("#! line ends in a carriage return"), "{e}");
    }

    #[test]
    fn a_prefork_interp_script_is_not_an_interpreter() {
        let dir = std::env::temp_dir().join(format!("pfi-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("n.py");
        std::fs::write(&script, "#!/usr/bin/prefork-interp -U\nprint(1)\n").unwrap();
        let s = script.to_str().unwrap();
        let e = check_interpreter(&run(&["-U", s])).unwrap_err().to_string();
        assert!(e.contains("names no interpreter"), "{e}");
        std::fs::write(&script, "#!/bin/sh\necho\n").unwrap();
        check_interpreter(&run(&["-U", s])).unwrap();
        check_interpreter(&run(&["-U", "python3", s])).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors() {
        assert!(err(&[]).contains("need interpreter argument"));
        assert!(err(&["-U"]).contains("need interpreter argument"));
        assert!(err(&["python3", "s"]).contains("need -U"));
        assert!(err(&["-Z", "sh"]).contains("unknown option -Z"));
        assert!(err(&["--frob", "sh"]).contains("unknown option --frob"));
        assert!(err(&["--kill=yes", "sh"]).contains("does not take a value"));
        assert!(err(&["-U=1", "sh"]).contains("does not take a value"));
        assert!(err(&["-U", "-E"]).contains("-E option takes a value"));
        assert!(err(&["-U", "-g"]).contains("-g option takes a value"));
        assert!(err(&["-U", ""]).contains("empty interpreter"));
        for e in [err(&[]), err(&["-Z", "sh"])] {
            assert!(!e.contains('\n'), "{e}");
        }
    }
}
