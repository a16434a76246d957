//! The `boneage` command: parses arguments, sets up logging, dispatches to one mode.
//! All the work is in the library; errors become one message and a documented exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("boneage: error: {}", one_line(&err));
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}

/// The whole context chain on one line, what failed and why, skipping a cause whose text
/// the message already quotes (library errors name their source in their own message).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line.push_str(": ");
            line.push_str(&cause);
        }
    }
    line
}
