//! Line framing shared by TCP and serial: bounded lines in, one JSON line out per command.
//!
//! A line longer than the limit is discarded up to its newline and answered with
//! `line_too_long`; bytes that are not UTF-8 get `not_utf8`. Neither ends the connection,
//! so one bad line from a flaky serial cable does not cost the session.

use std::io::{self, BufRead, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{codes, execute, parse, ProtocolError, Session};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest accepted line, newline excluded.
    pub max_line_bytes: usize,
    /// Whether a read timeout ends the connection (TCP idle timeout) or is just a chance
    /// to check for shutdown (serial lines are always "connected").
    pub timeout_closes: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Serves one connection until the peer closes, an I/O error occurs, the idle timeout hits
/// (when `timeout_closes`), or `shutdown` is set.
///
/// # Errors
/// The I/O error that ended the connection; a clean close or idle timeout is `Ok`.
pub fn serve_connection<R: BufRead, W: Write>(
    mut reader: R,
    mut writer: W,
    session: &mut Session,
    limits: ConnectionLimits,
    shutdown: &AtomicBool,
) -> io::Result<()> {
    let mut line = Vec::with_capacity(256);
    let mut too_long = false;
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (done, used) = {
            let buf = match reader.fill_buf() {
                Ok([]) => return Ok(()), // peer closed
                Ok(buf) => buf,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if limits.timeout_closes {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            match buf.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if !too_long {
                        line.extend_from_slice(&buf[..i]);
                    }
                    (true, i + 1)
                }
                None => {
                    if !too_long {
                        line.extend_from_slice(buf);
                    }
                    (false, buf.len())
                }
            }
        };
        reader.consume(used);
        // One byte of room for the `\r` of a CRLF ending, which is not part of the limit.
        if line.len() > limits.max_line_bytes + 1 {
            too_long = true;
            line.clear();
        }
        if !done {
            continue;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > limits.max_line_bytes {
            too_long = true;
            line.clear();
        }
        let reply = if too_long {
            ProtocolError::new(
                codes::LINE_TOO_LONG,
                format!("line longer than {} bytes was discarded", limits.max_line_bytes),
            )
            .to_reply()
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) if text.trim().is_empty() => {
                    line.clear();
                    continue; // blank lines (keep-alives, CRLF pairs) get no reply
                }
                Ok(text) => match parse(text) {
                    Ok(cmd) => execute(cmd, session),
                    Err(e) => e.to_reply(),
                },
                Err(_) => {
                    ProtocolError::new(codes::NOT_UTF8, "line is not valid UTF-8 text").to_reply()
                }
            }
        };
        line.clear();
        too_long = false;
        writer.write_all(&reply_line(&reply))?;
        writer.flush()?;
    }
}

/// One reply as it goes on the wire: compact JSON and a newline, written with one call so a
/// peer never sees half a line.
pub fn reply_line(reply: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    out
}
