//! Index tokens from the command line or a file, checked before any worker
//! starts: `N`, `A..B` (half-open), `A..=B`, `NxK` (K copies of N), separated by
//! whitespace or commas.

use std::io::BufRead;

use crate::TaskList;

/// The default largest index accepted. F(10 000 000) is 2.1 MB of decimal text
/// and takes about a second to compute and format; `--max-index` raises it up
/// to [`fibpool_protocol::MAX_INDEX`].
pub const DEFAULT_MAX_INDEX: u64 = 10_000_000;

/// The most indices one batch may hold. The list stays compact whatever its
/// size, but a billion tasks is days of output: more is surely a mistake.
pub const MAX_TASKS: u64 = 1_000_000_000;

/// The most task-list entries reserved ahead of parsing (24 MiB).
const RESERVE_LIMIT: u64 = 1 << 20;

/// No valid token is longer (two 20-digit numbers and `..=`).
const MAX_TOKEN_LEN: usize = 48;

/// The most separate entries (ranges, repeats, lone indices) a batch may
/// hold: 24 bytes each, so the list stays within 192 MiB (twice that while
/// it grows). Consecutive indices and copies of one index merge into one
/// entry as they are read, so only scattered indices count against it.
pub const MAX_ENTRIES: u64 = 1 << 23;

/// Why an index token was refused. Each names the token, quoted with its
/// control characters escaped ([`quoted`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("invalid index {}: {reason}", quoted(token))]
    BadToken { token: String, reason: String },
    #[error("index {index} in {} is above the maximum index {max} (raise it with --max-index, up to {limit})", quoted(token), limit = fibpool_protocol::MAX_INDEX)]
    AboveMax { token: String, index: u64, max: u64 },
    #[error(
        "{} brings the batch to {total} indices, more than the limit of {MAX_TASKS}",
        quoted(token)
    )]
    TooMany { token: String, total: u128 },
    #[error(
        "{} makes the batch more than {MAX_ENTRIES} separate indices, ranges and repeats, the most it may hold (192 MiB): write consecutive indices as ranges (A..B) and copies as repeats (NxK)",
        quoted(token)
    )]
    TooScattered { token: String },
    #[error(
        "token starting {} is longer than any valid index ({MAX_TOKEN_LEN} bytes)",
        quoted(start)
    )]
    TooLong { start: String },
    #[error("not UTF-8 text near '{}'", near.escape_ascii())]
    NotText { near: Vec<u8> },
    /// The input could not be read (its message is the OS error).
    #[error("{0}")]
    Read(String),
}

/// `text` in single quotes with control characters, quotes and
/// backslashes escaped as Rust writes them (`'5\u{b}6'`), so that what a
/// terminal shows is what the input held.
pub fn quoted(text: &str) -> String {
    format!("'{}'", text.escape_debug())
}

/// Adds tokens to a task list, enforcing the limits.
pub struct Parser {
    max_index: u64,
    max_entries: u64,
    tasks: TaskList,
}

impl Parser {
    pub fn new(max_index: u64) -> Self {
        Parser {
            max_index,
            max_entries: MAX_ENTRIES,
            tasks: TaskList::new(),
        }
    }

    /// Makes room for about `bytes` bytes of input: a plain index and its
    /// separator take at least two, and at most `RESERVE_LIMIT` entries
    /// are reserved, so a huge file cannot reserve a huge list up front.
    pub fn reserve_for(&mut self, bytes: u64) {
        self.tasks.reserve((bytes / 2).min(RESERVE_LIMIT) as usize);
    }

    pub fn finish(self) -> TaskList {
        self.tasks
    }

    /// Parses every token in `text` (whitespace- or comma-separated).
    pub fn parse_str(&mut self, text: &str) -> Result<(), InputError> {
        text.split(is_separator)
            .filter(|t| !t.is_empty())
            .try_for_each(|t| self.token(t))
    }

    /// Parses a stream of tokens without holding more than one token in memory.
    /// Errors carry the 1-based line number.
    pub fn parse_reader(&mut self, mut reader: impl BufRead) -> Result<(), (usize, InputError)> {
        let mut token = Vec::with_capacity(MAX_TOKEN_LEN);
        let mut line = 1;
        let mut token_line = 1;
        loop {
            let buf = reader
                .fill_buf()
                .map_err(|e| (line, InputError::Read(e.to_string())))?;
            if buf.is_empty() {
                break;
            }
            let used = buf.len();
            for &byte in buf {
                if is_separator(byte as char) {
                    if !token.is_empty() {
                        self.byte_token(&token).map_err(|e| (token_line, e))?;
                        token.clear();
                    }
                    if byte == b'\n' {
                        line += 1;
                    }
                } else {
                    if token.is_empty() {
                        token_line = line;
                    }
                    if token.len() == MAX_TOKEN_LEN {
                        let start = String::from_utf8_lossy(&token[..16]).into_owned();
                        return Err((token_line, InputError::TooLong { start }));
                    }
                    token.push(byte);
                }
            }
            reader.consume(used);
        }
        if !token.is_empty() {
            self.byte_token(&token).map_err(|e| (token_line, e))?;
        }
        Ok(())
    }

    fn byte_token(&mut self, token: &[u8]) -> Result<(), InputError> {
        // Most tokens in a long file are plain indices: one pass over them.
        if let Some(index) = plain_index(token) {
            return self.push_index(index, token);
        }
        match std::str::from_utf8(token) {
            Ok(text) => self.token(text),
            Err(_) => Err(InputError::NotText {
                near: token.to_vec(),
            }),
        }
    }

    /// Parses one token.
    pub fn token(&mut self, token: &str) -> Result<(), InputError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(InputError::TooLong {
                start: token.chars().take(16).collect(),
            });
        }
        // Most tokens in a long file are plain indices: skip the searches.
        if let Some(index) = plain_index(token.as_bytes()) {
            return self.push_index(index, token.as_bytes());
        }
        let (first, count) = if let Some((a, b)) = token.split_once("..=") {
            let (a, b) = (
                self.index(token, a, "range start")?,
                self.index(token, b, "range end")?,
            );
            check_order(token, a, b)?;
            self.tasks_fit(token, (b - a) as u128 + 1)?;
            self.tasks.push_range(a, b + 1);
            return self.entries_fit(token.as_bytes());
        } else if let Some((a, b)) = token.split_once("..") {
            let a = self.number(token, a, "range start")?;
            let b = self.number(token, b, "range end")?;
            check_order(token, a, b)?;
            if b > a {
                self.check_max(token, b - 1)?;
            }
            self.tasks_fit(token, (b - a) as u128)?;
            self.tasks.push_range(a, b);
            return self.entries_fit(token.as_bytes());
        } else if let Some((n, k)) = token.split_once('x') {
            (
                self.index(token, n, "index before 'x'")?,
                self.number(token, k, "repeat count")?,
            )
        } else {
            (self.index(token, token, "index")?, 1)
        };
        self.tasks_fit(token, count as u128)?;
        self.tasks.push_repeat(first, count);
        self.entries_fit(token.as_bytes())
    }

    /// Adds a plain index, `token` being its digits.
    fn push_index(&mut self, index: u64, token: &[u8]) -> Result<(), InputError> {
        if index > self.max_index || self.tasks.len() >= MAX_TASKS {
            // Digits are ASCII: the slow path words the error.
            let token = String::from_utf8_lossy(token);
            self.check_max(&token, index)?;
            self.tasks_fit(&token, 1)?;
        }
        self.tasks.push(index);
        self.entries_fit(token)
    }

    /// After a push: the list holds at most [`MAX_ENTRIES`] entries.
    fn entries_fit(&self, token: &[u8]) -> Result<(), InputError> {
        if self.tasks.entries() as u64 > self.max_entries {
            return Err(InputError::TooScattered {
                token: String::from_utf8_lossy(token).into_owned(),
            });
        }
        Ok(())
    }

    fn tasks_fit(&self, token: &str, more: u128) -> Result<(), InputError> {
        let total = self.tasks.len() as u128 + more;
        if total > MAX_TASKS as u128 {
            return Err(InputError::TooMany {
                token: token.to_owned(),
                total,
            });
        }
        Ok(())
    }

    fn index(&self, token: &str, text: &str, what: &str) -> Result<u64, InputError> {
        let n = self.number(token, text, what)?;
        self.check_max(token, n)?;
        Ok(n)
    }

    fn check_max(&self, token: &str, index: u64) -> Result<(), InputError> {
        if index > self.max_index {
            return Err(InputError::AboveMax {
                token: token.to_owned(),
                index,
                max: self.max_index,
            });
        }
        Ok(())
    }

    fn number(&self, token: &str, text: &str, what: &str) -> Result<u64, InputError> {
        let reason = if text.is_empty() {
            format!("the {what} is missing")
        } else if let Some(digits) = text.strip_prefix(['-', '+'])
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
        {
            if text.starts_with('-') && digits.bytes().any(|b| b != b'0') {
                format!("the {what} is negative")
            } else {
                format!("the {what} {} has a sign: write {digits}", quoted(text))
            }
        } else if !text.bytes().all(|b| b.is_ascii_digit()) {
            format!("the {what} {} is not a non-negative integer", quoted(text))
        } else {
            match text.parse::<u64>() {
                Ok(n) => return Ok(n),
                Err(_) => format!("the {what} {text} does not fit in 64 bits"),
            }
        };
        Err(bad(token, &reason))
    }
}

fn check_order(token: &str, start: u64, end: u64) -> Result<(), InputError> {
    if start > end {
        return Err(bad(
            token,
            &format!("reversed range: start {start} is after end {end}"),
        ));
    }
    Ok(())
}

fn bad(token: &str, reason: &str) -> InputError {
    InputError::BadToken {
        token: token.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The value of a token of 1 to 19 ASCII digits; `None` for anything else,
/// which takes the careful path (and its error messages).
fn plain_index(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 19 {
        return None;
    }
    token.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

fn is_separator(c: char) -> bool {
    c == ',' || c.is_ascii_whitespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<u64>, String> {
        let mut p = Parser::new(1000);
        p.parse_str(text).map_err(|e| e.to_string())?;
        Ok(p.finish().iter().collect())
    }

    fn check(text: &str, expected: Result<&[u64], &str>) {
        let got = parse(text);
        match expected {
            Ok(values) => assert_eq!(got.as_deref(), Ok(values), "input {text:?}"),
            Err(message) => assert_eq!(got, Err(message.to_owned()), "input {text:?}"),
        }
    }

    #[test]
    fn tokens() {
        check("7", Ok(&[7]));
        check("0..3", Ok(&[0, 1, 2]));
        check("0..=3", Ok(&[0, 1, 2, 3]));
        check("5x3", Ok(&[5, 5, 5]));
        check("1,2  3\n4,,5", Ok(&[1, 2, 3, 4, 5]));
        check("3..3 9", Ok(&[9]));
        check(
            "1000 0..=1000",
            Ok(&[1000].into_iter().chain(0..=1000).collect::<Vec<_>>()),
        );
        check("1..1001", Ok(&(1..1001).collect::<Vec<_>>()));
    }

    #[test]
    fn bad_tokens_name_themselves() {
        check("-5", Err("invalid index '-5': the index is negative"));
        check(
            "abc",
            Err("invalid index 'abc': the index 'abc' is not a non-negative integer"),
        );
        check(
            "10..5",
            Err("invalid index '10..5': reversed range: start 10 is after end 5"),
        );
        check(
            "10..=9",
            Err("invalid index '10..=9': reversed range: start 10 is after end 9"),
        );
        check("5..", Err("invalid index '5..': the range end is missing"));
        check(
            "x3",
            Err("invalid index 'x3': the index before 'x' is missing"),
        );
        check(
            "-0",
            Err("invalid index '-0': the index '-0' has a sign: write 0"),
        );
        check(
            "+5",
            Err("invalid index '+5': the index '+5' has a sign: write 5"),
        );
        check("-05", Err("invalid index '-05': the index is negative"));
        check(
            "1..+3",
            Err("invalid index '1..+3': the range end '+3' has a sign: write 3"),
        );
        check(
            "3x-1",
            Err("invalid index '3x-1': the repeat count is negative"),
        );
        check(
            "1.5",
            Err("invalid index '1.5': the index '1.5' is not a non-negative integer"),
        );
        check(
            "99999999999999999999",
            Err(
                "invalid index '99999999999999999999': the index 99999999999999999999 does not fit in 64 bits",
            ),
        );
        check(
            "1001",
            Err(
                "index 1001 in '1001' is above the maximum index 1000 (raise it with --max-index, up to 20000000000)",
            ),
        );
        check(
            "0..1002",
            Err(
                "index 1001 in '0..1002' is above the maximum index 1000 (raise it with --max-index, up to 20000000000)",
            ),
        );
        check("0..1001", Ok(&(0..1001).collect::<Vec<_>>()));
        check(
            "5x1000000001",
            Err(
                "'5x1000000001' brings the batch to 1000000001 indices, more than the limit of 1000000000",
            ),
        );
    }

    #[test]
    fn control_characters_are_escaped_in_errors() {
        check(
            "5\u{b}6",
            Err("invalid index '5\\u{b}6': the index '5\\u{b}6' is not a non-negative integer"),
        );
        check(
            "\u{1b}[31m",
            Err(
                "invalid index '\\u{1b}[31m': the index '\\u{1b}[31m' is not a non-negative integer",
            ),
        );
        let mut p = Parser::new(100);
        let err = p.parse_reader(&b"1 \0\xff\x1b"[..]).unwrap_err();
        assert_eq!(err.1.to_string(), "not UTF-8 text near '\\x00\\xff\\x1b'");
        let err = Parser::new(100).parse_str("7\u{0}").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid index '7\\0': the index '7\\0' is not a non-negative integer"
        );
    }

    #[test]
    fn repeats_and_runs_merge_as_they_are_read() {
        let mut p = Parser::new(1000);
        p.parse_str("5 5 5x3 5 6 7 8..10 10 10x2 3 4").unwrap();
        let tasks = p.finish();
        assert_eq!(
            tasks.iter().collect::<Vec<_>>(),
            [5, 5, 5, 5, 5, 5, 6, 7, 8, 9, 10, 10, 10, 3, 4]
        );
        // 5x6, 6..10, 10x3, 3..5.
        assert_eq!(tasks.entries(), 4);
        let mut p = Parser::new(1000);
        let text: String = (0..100_000).map(|i| format!("{} ", i % 2 * 7)).collect();
        p.parse_reader(text.as_bytes()).unwrap();
        assert_eq!(p.finish().entries(), 100_000);
        let mut p = Parser::new(1000);
        let text = "9 ".repeat(100_000) + &(0..1000).map(|i| format!("{i} ")).collect::<String>();
        p.parse_reader(text.as_bytes()).unwrap();
        assert_eq!(p.finish().entries(), 2);
    }

    #[test]
    fn scattered_indices_are_bounded_by_entries() {
        let mut p = Parser::new(1000);
        p.max_entries = 3;
        p.parse_str("1 3 5").unwrap();
        p.parse_str("5 5x9").unwrap();
        let err = p.parse_str("6..9").unwrap_err();
        assert_eq!(
            err,
            InputError::TooScattered {
                token: "6..9".to_owned()
            }
        );
        assert!(
            err.to_string().starts_with(&format!(
                "'6..9' makes the batch more than {MAX_ENTRIES} separate indices"
            )),
            "{err}"
        );
        let mut p = Parser::new(1000);
        p.max_entries = 2;
        let err = p.parse_reader("0..4 9\n7x2".as_bytes()).unwrap_err();
        assert_eq!(err.0, 2);
        assert_eq!(
            err.1,
            InputError::TooScattered {
                token: "7x2".to_owned()
            }
        );
    }

    #[test]
    fn plain_indices_are_checked_the_same_on_both_paths() {
        let above = |token: &str, index: &str| {
            format!(
                "index {index} in '{token}' is above the maximum index 1000 (raise it with --max-index, up to 20000000000)"
            )
        };
        let full = "'7' brings the batch to 1000000001 indices, more than the limit of 1000000000";
        let cases = [
            ("1000 0 7", Ok(vec![1000, 0, 7])),
            ("0001", Ok(vec![1])),
            (
                "9999999999999999999",
                Err(above("9999999999999999999", "9999999999999999999")),
            ),
            (
                "18446744073709551615",
                Err(above("18446744073709551615", "18446744073709551615")),
            ),
            ("5x1000000000 7", Err(full.to_owned())),
        ];
        for (text, want) in cases {
            let mut p = Parser::new(1000);
            let got = p.parse_str(text).map_err(|e| e.to_string());
            let from_str = got.map(|()| p.finish().iter().take(3).collect::<Vec<_>>());
            let mut p = Parser::new(1000);
            p.reserve_for(text.len() as u64);
            let got = p
                .parse_reader(text.as_bytes())
                .map_err(|(_, e)| e.to_string());
            let from_reader = got.map(|()| p.finish().iter().take(3).collect::<Vec<_>>());
            assert_eq!(from_str, want, "{text}");
            assert_eq!(from_reader, want, "{text}");
        }
        assert_eq!(plain_index(b"12345"), Some(12345));
        assert_eq!(plain_index(b""), None);
        assert_eq!(plain_index(b"12a"), None);
        assert_eq!(plain_index(b"99999999999999999999"), None);
    }

    #[test]
    fn reader_reports_lines_and_bounds_tokens() {
        let mut p = Parser::new(100);
        let err = p
            .parse_reader("1 2\n3,4\n\n  oops 6".as_bytes())
            .unwrap_err();
        assert_eq!(err.0, 4);
        assert_eq!(
            err.1.to_string(),
            "invalid index 'oops': the index 'oops' is not a non-negative integer"
        );

        let mut p = Parser::new(100);
        let long = "1".repeat(10_000);
        let err = p.parse_reader(long.as_bytes()).unwrap_err();
        assert_eq!(
            err.1,
            InputError::TooLong {
                start: "1".repeat(16)
            }
        );

        let mut p = Parser::new(100);
        p.parse_reader("1..4\n5x2".as_bytes()).unwrap();
        assert_eq!(p.finish().iter().collect::<Vec<_>>(), [1, 2, 3, 5, 5]);

        let mut p = Parser::new(100);
        let err = p.parse_reader(&b"1 \xff\xfe 2"[..]).unwrap_err();
        assert!(matches!(err.1, InputError::NotText { .. }), "{:?}", err.1);
    }
}
