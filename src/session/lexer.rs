//! A SQL scanner for what the relay must know of a client's SQL: it splits statements as
//! Postgres' scanner does and hands out their words, string literals and quoted identifiers,
//! skipping comments, and never allocates.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A keyword or unquoted identifier, as written.
    Word(&'a str),
    /// A string literal's text between its quotes, escapes as written.
    Str(&'a str),
    /// An `E'…'` string's text between its quotes, escapes as written.
    EscapedStr(&'a str),
    /// A quoted identifier's text between its quotes, doubled quotes as written.
    Quoted(&'a str),
    /// An unsigned number: digits and points.
    Number(&'a str),
    /// An operator or anything else.
    Other,
    Punct(u8),
}

impl Token<'_> {
    pub fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

/// Postgres' identifier characters: ASCII letters, `_` and every byte of a non-ASCII character
/// start one; digits and `$` may follow.
fn ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn ident_cont(b: u8) -> bool {
    ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Reads SQL a statement at a time, as Postgres' scanner splits it. Every position it stops at
/// is an ASCII byte or the end, so the slices it hands out are whole characters.
pub struct Lexer<'a> {
    sql: &'a str,
    at: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(sql: &'a str) -> Lexer<'a> {
        Lexer { sql, at: 0 }
    }

    /// Pushes the next statement's tokens; false when the text has ended.
    pub fn statement(&mut self, tokens: &mut Vec<Token<'a>>) -> bool {
        let b = self.sql.as_bytes();
        while let Some(&c) = b.get(self.at) {
            let next = b.get(self.at + 1).copied();
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.at += 1,
                b'-' if next == Some(b'-') => {
                    self.at = find(b, self.at, b"\n").unwrap_or(b.len());
                }
                b'/' if next == Some(b'*') => self.skip_comment(),
                b'\'' => tokens.push(Token::Str(self.quoted(self.at, b'\'', false))),
                b'E' | b'e' if next == Some(b'\'') => {
                    tokens.push(Token::EscapedStr(self.quoted(self.at + 1, b'\'', true)));
                }
                b'"' => tokens.push(Token::Quoted(self.quoted(self.at, b'"', false))),
                b'$' => tokens.push(self.dollar()),
                b';' => {
                    self.at += 1;
                    return true;
                }
                b'(' | b')' | b',' => {
                    tokens.push(Token::Punct(c));
                    self.at += 1;
                }
                c if c.is_ascii_digit() => {
                    let start = self.at;
                    while b
                        .get(self.at)
                        .is_some_and(|&c| c.is_ascii_digit() || c == b'.')
                    {
                        self.at += 1;
                    }
                    tokens.push(Token::Number(self.slice(start, self.at)));
                }
                c if ident_start(c) => {
                    let start = self.at;
                    while b.get(self.at).is_some_and(|&c| ident_cont(c)) {
                        self.at += 1;
                    }
                    tokens.push(Token::Word(self.slice(start, self.at)));
                }
                _ => {
                    tokens.push(Token::Other);
                    self.at += 1;
                }
            }
        }
        false
    }

    fn slice(&self, from: usize, to: usize) -> &'a str {
        self.sql.get(from..to).unwrap_or("")
    }

    /// A `/* … */` comment, which nests.
    fn skip_comment(&mut self) {
        let b = self.sql.as_bytes();
        let mut depth = 0usize;
        while self.at < b.len() {
            if b[self.at..].starts_with(b"/*") {
                depth += 1;
                self.at += 2;
            } else if b[self.at..].starts_with(b"*/") {
                depth -= 1;
                self.at += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.at += 1;
            }
        }
    }

    /// A quoted run from its opening quote at `start`: a doubled quote is one quote, and with
    /// `backslashes` a backslash escapes the next byte. Returns the text between the quotes.
    fn quoted(&mut self, start: usize, quote: u8, backslashes: bool) -> &'a str {
        let b = self.sql.as_bytes();
        let mut i = start + 1;
        while i < b.len() {
            let escaped =
                (backslashes && b[i] == b'\\') || (b[i] == quote && b.get(i + 1) == Some(&quote));
            if escaped {
                i += 2;
            } else if b[i] == quote {
                self.at = i + 1;
                return self.slice(start + 1, i);
            } else {
                i += 1;
            }
        }
        self.at = b.len();
        // An escaped final byte may leave `i` past the end.
        self.slice(start + 1, b.len())
    }

    /// At a `$`: a dollar-quoted string (`$$ … $$`, `$tag$ … $tag$`), a positional parameter
    /// (`$1`), or a lone `$`.
    fn dollar(&mut self) -> Token<'a> {
        let b = self.sql.as_bytes();
        let start = self.at;
        let mut end = start + 1;
        if b.get(end).is_some_and(|c| c.is_ascii_digit()) {
            while b.get(end).is_some_and(|c| c.is_ascii_digit()) {
                end += 1;
            }
            self.at = end;
            return Token::Other;
        }
        if b.get(end).is_some_and(|&c| ident_start(c)) {
            while b
                .get(end)
                .is_some_and(|&c| ident_start(c) || c.is_ascii_digit())
            {
                end += 1;
            }
        }
        if b.get(end) != Some(&b'$') {
            self.at = start + 1;
            return Token::Other;
        }
        let tag = &b[start..=end];
        let body = end + 1;
        let close = find(b, body, tag);
        self.at = close.map_or(b.len(), |at| at + tag.len());
        Token::Str(self.slice(body, close.unwrap_or(b.len())))
    }
}

/// Where `needle` next occurs in `haystack` at or after `from`.
pub fn find(haystack: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at)
}
