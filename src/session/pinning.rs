//! Session state that cannot move between backend connections. In transaction mode a client
//! whose SQL creates such state is pinned to its backend connection for the rest of its session,
//! so it never sees another connection without it: no silent wrong results.
//!
//! Statements that put session state back to its defaults (`RESET`, `DISCARD`, `DEALLOCATE`,
//! as drivers' pools send when a connection is given back: asyncpg's `RESET ALL`) make nothing
//! that must stay; they only make pgvalet's record of the connection's settings and statements
//! stale, so the connection is reset before its next client instead.
//!
//! The check reads SQL as a lexer would (comments, string literals, dollar quotes and quoted
//! identifiers skipped), one statement at a time.

use std::fmt;

/// Why a client was pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// A session-level `SET` (not `SET LOCAL`, not `SET TRANSACTION`), or
    /// `set_config(…, false)`.
    Set,
    Listen,
    TempObject,
    AdvisoryLock,
    HoldCursor,
    /// SQL-level `PREPARE` (protocol-level statements follow the client instead).
    Prepare,
    /// `LOAD` of a library into the session.
    Load,
}

impl PinReason {
    pub fn as_str(self) -> &'static str {
        match self {
            PinReason::Set => "set",
            PinReason::Listen => "listen",
            PinReason::TempObject => "temp_object",
            PinReason::AdvisoryLock => "advisory_lock",
            PinReason::HoldCursor => "with_hold_cursor",
            PinReason::Prepare => "prepare",
            PinReason::Load => "load",
        }
    }
}

impl fmt::Display for PinReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What SQL does to the session that runs it, as transaction pooling must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// It makes state that cannot move: the session keeps its backend connection.
    Pin(PinReason),
    /// It puts settings or statements back to their defaults: the connection must be reset
    /// before another client uses it.
    Reset,
}

/// What `sql` (one or more statements) does: the first reason to pin, else whether it resets.
pub fn effect(sql: &str) -> Option<Effect> {
    let statements = statements(sql);
    if let Some(reason) = statements.iter().find_map(|t| statement_reason(t)) {
        return Some(Effect::Pin(reason));
    }
    let resets = |tokens: &Vec<Token>| matches!(tokens.first(), Some(Token::Word(w)) if matches!(w.as_str(), "RESET" | "DISCARD" | "DEALLOCATE"));
    statements.iter().any(resets).then_some(Effect::Reset)
}

/// The first reason in `sql` to pin its session, if any.
#[cfg(test)]
fn reason(sql: &str) -> Option<PinReason> {
    match effect(sql) {
        Some(Effect::Pin(reason)) => Some(reason),
        _ => None,
    }
}

const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "PG_ADVISORY_LOCK",
    "PG_ADVISORY_LOCK_SHARED",
    "PG_TRY_ADVISORY_LOCK",
    "PG_TRY_ADVISORY_LOCK_SHARED",
];

fn statement_reason(tokens: &[Token]) -> Option<PinReason> {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => w.as_str(),
        _ => "",
    };
    match word(0) {
        "SET" => match word(1) {
            "LOCAL" | "TRANSACTION" | "CONSTRAINTS" => {}
            _ => return Some(PinReason::Set),
        },
        "LISTEN" => return Some(PinReason::Listen),
        "PREPARE" if word(1) != "TRANSACTION" => return Some(PinReason::Prepare),
        "LOAD" => return Some(PinReason::Load),
        "CREATE" => {
            let temp = |w: &str| w == "TEMP" || w == "TEMPORARY";
            if temp(word(1)) || ((word(1) == "GLOBAL" || word(1) == "LOCAL") && temp(word(2))) {
                return Some(PinReason::TempObject);
            }
        }
        "DECLARE"
            if tokens
                .windows(2)
                .any(|w| w == [Token::Word("WITH".into()), Token::Word("HOLD".into())]) =>
        {
            return Some(PinReason::HoldCursor);
        }
        _ => {}
    }
    // SELECT … INTO TEMP, and functions anywhere in the statement.
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(w) = token else { continue };
        if w == "INTO" && matches!(word(i + 1), "TEMP" | "TEMPORARY") {
            return Some(PinReason::TempObject);
        }
        let called = tokens.get(i + 1) == Some(&Token::Punct('('));
        if called && SESSION_ADVISORY_LOCKS.contains(&w.as_str()) {
            return Some(PinReason::AdvisoryLock);
        }
        if called && w == "SET_CONFIG" && set_config_is_session(&tokens[i + 1..]) {
            return Some(PinReason::Set);
        }
    }
    None
}

/// For the tokens from `(` on: whether the call's last argument is a literal false (a
/// session-level setting). Anything not plainly true is taken as false.
fn set_config_is_session(tokens: &[Token]) -> bool {
    let mut depth = 0;
    let mut last = None;
    for token in tokens {
        match token {
            Token::Punct('(') => depth += 1,
            Token::Punct(')') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            t if depth == 1 && *t != Token::Punct(',') => last = Some(t),
            _ => {}
        }
    }
    !matches!(last, Some(Token::Word(w)) if w == "TRUE")
        && !matches!(last, Some(Token::Str(s)) if is_true(s))
}

fn is_true(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "t" | "true" | "on" | "yes" | "y" | "1"
    )
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A keyword or unquoted identifier, upper-cased.
    Word(String),
    /// A string literal's contents.
    Str(String),
    /// A quoted identifier, a number or an operator: nothing the check looks at.
    Other,
    Punct(char),
}

/// Splits SQL into statements of tokens.
fn statements(sql: &str) -> Vec<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = vec![Vec::new()];
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                        depth += 1;
                        i += 2;
                    } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
            }
            '\'' => {
                let (s, end) = quoted(&chars, i, '\'', false);
                push(&mut out, Token::Str(s));
                i = end;
            }
            'E' | 'e' if next == Some('\'') => {
                let (s, end) = quoted(&chars, i + 1, '\'', true);
                push(&mut out, Token::Str(s));
                i = end;
            }
            '"' => {
                let (_, end) = quoted(&chars, i, '"', false);
                push(&mut out, Token::Other);
                i = end;
            }
            '$' => {
                // $tag$ … $tag$, or a positional parameter $1.
                let tag_end = chars[i + 1..]
                    .iter()
                    .position(|c| !(c.is_alphanumeric() || *c == '_'));
                match tag_end.map(|n| i + 1 + n) {
                    Some(j)
                        if chars[j] == '$'
                            && !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        let tag: String = chars[i..=j].iter().collect();
                        let body_start = j + 1;
                        let rest: String = chars[body_start..].iter().collect();
                        let (body, consumed) = match rest.find(&tag) {
                            Some(at) => (
                                rest[..at].to_owned(),
                                rest[..at].chars().count() + tag.chars().count(),
                            ),
                            None => (rest.clone(), rest.chars().count()),
                        };
                        push(&mut out, Token::Str(body));
                        i = body_start + consumed;
                    }
                    _ => {
                        i += 1;
                        while i < chars.len() && chars[i].is_ascii_digit() {
                            i += 1;
                        }
                        push(&mut out, Token::Other);
                    }
                }
            }
            ';' => {
                out.push(Vec::new());
                i += 1;
            }
            '(' | ')' | ',' => {
                push(&mut out, Token::Punct(c));
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                push(&mut out, Token::Word(word.to_uppercase()));
            }
            _ => {
                push(&mut out, Token::Other);
                i += 1;
            }
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

fn push(out: &mut [Vec<Token>], token: Token) {
    if let Some(last) = out.last_mut() {
        last.push(token);
    }
}

/// Reads a quoted run starting at the opening quote `chars[start]`; a doubled quote is one
/// quote, and with `backslashes` a backslash escapes the next character. Returns the contents
/// and the index after the closing quote.
fn quoted(chars: &[char], start: usize, quote: char, backslashes: bool) -> (String, usize) {
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        let c = chars[i];
        if backslashes && c == '\\' {
            if let Some(&n) = chars.get(i + 1) {
                s.push(n);
            }
            i += 2;
        } else if c == quote {
            if chars.get(i + 1) == Some(&quote) {
                s.push(quote);
                i += 2;
            } else {
                return (s, i + 1);
            }
        } else {
            s.push(c);
            i += 1;
        }
    }
    (s, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_state_pins() {
        let cases = [
            ("SET search_path = app", Some(PinReason::Set)),
            (
                "set session statement_timeout to 5000",
                Some(PinReason::Set),
            ),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
                Some(PinReason::Set),
            ),
            ("listen jobs", Some(PinReason::Listen)),
            ("CREATE TEMP TABLE t (x int)", Some(PinReason::TempObject)),
            (
                "create global temporary table t (x int)",
                Some(PinReason::TempObject),
            ),
            ("select * into temp t from x", Some(PinReason::TempObject)),
            ("select pg_advisory_lock(42)", Some(PinReason::AdvisoryLock)),
            (
                "SELECT pg_try_advisory_lock_shared(1, 2)",
                Some(PinReason::AdvisoryLock),
            ),
            (
                "declare c cursor with hold for select 1",
                Some(PinReason::HoldCursor),
            ),
            ("PREPARE q AS select 1", Some(PinReason::Prepare)),
            (
                "select set_config('app.user', 'x', false)",
                Some(PinReason::Set),
            ),
            ("LOAD 'auto_explain'", Some(PinReason::Load)),
            (
                "begin; select 1; set work_mem = '1GB'; commit",
                Some(PinReason::Set),
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(reason(sql), want, "{sql}");
        }
    }

    #[test]
    fn transaction_scoped_and_quoted_things_do_not_pin() {
        for sql in [
            "SET LOCAL statement_timeout = 100",
            "set transaction isolation level serializable",
            "SET CONSTRAINTS ALL DEFERRED",
            "select pg_advisory_xact_lock(1)",
            "select set_config('app.user', 'x', true)",
            "select set_config('app.user', 'x', 't')",
            "select 'SET x = 1; LISTEN y'",
            "select $$ create temp table t () $$",
            "select $fn$ LISTEN $fn$, $1",
            "select \"listen\" from t -- listen x\n",
            "/* SET x = 1 /* nested */ */ select 1",
            "select E'it\\'s; LISTEN x'",
            "declare c cursor for select 1",
            "create table temp (x int)",
            "PREPARE TRANSACTION 'x'",
            "",
        ] {
            assert_eq!(effect(sql), None, "{sql}");
        }
    }

    #[test]
    fn putting_state_back_resets_without_pinning() {
        // asyncpg's reset when a pool takes a connection back.
        let asyncpg = "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nDO $$ BEGIN PERFORM * FROM pg_listening_channels() LIMIT 1; IF FOUND THEN UNLISTEN *; END IF; END; $$;\nRESET ALL;";
        for sql in [
            asyncpg,
            "reset search_path",
            "DISCARD ALL",
            "deallocate all",
        ] {
            assert_eq!(effect(sql), Some(Effect::Reset), "{sql}");
        }
        assert_eq!(
            effect("reset all; set search_path = x"),
            Some(Effect::Pin(PinReason::Set))
        );
    }
}
