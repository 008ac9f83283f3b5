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

/// Why an index token was refused. Each names the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("invalid index '{token}': {reason}")]
    BadToken { token: String, reason: String },
    #[error("index {index} in '{token}' is above the maximum index {max} (raise it with --max-index, up to {limit})", limit = fibpool_protocol::MAX_INDEX)]
    AboveMax { token: String, index: u64, max: u64 },
    #[error("'{token}' brings the batch to {total} indices, more than the limit of {MAX_TASKS}")]
    TooMany { token: String, total: u128 },
    #[error("token starting '{start}' is longer than any valid index ({MAX_TOKEN_LEN} bytes)")]
    TooLong { start: String },
    #[error("not UTF-8 text near '{near}'")]
    NotText { near: String },
}

/// Adds tokens to a task list, enforcing the limits.
pub struct Parser {
    max_index: u64,
    tasks: TaskList,
}

impl Parser {
    pub fn new(max_index: u64) -> Self {
        Parser {
            max_index,
            tasks: TaskList::new(),
        }
    }

    /// Makes room for about `bytes` bytes of input: a plain index and its
    /// separator take at least two, and at most [`RESERVE_LIMIT`] entries
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
                .map_err(|e| (line, bad("", &format!("read failed: {e}"))))?;
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
                near: String::from_utf8_lossy(token).into_owned(),
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
            return Ok(());
        } else if let Some((a, b)) = token.split_once("..") {
            let a = self.number(token, a, "range start")?;
            let b = self.number(token, b, "range end")?;
            check_order(token, a, b)?;
            if b > a {
                self.check_max(token, b - 1)?;
            }
            self.tasks_fit(token, (b - a) as u128)?;
            self.tasks.push_range(a, b);
            return Ok(());
        } else if let Some((n, k)) = token.split_once('x') {
            (
                self.index(token, n, "index")?,
                self.number(token, k, "repeat count")?,
            )
        } else {
            (self.index(token, token, "index")?, 1)
        };
        self.tasks_fit(token, count as u128)?;
        self.tasks.push_repeat(first, count);
        Ok(())
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
        } else if let Some(rest) = text.strip_prefix('-')
            && !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
        {
            format!("the {what} is negative")
        } else if !text.bytes().all(|b| b.is_ascii_digit()) {
            format!("the {what} '{text}' is not a non-negative integer")
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
        check("x3", Err("invalid index 'x3': the index is missing"));
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
                "index 1001 in '1001' is above the maximum index 1000 (raise it with --max-index, up to 300000000)",
            ),
        );
        check(
            "0..1002",
            Err(
                "index 1001 in '0..1002' is above the maximum index 1000 (raise it with --max-index, up to 300000000)",
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
    fn plain_indices_are_checked_the_same_on_both_paths() {
        let above = |token: &str, index: &str| {
            format!(
                "index {index} in '{token}' is above the maximum index 1000 (raise it with --max-index, up to 300000000)"
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
