//! What the shell executor keeps of a process's output: a bounded tail of
//! each stream, and the `::progress N message` lines of stdout.
//!
//! Invariant: memory per stream is bounded whatever the process writes — at
//! most twice the tail size for the tail, and [`MAX_LINE`] for the line being
//! assembled.

/// The longest stdout line looked at for `::progress`; longer lines are part
/// of stdout but never progress reports.
const MAX_LINE: usize = 4_096;

/// The last `cap` bytes of a stream.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: Vec<u8>,
    cap: usize,
    truncated: bool,
}

impl Tail {
    /// An empty tail keeping at most `cap` bytes.
    pub(crate) fn new(cap: usize) -> Self {
        Self { buf: Vec::new(), cap, truncated: false }
    }

    /// Appends `bytes`, forgetting what falls out of the tail.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        // Trim in amortised steps rather than on every write.
        if self.buf.len() > self.cap.saturating_mul(2).max(8_192) {
            self.trim();
        }
    }

    fn trim(&mut self) {
        if self.buf.len() > self.cap {
            let cut = self.buf.len() - self.cap;
            self.buf.drain(..cut);
            self.truncated = true;
        }
    }

    /// The tail as text (invalid UTF-8 replaced), and whether earlier output
    /// was dropped.
    pub(crate) fn finish(mut self) -> (String, bool) {
        self.trim();
        let mut start = 0;
        if self.truncated {
            // Do not begin in the middle of a multi-byte character.
            while start < self.buf.len() && start < 4 && (self.buf[start] & 0b1100_0000) == 0b1000_0000 {
                start += 1;
            }
        }
        (String::from_utf8_lossy(&self.buf[start..]).into_owned(), self.truncated)
    }
}

/// Splits a byte stream into lines, for spotting progress reports.
#[derive(Debug, Default)]
pub(crate) struct Lines {
    line: Vec<u8>,
    /// The line being read grew past [`MAX_LINE`]: skip to its end.
    overlong: bool,
}

impl Lines {
    /// Feeds `bytes`, calling `each` with every complete line (without its
    /// line ending) that is short enough to be a progress report.
    pub(crate) fn feed(&mut self, bytes: &[u8], mut each: impl FnMut(&str)) {
        for part in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, ended) = match part.split_last() {
                Some((b'\n', body)) => (body, true),
                _ => (part, false),
            };
            if !self.overlong {
                if self.line.len() + body.len() > MAX_LINE {
                    self.overlong = true;
                    self.line.clear();
                } else {
                    self.line.extend_from_slice(body);
                }
            }
            if ended {
                if !self.overlong
                    && let Ok(text) = std::str::from_utf8(&self.line)
                {
                    each(text.strip_suffix('\r').unwrap_or(text));
                }
                self.line.clear();
                self.overlong = false;
            }
        }
    }
}

/// A progress report, `::progress PERCENT [MESSAGE]` (the percent may end in
/// `%`): the percent and the message, or `None` for any other line.
pub(crate) fn parse_progress(line: &str) -> Option<(f64, &str)> {
    let rest = line.strip_prefix("::progress")?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    let rest = rest.trim_start();
    let (number, message) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let percent: f64 = number.strip_suffix('%').unwrap_or(number).parse().ok()?;
    percent.is_finite().then_some((percent, message.trim()))
}

/// The last non-blank line of `text`, shortened to a readable length.
pub(crate) fn last_line(text: &str) -> Option<String> {
    const MAX_CHARS: usize = 300;
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    if line.chars().count() <= MAX_CHARS {
        return Some(line.to_owned());
    }
    let short: String = line.chars().take(MAX_CHARS).collect();
    Some(format!("{short}…"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_keeps_the_last_bytes_and_says_when_it_dropped_some() {
        let mut tail = Tail::new(10);
        tail.push(b"hello");
        assert_eq!(tail.finish(), ("hello".to_owned(), false));

        let mut tail = Tail::new(10);
        for i in 0..10_000 {
            tail.push(format!("{i}\n").as_bytes());
        }
        let (text, truncated) = tail.finish();
        assert!(truncated);
        assert_eq!(text, "9998\n9999\n");
    }

    #[test]
    fn a_tail_never_starts_inside_a_character() {
        let mut tail = Tail::new(5);
        tail.push("ééééé".as_bytes());
        // 10 bytes; the last 5 start with the second byte of an "é".
        assert_eq!(tail.finish(), ("éé".to_owned(), true));
    }

    #[test]
    fn lines_are_split_across_writes_and_overlong_ones_skipped() {
        let mut seen = Vec::new();
        let mut lines = Lines::default();
        lines.feed(b"::progr", |l| seen.push(l.to_owned()));
        lines.feed(b"ess 5 a\r\nsecond\n", |l| seen.push(l.to_owned()));
        lines.feed(&vec![b'x'; MAX_LINE + 10], |l| seen.push(l.to_owned()));
        lines.feed(b"x\nlast\nunfinished", |l| seen.push(l.to_owned()));
        assert_eq!(seen, ["::progress 5 a", "second", "last"]);
    }

    #[test]
    fn progress_lines_parse() {
        assert_eq!(parse_progress("::progress 42 some message"), Some((42.0, "some message")));
        assert_eq!(parse_progress("::progress 12.5%"), Some((12.5, "")));
        assert_eq!(parse_progress("::progress   7   spaced  out "), Some((7.0, "spaced  out")));
        assert_eq!(parse_progress("::progress"), None);
        assert_eq!(parse_progress("::progress abc"), None);
        assert_eq!(parse_progress("::progress NaN"), None);
        assert_eq!(parse_progress("::progressive 4"), None);
        assert_eq!(parse_progress(" ::progress 4"), None);
    }

    #[test]
    fn the_last_line_skips_blank_ones() {
        assert_eq!(last_line("a\nb: no such file\n\n  \n").as_deref(), Some("b: no such file"));
        assert_eq!(last_line(""), None);
        assert_eq!(last_line(&"y".repeat(400)).map(|l| l.chars().count()), Some(301));
    }
}
