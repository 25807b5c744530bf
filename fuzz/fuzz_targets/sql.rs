//! The SQL pgvalet reads in a client's Query and Parse messages (`session::lexer`, and what
//! the relay decides with it). Properties:
//! - the quick keyword test that lets most SQL pass unlexed never misses a statement that pins
//!   or resets the session;
//! - a SET the relay carries instead of pinning is a SET it sees as a pin or follows, and its
//!   value, written back as pgvalet writes settings, reads as the same setting;
//! - statement names rewritten in SQL (EXECUTE, DEALLOCATE) leave every other token as it was;
//! - the lexer stops, and every text it hands out is the input's own.
#![no_main]

use std::collections::HashSet;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgvalet::backend::ClientSettings;
use pgvalet::session::fuzzing::{
    Effect, Expected, Lexer, PinReason, Statements, Token, carried_set, effect, lexed_effect,
    needing_no_sessions,
};

fn tokens(sql: &str) -> Vec<Vec<Token<'_>>> {
    let mut lexer = Lexer::new(sql);
    let mut all = Vec::new();
    loop {
        let mut tokens = Vec::new();
        let more = lexer.statement(&mut tokens);
        for t in &tokens {
            if let Token::Word(s)
            | Token::Str(s)
            | Token::EscapedStr(s)
            | Token::Quoted(s)
            | Token::Number(s) = t
            {
                let (at, base) = (s.as_ptr() as usize, sql.as_ptr() as usize);
                assert!(
                    at >= base && at + s.len() <= base + sql.len(),
                    "a slice of the input"
                );
            }
        }
        all.push(tokens);
        if !more {
            return all;
        }
        assert!(all.len() <= sql.len() + 1, "the lexer moves on");
    }
}

/// Client statements registered as the relay registers them (Parse messages).
fn statements() -> Statements {
    let mut s = Statements::numbered(1);
    let (mut on_backend, mut expected, mut out) =
        (HashSet::new(), Expected::default(), BytesMut::new());
    for name in ["s1", "S1", "a b", "q\"", "p"] {
        let body = [name.as_bytes(), b"\0select 1\0\0\0"].concat();
        let mut message = vec![b'P'];
        message.extend_from_slice(&(4 + body.len() as u32).to_be_bytes());
        message.extend_from_slice(&body);
        s.rewrite(&message, &mut on_backend, &mut expected, &mut out)
            .expect("a well-formed Parse");
    }
    s
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let before = tokens(sql);
    let effect = effect(sql);
    assert_eq!(effect, lexed_effect(sql), "the quick test missed {sql:?}");
    let _ = needing_no_sessions(sql);

    if let Some((name, value)) = carried_set(sql) {
        // A SET of a setting the server reports (followed, not pinned), or one that pins.
        assert!(
            matches!(effect, None | Some(Effect::Pin(PinReason::Set))),
            "{sql:?}: {effect:?}"
        );
        let mut settings = ClientSettings::default();
        settings.set(&name, &value);
        let written = ClientSettings::default().change_to(&settings);
        let read = tokens(&written);
        let strings: Vec<&str> = read
            .iter()
            .flatten()
            .filter_map(|t| match t {
                Token::Str(s) => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(strings, [name.as_str(), value.as_str()], "{written}");
    }

    let mut s = statements();
    let (mut on_backend, mut expected, mut out) =
        (HashSet::new(), Expected::default(), BytesMut::new());
    if let Some((rewritten, _)) = s.rewrite_sql(sql, &mut on_backend, &mut expected, &mut out) {
        let after = tokens(&rewritten);
        assert_eq!(before.len(), after.len(), "{sql:?} -> {rewritten:?}");
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(b.len(), a.len(), "{sql:?} -> {rewritten:?}");
            for (tb, ta) in b.iter().zip(a) {
                let renamed = matches!(
                    (tb, ta),
                    (Token::Word(_) | Token::Quoted(_), Token::Quoted(n)) if n.starts_with("pgv1_")
                );
                assert!(
                    renamed || tb == ta,
                    "{tb:?} became {ta:?}: {sql:?} -> {rewritten:?}"
                );
            }
        }
    }
});
