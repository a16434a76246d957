//! The `boneage` command: parses arguments, sets up logging, dispatches to one mode.
//! All the work is in the library; errors become one message and a documented exit code.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the whole context chain: what failed and why, on one line.
            eprintln!("boneage: error: {err:#}");
            ExitCode::from(cli::EXIT_USAGE)
        }
    }
}
