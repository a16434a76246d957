//! Line framing shared by TCP and serial: bounded lines in, one JSON line out per command.
//!
//! A line ends at `\n` or `\r`: terminal programs (PuTTY, screen, minicom) send a bare CR on
//! Enter, and the LF of a CRLF ending then ends an empty line, which is ignored. A line
//! longer than the limit is discarded up to its end and answered with `line_too_long`;
//! bytes that are not UTF-8 get `not_utf8`. Neither ends the connection, so one bad line
//! from a flaky serial cable does not cost the session.

use std::io::{self, BufRead, ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{codes, execute, parse, ProtocolError, Session};

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest accepted line, newline excluded.
    pub max_line_bytes: usize,
    /// Whether a read timeout ends the connection (TCP idle timeout) or is just a chance
    /// to check for shutdown (serial lines are always "connected").
    pub timeout_closes: bool,
    /// A session not authenticated this long after it opened is told so and closed (TCP
    /// on a public address), so strangers cannot keep the connection slots busy.
    pub auth_within: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {0} bytes")]
    TooLong(usize),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Whether a byte ends a line: LF, or CR alone (terminals) or as the first half of CRLF.
fn ends_line(b: &u8) -> bool {
    matches!(b, b'\n' | b'\r')
}

/// Serves one connection until the peer closes, an I/O error occurs, the idle timeout hits
/// (when `timeout_closes`), `shutdown` is set, or a reply was the connection's last
/// ([`Session::closing`], after a wrong token).
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
    let opened = Instant::now();
    loop {
        if shutdown.load(Ordering::Relaxed) {
            return refuse_unread(&mut reader, &mut writer, &line);
        }
        // Checked here, so at every read tick as well as after each command.
        if let Some(limit) = limits.auth_within.filter(|_| !session.authenticated) {
            if opened.elapsed() >= limit {
                let reply = ProtocolError::new(
                    codes::UNAUTHORIZED,
                    format!(
                        "no valid AUTH token=... within {} s of connecting; connection closed",
                        limit.as_secs()
                    ),
                )
                .to_reply();
                let _ = writer.write_all(&reply_line(&reply));
                return Ok(());
            }
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
            match buf.iter().position(ends_line) {
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
        // The ending is not part of the line, so not part of the limit either.
        if line.len() > limits.max_line_bytes {
            too_long = true;
            line.clear();
        }
        if !done {
            continue;
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
                    continue; // blank lines (keep-alives, the LF of a CRLF) get no reply
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
        if session.closing {
            return Ok(());
        }
    }
}

/// Most bytes, lines and time still spent answering at shutdown: a peer streaming
/// commands, or trickling them in faster than the read timeout, must not hold the service
/// up.
const UNREAD_MAX_BYTES: usize = 64 * 1024;
const UNREAD_MAX_LINES: usize = 100;
const UNREAD_MAX_TIME: Duration = Duration::from_secs(1);

/// At shutdown, answers each complete command the peer has already sent (and this loop not
/// yet read) with `unavailable`, without running it, so the client knows to send it again
/// instead of guessing from a closed connection. `partial` is the start of a line read
/// before the shutdown was seen. Reads only what is there: the first read timeout, 64 KiB,
/// or [`UNREAD_MAX_TIME`] (plus at most one read timeout) ends it, whichever comes first.
fn refuse_unread<R: BufRead, W: Write>(
    reader: &mut R,
    writer: &mut W,
    partial: &[u8],
) -> io::Result<()> {
    let mut pending = partial.to_vec();
    let started = Instant::now();
    while pending.len() < UNREAD_MAX_BYTES && started.elapsed() < UNREAD_MAX_TIME {
        match reader.fill_buf() {
            Ok([]) | Err(_) => break,
            Ok(buf) => {
                let n = buf.len();
                pending.extend_from_slice(buf);
                reader.consume(n);
            }
        }
    }
    let commands = pending
        .split(ends_line)
        .rev()
        .skip(1) // what follows the last line end is not a complete line
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .count()
        .min(UNREAD_MAX_LINES);
    if commands == 0 {
        return Ok(());
    }
    let reply = reply_line(
        &ProtocolError::new(
            codes::UNAVAILABLE,
            "the service is stopping; this command was not run: send it again when the \
             service is back",
        )
        .to_reply(),
    );
    for _ in 0..commands {
        writer.write_all(&reply)?;
    }
    writer.flush()
}

/// One reply as it goes on the wire: compact JSON and a newline, written with one call so a
/// peer never sees half a line.
pub fn reply_line(reply: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_json::to_vec(reply).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replies(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn commands_unread_at_shutdown_are_refused_not_dropped() {
        // Two complete commands (one split across the shutdown), a blank keep-alive, and
        // the start of a third that never got its newline.
        let mut reader = io::Cursor::new(b"TUS\r\nANALYZE sex=f path=/x.png\n\n  \nHIST".to_vec());
        let mut out = Vec::new();
        refuse_unread(&mut reader, &mut out, b"STA").unwrap();
        let got = replies(&out);
        assert_eq!(got.len(), 2, "{got:?}");
        for r in got {
            assert_eq!(r["ok"], false);
            assert_eq!(r["error"]["code"], codes::UNAVAILABLE);
            assert!(r["error"]["message"].as_str().unwrap().contains("send it again"));
        }
        // Nothing pending, nothing written.
        let mut out = Vec::new();
        refuse_unread(&mut io::Cursor::new(Vec::new()), &mut out, b"").unwrap();
        assert!(out.is_empty());
    }

    /// Hands out one command, one byte at a time, each after a pause shorter than a read
    /// timeout: without a wall-clock limit this would keep shutdown waiting for hours.
    struct Trickle {
        sent: usize,
    }

    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(Duration::from_millis(50));
            let line = b"PING\r";
            buf[0] = line[self.sent % line.len()];
            self.sent += 1;
            Ok(1)
        }
    }

    #[test]
    fn a_trickle_at_shutdown_is_cut_off_in_time() {
        let mut reader = io::BufReader::new(Trickle { sent: 0 });
        let mut out = Vec::new();
        let t = Instant::now();
        refuse_unread(&mut reader, &mut out, b"").unwrap();
        let took = t.elapsed();
        assert!(took < UNREAD_MAX_TIME + Duration::from_millis(500), "{took:?}");
        // What did arrive in time is answered: CR-ended commands count as lines.
        let got = replies(&out);
        assert!(!got.is_empty() && got.len() <= 5, "{took:?}: {got:?}");
        assert!(got.iter().all(|r| r["error"]["code"] == codes::UNAVAILABLE), "{got:?}");
    }

    #[test]
    fn a_flood_at_shutdown_gets_a_bounded_answer() {
        let flood = b"STATUS\n".repeat(UNREAD_MAX_BYTES);
        let mut out = Vec::new();
        refuse_unread(&mut io::Cursor::new(flood), &mut out, b"").unwrap();
        assert_eq!(replies(&out).len(), UNREAD_MAX_LINES);
    }
}
