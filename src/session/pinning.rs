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

use super::lexer::{Lexer, Token};
use crate::backend::settings::is_followed;

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
    // Every statement that pins or resets names one of these words, so SQL without any of them
    // (most of what an application sends) is passed without lexing it.
    if !mentions_keyword(sql.as_bytes()) {
        return None;
    }
    lexed_effect(sql)
}

/// [`effect`] without the quick test.
pub(super) fn lexed_effect(sql: &str) -> Option<Effect> {
    let mut lexer = Lexer::new(sql);
    let mut tokens = Vec::new();
    let mut resets = false;
    loop {
        tokens.clear();
        let more = lexer.statement(&mut tokens);
        if let Some(reason) = statement_reason(&tokens) {
            return Some(Effect::Pin(reason));
        }
        resets |= tokens
            .first()
            .is_some_and(|t| t.is("RESET") || t.is("DISCARD") || t.is("DEALLOCATE"));
        if !more {
            return resets.then_some(Effect::Reset);
        }
    }
}

/// The first reason in `sql` to pin its session, if any.
#[cfg(test)]
fn reason(sql: &str) -> Option<PinReason> {
    match effect(sql) {
        Some(Effect::Pin(reason)) => Some(reason),
        _ => None,
    }
}

/// Whether `text` mentions, in any case and anywhere (inside literals and identifiers too), a
/// word at least one of which every pinning or resetting statement contains (`SET` also stands
/// for `RESET` and `set_config`, `TEMP` for `TEMPORARY`). A quick test: it may say yes when the
/// lexer would find nothing, never the reverse.
fn mentions_keyword(text: &[u8]) -> bool {
    let at = |i: usize, word: &[u8]| {
        text.get(i..i + word.len())
            .is_some_and(|s| s.eq_ignore_ascii_case(word))
    };
    // `| 0x20` lower-cases an ASCII letter and leaves no other byte equal to one.
    (0..text.len()).any(|i| match text[i] | 0x20 {
        b's' => at(i, b"SET"),
        b'l' => at(i, b"LISTEN") || at(i, b"LOAD"),
        b'p' => at(i, b"PREPARE"),
        b't' => at(i, b"TEMP"),
        b'd' => at(i, b"DECLARE") || at(i, b"DISCARD") || at(i, b"DEALLOCATE"),
        b'a' => at(i, b"ADVISORY"),
        _ => false,
    })
}

const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "PG_ADVISORY_LOCK",
    "PG_ADVISORY_LOCK_SHARED",
    "PG_TRY_ADVISORY_LOCK",
    "PG_TRY_ADVISORY_LOCK_SHARED",
];

fn statement_reason(tokens: &[Token]) -> Option<PinReason> {
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(w)) => *w,
        _ => "",
    };
    let is = |i: usize, keyword: &str| word(i).eq_ignore_ascii_case(keyword);
    let temp = |i: usize| is(i, "TEMP") || is(i, "TEMPORARY");
    if is(0, "SET") {
        let session = !(is(1, "LOCAL") || is(1, "TRANSACTION") || is(1, "CONSTRAINTS"));
        if session && !sets_followed(tokens) {
            return Some(PinReason::Set);
        }
    } else if is(0, "LISTEN") {
        return Some(PinReason::Listen);
    } else if is(0, "PREPARE") && !is(1, "TRANSACTION") {
        return Some(PinReason::Prepare);
    } else if is(0, "LOAD") {
        return Some(PinReason::Load);
    } else if is(0, "CREATE") {
        if temp(1) || ((is(1, "GLOBAL") || is(1, "LOCAL")) && temp(2)) {
            return Some(PinReason::TempObject);
        }
    } else if is(0, "DECLARE") && (1..tokens.len()).any(|i| is(i, "WITH") && is(i + 1, "HOLD")) {
        return Some(PinReason::HoldCursor);
    }
    // SELECT … INTO TEMP, and functions anywhere in the statement.
    for (i, token) in tokens.iter().enumerate() {
        let Token::Word(w) = token else { continue };
        if w.eq_ignore_ascii_case("INTO") && temp(i + 1) {
            return Some(PinReason::TempObject);
        }
        if tokens.get(i + 1) != Some(&Token::Punct(b'(')) {
            continue;
        }
        if SESSION_ADVISORY_LOCKS
            .iter()
            .any(|f| w.eq_ignore_ascii_case(f))
        {
            return Some(PinReason::AdvisoryLock);
        }
        if w.eq_ignore_ascii_case("SET_CONFIG")
            && set_config_is_session(&tokens[i + 1..])
            && !matches!(tokens.get(i + 2), Some(Token::Str(name)) if is_followed(name))
        {
            return Some(PinReason::Set);
        }
    }
    None
}

/// A lone `SET [SESSION] name {TO | =} value` with one plain value (a word, a number or a
/// string), which a transaction-mode client may carry from connection to connection as it
/// carries its startup settings: the setting's name (an unquoted one in lower case) and value.
/// `None` for anything else (several statements, `LOCAL`, lists, `DEFAULT`, the special forms),
/// which pins as before.
pub fn carried_set(sql: &str) -> Option<(String, String)> {
    let mut lexer = Lexer::new(sql);
    let mut tokens = Vec::new();
    let more = lexer.statement(&mut tokens);
    let mut rest = Vec::new();
    if more && (lexer.statement(&mut rest) || !rest.is_empty()) {
        return None;
    }
    let at = if tokens.get(1).is_some_and(|t| t.is("SESSION")) {
        2
    } else {
        1
    };
    if !tokens.first().is_some_and(|t| t.is("SET")) || tokens.len() != at + 3 {
        return None;
    }
    let name = match tokens[at] {
        Token::Word(w)
            if ![
                "LOCAL",
                "TIME",
                "NAMES",
                "ROLE",
                "SCHEMA",
                "AUTHORIZATION",
                "CHARACTERISTICS",
                "TRANSACTION",
                "CONSTRAINTS",
                "XML",
            ]
            .iter()
            .any(|k| w.eq_ignore_ascii_case(k)) =>
        {
            w.to_ascii_lowercase()
        }
        Token::Quoted(q) => q.replace("\"\"", "\""),
        _ => return None,
    };
    if !(tokens[at + 1].is("TO") || tokens[at + 1] == Token::Other) {
        return None;
    }
    let value = match tokens[at + 2] {
        Token::Word(w) if !w.eq_ignore_ascii_case("DEFAULT") => w.to_owned(),
        Token::Number(n) => n.to_owned(),
        Token::Str(s) => s.replace("''", "'"),
        _ => return None,
    };
    Some((name, value))
}

/// Whether a `SET` statement sets one of the settings the server reports back, which pgvalet
/// follows from connection to connection instead of pinning: `SET [SESSION] name …`,
/// `SET TIME ZONE …` (TimeZone), `SET NAMES …` (client_encoding).
fn sets_followed(tokens: &[Token]) -> bool {
    let at = if tokens.get(1).is_some_and(|t| t.is("SESSION")) {
        2
    } else {
        1
    };
    match tokens.get(at) {
        Some(t) if t.is("TIME") => tokens.get(at + 1).is_some_and(|t| t.is("ZONE")),
        Some(t) if t.is("NAMES") => true,
        Some(Token::Word(name) | Token::Quoted(name)) => is_followed(name),
        _ => false,
    }
}

/// For the tokens from `(` on: whether the call's last argument is a literal false (a
/// session-level setting). Anything not plainly true is taken as false.
fn set_config_is_session(tokens: &[Token]) -> bool {
    let mut depth = 0;
    let mut last = None;
    for token in tokens {
        match token {
            Token::Punct(b'(') => depth += 1,
            Token::Punct(b')') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            t if depth == 1 && *t != Token::Punct(b',') => last = Some(t),
            _ => {}
        }
    }
    !matches!(last, Some(t) if t.is("TRUE")) && !matches!(last, Some(Token::Str(s)) if is_true(s))
}

/// A literal that reads as boolean true. Escapes are not decoded: a literal spelled with them
/// reads as not true, which pins (the safe side).
fn is_true(s: &str) -> bool {
    ["t", "true", "on", "yes", "y", "1"]
        .iter()
        .any(|t| s.eq_ignore_ascii_case(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_sets_can_be_carried() {
        let carried = |sql| carried_set(sql);
        let pair = |n: &str, v: &str| Some((n.to_owned(), v.to_owned()));
        assert_eq!(
            carried("SET extra_float_digits = 3"),
            pair("extra_float_digits", "3")
        );
        assert_eq!(
            carried("set session Statement_Timeout to '5s';"),
            pair("statement_timeout", "5s")
        );
        assert_eq!(
            carried("SET \"work_mem\" TO '8MB'"),
            pair("work_mem", "8MB")
        );
        assert_eq!(carried("SET search_path = app"), pair("search_path", "app"));
        assert_eq!(
            carried("set lock_timeout = 'it''s'"),
            pair("lock_timeout", "it's")
        );
        for pinned in [
            "SET search_path = a, b",
            "SET LOCAL work_mem = '8MB'",
            "SET work_mem = DEFAULT",
            "SET TIME ZONE 'UTC'",
            "SET ROLE admin",
            "SET extra_float_digits = -1",
            "SET work_mem = E'8MB'",
            "SET work_mem = '8MB'; SET lock_timeout = 1",
            "select 1",
        ] {
            assert_eq!(carried(pinned), None, "{pinned}");
        }
    }

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
            // Settings the server reports back are followed, not pinned.
            ("SET TimeZone = 'UTC'", None),
            ("set session datestyle to german", None),
            ("SET TIME ZONE 'Europe/Paris'", None),
            ("SET NAMES 'LATIN1'", None),
            ("set \"IntervalStyle\" = iso_8601", None),
            ("select set_config('TimeZone', 'UTC', false)", None),
            (
                "SET TimeZone = 'UTC'; SET work_mem = '8MB'",
                Some(PinReason::Set),
            ),
            ("SET SESSION AUTHORIZATION bob", Some(PinReason::Set)),
            (
                "select set_config('work_mem', '8MB', false)",
                Some(PinReason::Set),
            ),
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
    fn words_are_read_as_postgres_reads_them() {
        // Keywords are ASCII, in any case; non-ASCII letters belong to identifiers.
        assert_eq!(reason("sEt search_path = x"), Some(PinReason::Set));
        assert_eq!(reason("select ſet_config('a', 'b', false)"), None);
        assert_eq!(
            reason("select données from t; listen café"),
            Some(PinReason::Listen)
        );
        for sql in [
            "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
            "select reset_count, temperature, loaded, preparer from t",
            "insert into t (settings) values ('SET x')",
            "select a$b, $1, $ from t",
        ] {
            assert_eq!(effect(sql), None, "{sql}");
        }
    }

    #[test]
    fn unfinished_sql_is_read_to_its_end() {
        for sql in [
            "select 'SET x",
            "select E'\\",
            "select \"listen",
            "/* listen /* x */",
            "select $tag$ listen",
            "select $",
            "-- set x",
            "é",
        ] {
            assert_eq!(effect(sql), None, "{sql}");
        }
        assert_eq!(reason("listen x; select 'oops"), Some(PinReason::Listen));
    }

    /// The quick test in [`effect`] may only skip SQL the lexer would pass too: every text
    /// with an effect mentions a keyword, cut or changed however.
    #[test]
    fn the_quick_test_never_hides_an_effect() {
        let corpus = [
            "SET search_path = app",
            "create global temporary table t (x int)",
            "select * into temp t from x",
            "SELECT pg_try_advisory_lock_shared(1, 2)",
            "declare c cursor with hold for select 1",
            "select set_config('app.user', 'x', false)",
            "LOAD 'auto_explain'; RESET ALL; DISCARD PLANS; DEALLOCATE q",
            "PREPARE q AS select 1",
        ];
        for sql in corpus {
            for from in 0..sql.len() {
                for to in from..=sql.len() {
                    let Some(part) = sql.get(from..to) else {
                        continue;
                    };
                    if lexed_effect(part).is_some() {
                        assert!(mentions_keyword(part.as_bytes()), "{part}");
                    }
                }
            }
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
