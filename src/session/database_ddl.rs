//! Statements that need a database without sessions: `DROP DATABASE x`, `ALTER DATABASE x
//! RENAME …` and `CREATE DATABASE … TEMPLATE x` fail while any session is connected to `x`.
//! Direct, a client that has disconnected from `x` has no session there any more; through a
//! pool its connection lingers idle. The relay closes the idle pooled connections to such a
//! database before it forwards the statement (clients still connected to it make it fail as they
//! do direct).

use super::lexer::{Lexer, Token};

/// The databases `sql` needs without sessions, as Postgres reads their names.
pub fn needing_no_sessions(sql: &str) -> Vec<String> {
    let mut found = Vec::new();
    if !mentions_database(sql.as_bytes()) {
        return found;
    }
    let mut lexer = Lexer::new(sql);
    let mut tokens = Vec::new();
    loop {
        tokens.clear();
        let more = lexer.statement(&mut tokens);
        let is = |i: usize, word: &str| tokens.get(i).is_some_and(|t| t.is(word));
        let name_at = |i: usize| tokens.get(i).and_then(name);
        if is(0, "DROP") && is(1, "DATABASE") {
            let at = if is(2, "IF") && is(3, "EXISTS") { 4 } else { 2 };
            found.extend(name_at(at));
        } else if is(0, "ALTER") && is(1, "DATABASE") && is(3, "RENAME") {
            found.extend(name_at(2));
        } else if is(0, "CREATE")
            && is(1, "DATABASE")
            && let Some(at) = (3..tokens.len()).find(|&i| is(i, "TEMPLATE"))
        {
            // `TEMPLATE name` or `TEMPLATE = name`.
            let at = if tokens.get(at + 1) == Some(&Token::Other) {
                at + 2
            } else {
                at + 1
            };
            found.extend(name_at(at));
        }
        if !more {
            return found;
        }
    }
}

/// A database name as written: an unquoted one folded to lower case, a quoted one as it is.
fn name(token: &Token) -> Option<String> {
    match token {
        Token::Word(w) => Some(w.to_ascii_lowercase()),
        Token::Quoted(q) => Some(q.replace("\"\"", "\"")),
        Token::Str(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Whether `DATABASE` appears anywhere, in any case: most SQL is passed without lexing.
fn mentions_database(text: &[u8]) -> bool {
    (0..text.len()).any(|i| {
        text[i] | 0x20 == b'd'
            && text
                .get(i..i + 8)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"DATABASE"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_databases_that_must_be_free() {
        let cases: [(&str, &[&str]); 8] = [
            ("DROP DATABASE scratch", &["scratch"]),
            (
                "drop database if exists \"Scratch\" with (force)",
                &["Scratch"],
            ),
            ("ALTER DATABASE Old RENAME TO new", &["old"]),
            ("alter database old set work_mem = '1MB'", &[]),
            ("CREATE DATABASE copy TEMPLATE = base", &["base"]),
            (
                "create database copy owner me template base encoding 'UTF8'",
                &["base"],
            ),
            ("select 1; drop database a; drop database b", &["a", "b"]),
            ("select 'drop database x' -- drop database y", &[]),
        ];
        for (sql, want) in cases {
            assert_eq!(needing_no_sessions(sql), want, "{sql}");
        }
        assert!(needing_no_sessions("select * from orders").is_empty());
    }
}
