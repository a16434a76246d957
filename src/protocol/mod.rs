//! The line protocol spoken over TCP and serial: one command per line in, one JSON object
//! per line out (JSON Lines).
//!
//! Every command is defined once in [`COMMANDS`]: that table drives parsing, the `HELP`
//! reply, and the test that checks docs/protocol.md. Parsing ([`parse`]) never panics and
//! never allocates more than the line; execution lives in [`execute`].

mod connection;
mod execute;

pub use connection::{reply_line, serve_connection, ConnectionLimits, LineError};
pub use execute::{execute, Session};

use std::path::Path;

use serde_json::{json, Value};

use crate::report::{Age, Sex};

/// A command's name, syntax and one-line summary; the single source of truth.
#[derive(Debug, Clone, Copy)]
pub struct CommandSpec {
    pub name: &'static str,
    pub syntax: &'static str,
    pub summary: &'static str,
}

/// Every command the appliance understands.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec { name: "PING", syntax: "PING", summary: "liveness check; replies pong" },
    CommandSpec {
        name: "*IDN?",
        syntax: "*IDN?",
        summary: "identity: vendor, model, serial, firmware and model versions (same as VERSION)",
    },
    CommandSpec { name: "VERSION", syntax: "VERSION", summary: "same reply as *IDN?" },
    CommandSpec {
        name: "STATUS",
        syntax: "STATUS",
        summary: "state, uptime, queue length, last result id, source/display/store health",
    },
    CommandSpec {
        name: "ANALYZE",
        syntax: "ANALYZE [sex=male|female] [age=<months|10y4m>] [height=<cm>] [path=<file>|source=camera] [id=<exam id>]",
        summary:
            "analyse a radiograph file (inside an allowed folder) or, with source=camera, a new \
             camera capture; replies with the stored result. sex= is needed unless the file \
             is a DICOM with PatientSex",
    },
    CommandSpec { name: "RESULT", syntax: "RESULT id=<n>", summary: "one stored result by id" },
    CommandSpec {
        name: "HISTORY",
        syntax: "HISTORY [limit=<n>] [id=<exam id>]",
        summary: "newest stored results first (default 10, at most 100); with id=, only that exam's",
    },
    CommandSpec {
        name: "CAPTURE",
        syntax: "CAPTURE",
        summary: "grab a camera frame and save it as a PNG without analysing; replies with its path",
    },
    CommandSpec {
        name: "AUTH",
        syntax: "AUTH token=<token>",
        summary: "authenticate; required first on a TCP port bound to a non-loopback address",
    },
    CommandSpec { name: "HELP", syntax: "HELP", summary: "this list of commands" },
];

/// Largest `HISTORY limit=`.
pub const MAX_HISTORY: usize = 100;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Ping,
    Identify,
    Status,
    Analyze(AnalyzeArgs),
    Result {
        id: i64,
    },
    /// `exam_id`: only the results stored with that exam id (`id=` of ANALYZE, or the
    /// file's AccessionNumber).
    History {
        limit: usize,
        exam_id: Option<String>,
    },
    Capture,
    Auth {
        token: String,
    },
    Help,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeArgs {
    /// Needed unless the file says it (DICOM PatientSex); always for a camera capture.
    pub sex: Option<Sex>,
    pub age: Option<Age>,
    /// Standing height in cm (adult height prediction).
    pub height_cm: Option<f64>,
    pub path: Option<String>,
    pub exam_id: Option<String>,
}

/// A protocol-level failure with a stable, machine-readable code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub code: &'static str,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        ProtocolError { code, message: message.into() }
    }

    /// The reply line for this error.
    pub fn to_reply(&self) -> Value {
        json!({"ok": false, "error": {"code": self.code, "message": self.message}})
    }
}

/// Stable error codes (documented in docs/protocol.md).
pub mod codes {
    pub const EMPTY: &str = "empty_line";
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    pub const BAD_ARGUMENT: &str = "bad_argument";
    pub const MISSING_ARGUMENT: &str = "missing_argument";
    pub const LINE_TOO_LONG: &str = "line_too_long";
    pub const NOT_UTF8: &str = "not_utf8";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const NOT_FOUND: &str = "not_found";
    pub const PATH_NOT_ALLOWED: &str = "path_not_allowed";
    pub const ANALYSIS_FAILED: &str = "analysis_failed";
    pub const STORE_FAILED: &str = "store_failed";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const CAPTURE_FAILED: &str = "capture_failed";
}

/// Parses one line (without its newline).
///
/// # Errors
/// [`ProtocolError`] with `unknown_command`, `bad_argument` or `missing_argument`.
pub fn parse(line: &str) -> Result<Command, ProtocolError> {
    let line = line.trim();
    let mut words = line.split_whitespace();
    let Some(name) = words.next() else {
        return Err(ProtocolError::new(codes::EMPTY, "empty line; send HELP for the commands"));
    };
    let upper = name.to_ascii_uppercase();
    // The name first: a mistyped command must say so, not complain about its arguments.
    if !COMMANDS.iter().any(|c| c.name == upper) {
        return Err(unknown(name));
    }
    let mut args = Args::parse(words)?;
    let cmd = match upper.as_str() {
        "PING" => Command::Ping,
        "*IDN?" | "VERSION" => Command::Identify,
        "STATUS" => Command::Status,
        "HELP" => Command::Help,
        "CAPTURE" => Command::Capture,
        "ANALYZE" => {
            let sex = match args.take("sex") {
                Some(s) => Some(s.parse::<Sex>().map_err(|e| bad("sex", &e.to_string()))?),
                None => None,
            };
            let age = match args.take("age") {
                Some(a) => Some(a.parse::<Age>().map_err(|e| bad("age", &e.to_string()))?),
                None => None,
            };
            let height_cm = match args.take("height") {
                Some(h) => Some(
                    crate::clinical::parse_height_cm(&h)
                        .map_err(|e| bad("height", &e.to_string()))?,
                ),
                None => None,
            };
            let exam_id = args.exam_id()?;
            let path = args.take("path");
            if let Some(p) = &path {
                // Relative to what? The service's working directory is nobody's business.
                if !Path::new(p).is_absolute() {
                    return Err(bad(
                        "path",
                        "must be an absolute path, e.g. path=/var/lib/boneage/requests/hand.png",
                    ));
                }
            }
            if let Some(source) = args.take("source") {
                if !source.eq_ignore_ascii_case("camera") || path.is_some() {
                    return Err(bad("source", "use source=camera, or path=<file> alone"));
                }
                if sex.is_none() {
                    // A camera frame carries no patient data.
                    return Err(ProtocolError::new(
                        codes::MISSING_ARGUMENT,
                        "missing sex=<male or female>: a camera capture carries no patient data",
                    ));
                }
            } else if path.is_none() {
                return Err(ProtocolError::new(
                    codes::MISSING_ARGUMENT,
                    "ANALYZE needs path=<file> or source=camera",
                ));
            }
            Command::Analyze(AnalyzeArgs { sex, age, height_cm, path, exam_id })
        }
        "RESULT" => {
            let id = args.required("id", "a result id")?;
            let id = id
                .parse::<i64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad("id", "must be a positive integer"))?;
            Command::Result { id }
        }
        "HISTORY" => {
            let limit = match args.take("limit") {
                None => 10,
                Some(l) => l
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_HISTORY).contains(n))
                    .ok_or_else(|| bad("limit", &format!("must be 1 to {MAX_HISTORY}")))?,
            };
            Command::History { limit, exam_id: args.exam_id()? }
        }
        "AUTH" => Command::Auth { token: args.required("token", "the configured token")? },
        _ => return Err(unknown(name)),
    };
    args.finish()?;
    Ok(cmd)
}

fn unknown(name: &str) -> ProtocolError {
    let shown: String = name.chars().take(32).collect();
    ProtocolError::new(
        codes::UNKNOWN_COMMAND,
        format!("unknown command {shown:?}; send HELP for the list"),
    )
}

fn bad(key: &str, why: &str) -> ProtocolError {
    ProtocolError::new(codes::BAD_ARGUMENT, format!("{key}: {why}"))
}

/// `key=value` arguments; keys are case-insensitive, each may appear once.
struct Args {
    pairs: Vec<(String, String)>,
}

impl Args {
    fn parse<'a>(words: impl Iterator<Item = &'a str>) -> Result<Args, ProtocolError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                let shown: String = w.chars().take(32).collect();
                // After a key=value word, a bare word is most likely the rest of a value
                // with a space in it (`path=/in/hand left.png`): name that key.
                if let Some((key, _)) = pairs.last() {
                    let fix = if key == "path" {
                        "rename the file without spaces"
                    } else {
                        "send the value without spaces"
                    };
                    return Err(bad(
                        key,
                        &format!("values cannot contain spaces (found '{shown}' after it); {fix}"),
                    ));
                }
                return Err(bad(&shown, "arguments are key=value"));
            };
            let k = k.to_ascii_lowercase();
            if k.is_empty() || v.is_empty() {
                return Err(bad(w, "arguments are key=value with a non-empty key and value"));
            }
            if pairs.iter().any(|(p, _)| *p == k) {
                return Err(bad(&k, "given twice"));
            }
            pairs.push((k, v.to_string()));
        }
        Ok(Args { pairs })
    }

    /// `id=`, an exam id as ANALYZE stores it and HISTORY looks it up.
    fn exam_id(&mut self) -> Result<Option<String>, ProtocolError> {
        self.take("id")
            .map(|id| crate::report::parse_exam_id(&id).map_err(|e| bad("id", &e.to_string())))
            .transpose()
    }

    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    fn required(&mut self, key: &str, what: &str) -> Result<String, ProtocolError> {
        self.take(key).ok_or_else(|| {
            ProtocolError::new(codes::MISSING_ARGUMENT, format!("missing {key}=<{what}>"))
        })
    }

    /// Leftover arguments are errors: a typo must not be silently ignored.
    fn finish(self) -> Result<(), ProtocolError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(bad(k, "unknown argument for this command")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(parse("ping"), Ok(Command::Ping));
        assert_eq!(parse("*idn?"), Ok(Command::Identify));
        assert_eq!(parse("VERSION"), Ok(Command::Identify));
        assert_eq!(parse(" status "), Ok(Command::Status));
        assert_eq!(parse("HELP"), Ok(Command::Help));
        assert_eq!(parse("capture"), Ok(Command::Capture));
        assert_eq!(parse("RESULT id=7"), Ok(Command::Result { id: 7 }));
        assert_eq!(parse("history"), Ok(Command::History { limit: 10, exam_id: None }));
        assert_eq!(parse("HISTORY LIMIT=3"), Ok(Command::History { limit: 3, exam_id: None }));
        assert_eq!(
            parse("HISTORY id=A-1 limit=1"),
            Ok(Command::History { limit: 1, exam_id: Some("A-1".into()) })
        );
        assert_eq!(parse("AUTH token=abc"), Ok(Command::Auth { token: "abc".into() }));
        let a = parse("ANALYZE sex=F age=10y4m path=/in/x.png id=A-1").unwrap();
        assert_eq!(
            a,
            Command::Analyze(AnalyzeArgs {
                sex: Some(Sex::Female),
                age: Some("124".parse().unwrap()),
                height_cm: None,
                path: Some("/in/x.png".into()),
                exam_id: Some("A-1".into()),
            })
        );
    }

    #[test]
    fn analyze_height() {
        match parse("ANALYZE sex=m height=142.5 path=/a").unwrap() {
            Command::Analyze(a) => assert_eq!(a.height_cm, Some(142.5)),
            other => panic!("{other:?}"),
        }
        assert_eq!(parse("ANALYZE sex=m height=12 path=/a").unwrap_err().code, codes::BAD_ARGUMENT);
        assert_eq!(
            parse("ANALYZE sex=m height=tall path=/a").unwrap_err().code,
            codes::BAD_ARGUMENT
        );
    }

    #[test]
    fn errors_have_stable_codes() {
        let code = |l: &str| parse(l).unwrap_err().code;
        assert_eq!(code(""), codes::EMPTY);
        assert_eq!(code("FLY"), codes::UNKNOWN_COMMAND);
        // A mistyped name is named as such, whatever follows it.
        assert_eq!(code("HISTROY 5"), codes::UNKNOWN_COMMAND);
        assert_eq!(code("STAUTS now"), codes::UNKNOWN_COMMAND);
        assert_eq!(code("HISTORY 5"), codes::BAD_ARGUMENT);
        for spec in COMMANDS {
            let line = format!("{} x=1 y", spec.name);
            assert_ne!(code(&line), codes::UNKNOWN_COMMAND, "{line}");
        }
        // Without sex=: the file may say it (DICOM); a camera frame never does.
        assert!(matches!(parse("ANALYZE path=/x.dcm"), Ok(Command::Analyze(a)) if a.sex.is_none()));
        assert_eq!(code("ANALYZE source=camera"), codes::MISSING_ARGUMENT);
        assert_eq!(code("ANALYZE sex=m path=x.png"), codes::BAD_ARGUMENT);
        assert_eq!(code("ANALYZE sex=m path=../in/x.png"), codes::BAD_ARGUMENT);
        assert_eq!(code("ANALYZE sex=x path=/x.png"), codes::BAD_ARGUMENT);
        assert_eq!(code("ANALYZE sex=m"), codes::MISSING_ARGUMENT);
        assert_eq!(code("ANALYZE sex=m path=/a sex=f"), codes::BAD_ARGUMENT);
        assert_eq!(code("ANALYZE sex=m path=/a colour=red"), codes::BAD_ARGUMENT);
        assert_eq!(code("RESULT id=-1"), codes::BAD_ARGUMENT);
        assert_eq!(code("RESULT"), codes::MISSING_ARGUMENT);
        assert_eq!(code("HISTORY limit=100000"), codes::BAD_ARGUMENT);
        assert_eq!(code("PING extra"), codes::BAD_ARGUMENT);
        assert_eq!(code("PING a=b"), codes::BAD_ARGUMENT);
    }

    #[test]
    fn a_space_in_a_value_names_the_key_and_the_fix() {
        let e = parse("ANALYZE sex=f path=/x/hand left.png").unwrap_err();
        assert_eq!(e.code, codes::BAD_ARGUMENT);
        assert_eq!(
            e.message,
            "path: values cannot contain spaces (found 'left.png' after it); rename the file \
             without spaces"
        );
        // Any key: the one before the stray word is named.
        let e = parse("ANALYZE sex=f path=/x/a.png id=EX 7").unwrap_err();
        assert_eq!(e.code, codes::BAD_ARGUMENT);
        assert!(e.message.starts_with("id: values cannot contain spaces (found '7'"), "{e:?}");
        assert!(e.message.contains("send the value without spaces"), "{e:?}");
        // A bare word with no key=value before it is still just "not key=value".
        let e = parse("HISTORY 5").unwrap_err();
        assert_eq!(e.message, "5: arguments are key=value");
        // A value may hold '=' (the first one splits key from value), e.g. a base64 token.
        assert_eq!(
            parse("AUTH token=c2VjcmV0==").unwrap(),
            Command::Auth { token: "c2VjcmV0==".into() }
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(line in ".{0,300}") {
            let _ = parse(&line);
        }

        #[test]
        fn never_panics_on_command_like_text(
            name in "(?i)(ping|status|analyze|result|history|auth|help|\\*idn\\?|capture|x)",
            args in proptest::collection::vec("[a-z]{0,6}=?[ -~]{0,12}", 0..5),
        ) {
            let line = format!("{name} {}", args.join(" "));
            if let Err(e) = parse(&line) {
                prop_assert!(!e.code.is_empty() && !e.message.is_empty());
            }
        }
    }
}
