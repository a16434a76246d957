//! Fitting strings into a fixed number of monospace character cells.
//!
//! Every string on screen comes from outside (file names, patient ids, error messages) and
//! may be any length; the screens must never overflow, so each line is either truncated
//! with an ellipsis or word-wrapped into a bounded number of lines. Counting is in `char`s
//! because the fonts are monospace Latin-1: one `char`, one cell. Characters the font lacks
//! are drawn as its replacement glyph, still one cell wide.

/// Marks text that was cut; three ASCII dots so every font has the glyphs.
const ELLIPSIS: &str = "...";

/// `text` cut to at most `max_chars` characters, ending in `...` when something was cut.
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    with_ellipsis(text, max_chars)
}

/// The start of `text` followed by `...`, `max_chars` characters at most in all.
fn with_ellipsis(text: &str, max_chars: usize) -> String {
    let dots = ELLIPSIS.len().min(max_chars);
    let mut out: String = text.chars().take(max_chars - dots).collect();
    out.truncate(out.trim_end().len());
    out.push_str(&ELLIPSIS[..dots]);
    out
}

/// Word-wraps `text` into at most `max_lines` lines of at most `max_chars` characters.
///
/// Words longer than a line (paths, ids) are broken hard. Newlines in `text` start a new
/// line. When the text needs more lines than allowed, the last line ends in `...`.
pub(crate) fn wrap(text: &str, max_chars: usize, max_lines: usize) -> Vec<String> {
    if max_chars == 0 || max_lines == 0 {
        return Vec::new();
    }
    let mut lines: Vec<String> = Vec::new();
    for paragraph in text.lines() {
        let mut line = String::new();
        let mut line_len = 0;
        for word in paragraph.split_whitespace() {
            let mut word: Vec<char> = word.chars().collect();
            loop {
                let sep = usize::from(line_len > 0);
                if line_len + sep + word.len() <= max_chars {
                    if sep == 1 {
                        line.push(' ');
                    }
                    line.extend(word.iter());
                    line_len += sep + word.len();
                    break;
                }
                if line_len > 0 {
                    lines.push(std::mem::take(&mut line));
                    line_len = 0;
                    continue;
                }
                // A word longer than a whole line: break it.
                let rest = word.split_off(max_chars);
                lines.push(word.into_iter().collect());
                word = rest;
            }
        }
        if line_len > 0 || paragraph.trim().is_empty() {
            lines.push(line);
        }
    }
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        if let Some(last) = lines.last_mut() {
            *last = with_ellipsis(last, max_chars);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_short_and_marks_cut() {
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello world", 8), "hello...");
        assert_eq!(truncate("hello world", 9), "hello...");
        assert_eq!(truncate("abcdef", 2), "..");
        assert_eq!(truncate("abcdef", 0), "");
        assert_eq!(truncate("äöüäöü", 5).chars().count(), 5);
    }

    #[test]
    fn wrap_breaks_on_words_and_long_words() {
        assert_eq!(wrap("the quick brown fox", 10, 5), ["the quick", "brown fox"]);
        assert_eq!(wrap("/dev/fb0/very/long/path", 8, 5), ["/dev/fb0", "/very/lo", "ng/path"]);
        assert_eq!(wrap("a\nb c", 10, 5), ["a", "b c"]);
        assert!(wrap("anything", 0, 3).is_empty());
    }

    #[test]
    fn wrap_marks_dropped_lines() {
        let lines = wrap("one two three four five six", 9, 2);
        assert_eq!(lines, ["one two", "three..."]);
        let lines = wrap("aaaaaaaaa bbbbbbbbb ccc", 9, 2);
        assert_eq!(lines, ["aaaaaaaaa", "bbbbbb..."]);
    }

    #[test]
    fn wrapped_lines_never_exceed_width() {
        let text = "Lorem ipsum dolor sit amet, consectetur-adipiscing-elit-sed-do eiusmod tempor";
        for width in 1..40 {
            for max in 1..6 {
                let lines = wrap(text, width, max);
                assert!(lines.len() <= max);
                assert!(lines.iter().all(|l| l.chars().count() <= width), "{width}: {lines:?}");
            }
        }
    }
}
