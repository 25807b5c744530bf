//! Named prepared statements in transaction mode. A client prepares `s1` on whatever backend
//! it has at the time and uses it later on another one. pgvalet renames every client statement
//! to a name unique for the life of the process, remembers its Parse, and, when a Bind or
//! Describe reaches a backend that lacks the statement, sends the Parse there first and hides
//! the ParseComplete it causes from the client.
//!
//! Which ParseComplete to hide is known from order alone: the backend answers Parse messages
//! in the order they were sent, and after an error skips everything up to the next Sync.
//!
//! A Parse of a name the client already uses must fail as Postgres fails it, at its place in
//! the pipeline: the backend must see an error there, so that it skips what follows and undoes
//! the pipeline's implicit transaction. pgvalet sends in its place the same query as the
//! unnamed statement (so a wrong query fails as it would, first) and a Describe of a statement
//! that cannot exist; the backend's answer to that Describe becomes, for the client, Postgres'
//! `42P05 prepared statement "NAME" already exists`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes, BytesMut};

use super::lexer::{Lexer, Token};

/// Session numbers for statement names, never reused while the process lives.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// A message the client sent that the relay must understand to rename statements.
pub fn wanted(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'C')
}

/// The statement a Describe names in place of a refused Parse: no client statement has this
/// name on a backend (they are all renamed), so the Describe always fails.
const REFUSAL: &[u8] = b"D\0\0\0\x24Spgvalet: statement name in use\0";

/// What the backend will answer that concerns the relay, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A ParseComplete; `hide` when pgvalet sent the Parse itself; `id` the number of the
    /// client's statement it prepares (0 for the unnamed statement).
    ParseComplete { hide: bool, id: u64 },
    /// A ReadyForQuery (for a Sync or a simple Query).
    Ready,
    /// The ReadyForQuery of a Sync pgvalet sent itself, to hide from the client.
    HiddenReady,
    /// The error of the Describe sent in place of a refused Parse.
    Refusal,
}

/// The order of answers owed by the backend.
#[derive(Debug, Default)]
pub struct Expected {
    owed: VecDeque<Expect>,
    /// The statement name of each [`Expect::Refusal`] owed, in order.
    refused: VecDeque<String>,
}

impl Expected {
    pub fn push(&mut self, e: Expect) {
        self.owed.push_back(e);
    }

    /// Forgets the ReadyForQuery owed for the most recent Sync (the backend ignored it).
    pub fn void_last_ready(&mut self) {
        if let Some(i) = self.owed.iter().rposition(|e| *e == Expect::Ready) {
            self.owed.remove(i);
        }
    }

    /// A ParseComplete arrived: whether to hide it.
    pub fn parse_complete(&mut self) -> bool {
        match self.owed.front() {
            Some(Expect::ParseComplete { hide, .. }) => {
                let hide = *hide;
                self.owed.pop_front();
                hide
            }
            _ => false,
        }
    }

    /// Whether the backend's next error is the one that stands for a refused Parse. Everything
    /// owed before that Describe has been answered, and the Parse just before it succeeded, so
    /// the next error can only be the Describe's.
    pub fn refusal_next(&self) -> bool {
        self.owed.front() == Some(&Expect::Refusal)
    }

    /// A ReadyForQuery arrived: whether to hide it.
    pub fn ready(&mut self) -> bool {
        while let Some(e) = self.pop() {
            match e {
                Expect::Ready => return false,
                Expect::HiddenReady => return true,
                Expect::ParseComplete { .. } | Expect::Refusal => {}
            }
        }
        false
    }

    fn pop(&mut self) -> Option<Expect> {
        let e = self.owed.pop_front();
        if e == Some(Expect::Refusal) {
            self.refused.pop_front();
        }
        e
    }
}

/// A client's named statements and their server-side names.
#[derive(Debug)]
pub struct Statements {
    session: u64,
    next: u64,
    by_client_name: HashMap<String, Prepared>,
}

#[derive(Debug, Clone)]
struct Prepared {
    /// The statement's number in this session, part of its server-side name.
    id: u64,
    server_name: String,
    /// The Parse message under the server name, ready to send to another backend.
    parse: Bytes,
}

/// Why a client message could not be rewritten.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl Default for Statements {
    fn default() -> Self {
        Statements {
            session: SESSIONS.fetch_add(1, Ordering::Relaxed),
            next: 0,
            by_client_name: HashMap::new(),
        }
    }
}

impl Statements {
    /// A client's statements under a given session number, so that two runs over the same
    /// messages name their statements alike (the fuzz targets compare such runs).
    #[doc(hidden)]
    pub fn numbered(session: u64) -> Statements {
        Statements {
            session,
            next: 0,
            by_client_name: HashMap::new(),
        }
    }

    /// Rewrites one whole client message (tag and length included) for a backend that has the
    /// server-side statements in `on_backend`, appending what to send to `out` and what the
    /// backend will owe to `expected`.
    pub fn rewrite(
        &mut self,
        message: &[u8],
        on_backend: &mut HashSet<String>,
        expected: &mut Expected,
        out: &mut BytesMut,
    ) -> Result<(), Malformed> {
        let tag = message[0];
        let body = &message[5..];
        match tag {
            b'P' => {
                let (name, rest) = cstr(body).ok_or(Malformed("Parse without a statement name"))?;
                let (query, params) = cstr(rest).ok_or(Malformed("Parse without a query"))?;
                if self.by_client_name.contains_key(name) {
                    // The name is in use (or will be, if a Parse of it still under way
                    // succeeds: when it fails, Postgres skips this one anyway if it follows in
                    // the same pipeline, and pgvalet cannot know sooner if it does not).
                    out.extend_from_slice(&message_with(b'P', &[&[0], rest]));
                    out.extend_from_slice(REFUSAL);
                    expected.push(Expect::ParseComplete { hide: true, id: 0 });
                    expected.push(Expect::Refusal);
                    expected.refused.push_back(name.to_owned());
                    return Ok(());
                }
                // SQL EXECUTE or DEALLOCATE of this client's statements names them as the
                // backends know them (any Parse that needs is sent first, in `out`).
                let rewritten = self.rewrite_sql(query, on_backend, expected, out);
                let rest = match &rewritten {
                    Some((sql, _)) => Cow::Owned([sql.as_bytes(), &[0], params].concat()),
                    None => Cow::Borrowed(rest),
                };
                let mut id = 0;
                if name.is_empty() && rewritten.is_none() {
                    out.extend_from_slice(message);
                } else if name.is_empty() {
                    out.extend_from_slice(&message_with(b'P', &[&[0], &rest]));
                } else {
                    let prepared = self.register(name, &rest);
                    out.extend_from_slice(&prepared.parse);
                    on_backend.insert(prepared.server_name.clone());
                    id = prepared.id;
                }
                expected.push(Expect::ParseComplete { hide: false, id });
            }
            b'B' => {
                let (portal, rest) = cstr(body).ok_or(Malformed("Bind without a portal name"))?;
                let (statement, rest) =
                    cstr(rest).ok_or(Malformed("Bind without a statement name"))?;
                match self.ensure(statement, on_backend, expected, out) {
                    Some(server_name) => {
                        out.extend_from_slice(&message_with(
                            b'B',
                            &[portal.as_bytes(), &[0], server_name.as_bytes(), &[0], rest],
                        ));
                    }
                    None => out.extend_from_slice(message),
                }
            }
            b'D' | b'C' => {
                let (&kind, rest) = body
                    .split_first()
                    .ok_or(Malformed("Describe or Close without a kind"))?;
                let (name, _) = cstr(rest).ok_or(Malformed("Describe or Close without a name"))?;
                if kind != b'S' || name.is_empty() {
                    out.extend_from_slice(message);
                    return Ok(());
                }
                let server_name = if tag == b'C' {
                    // Closing a statement the backend lacks is no error in Postgres.
                    let closed = self.by_client_name.remove(name);
                    if let Some(p) = &closed {
                        on_backend.remove(&p.server_name);
                    }
                    closed.map(|p| p.server_name)
                } else {
                    self.ensure(name, on_backend, expected, out)
                };
                match server_name {
                    Some(server_name) => out.extend_from_slice(&message_with(
                        tag,
                        &[b"S", server_name.as_bytes(), &[0]],
                    )),
                    None => out.extend_from_slice(message),
                }
            }
            _ => out.extend_from_slice(message),
        }
        Ok(())
    }

    /// An ErrorResponse arrived: the backend skips the rest up to the next Sync. The Parses it
    /// skipped (or that failed) made no statement: the backend lacks theirs, and the client's
    /// own are forgotten, their names free again. Returns the statement name when the error is
    /// the one that stands for a refused Parse.
    pub fn error(
        &mut self,
        expected: &mut Expected,
        on_backend: &mut HashSet<String>,
    ) -> Option<String> {
        let refused = expected
            .refusal_next()
            .then(|| expected.refused.front().cloned())
            .flatten();
        while let Some(&e) = expected.owed.front() {
            match e {
                Expect::Ready | Expect::HiddenReady => break,
                Expect::ParseComplete { hide, id } if id != 0 => {
                    let forget = !hide;
                    self.not_prepared(id, forget, on_backend);
                }
                Expect::ParseComplete { .. } | Expect::Refusal => {}
            }
            expected.pop();
        }
        refused
    }

    /// The Parse of statement `id` did not happen: the backend lacks it; with `forget` the
    /// client's name for it is free again.
    fn not_prepared(&mut self, id: u64, forget: bool, on_backend: &mut HashSet<String>) {
        self.by_client_name.retain(|_, p| {
            if p.id != id {
                return true;
            }
            on_backend.remove(&p.server_name);
            !forget
        });
    }

    /// SQL that names this client's protocol-level statements — `EXECUTE name`, `DEALLOCATE
    /// [PREPARE] name` — rewritten to their server-side names, with a Parse appended to `out`
    /// for each the backend lacks (its ParseComplete to hide). `DEALLOCATE` forgets the
    /// statement, `DEALLOCATE ALL` and `DISCARD ALL` all of them, as Postgres does. `None` when
    /// the SQL names none of them; otherwise the new SQL and whether a Parse was sent.
    pub fn rewrite_sql(
        &mut self,
        sql: &str,
        on_backend: &mut HashSet<String>,
        expected: &mut Expected,
        out: &mut BytesMut,
    ) -> Option<(String, bool)> {
        if self.by_client_name.is_empty() || !names_statements(sql) {
            return None;
        }
        let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
        let mut sent_parse = false;
        let mut forget_all = false;
        let mut lexer = Lexer::new(sql);
        let mut tokens = Vec::new();
        loop {
            tokens.clear();
            let more = lexer.statement(&mut tokens);
            let deallocate = tokens.first().is_some_and(|t| t.is("DEALLOCATE"));
            if tokens.first().is_some_and(|t| t.is("DISCARD"))
                && tokens.get(1).is_some_and(|t| t.is("ALL"))
            {
                forget_all = true;
            }
            let uses: Vec<usize> = if deallocate {
                let at = if tokens.get(1).is_some_and(|t| t.is("PREPARE")) {
                    2
                } else {
                    1
                };
                if tokens.get(at).is_some_and(|t| t.is("ALL")) {
                    forget_all = true;
                }
                vec![at]
            } else {
                (1..tokens.len())
                    .filter(|&i| tokens[i - 1].is("EXECUTE"))
                    .collect()
            };
            for at in uses {
                let Some((range, name)) = tokens.get(at).and_then(|t| name_token(sql, t)) else {
                    continue;
                };
                let before = out.len();
                let Some(server_name) = self.ensure(&name, on_backend, expected, out) else {
                    continue;
                };
                sent_parse |= out.len() > before;
                if deallocate {
                    self.by_client_name.remove(&name);
                    on_backend.remove(&server_name);
                }
                edits.push((range, server_name));
            }
            if !more {
                break;
            }
        }
        if forget_all {
            self.by_client_name.clear();
            on_backend.clear();
        }
        if edits.is_empty() {
            return None;
        }
        let mut rewritten = String::with_capacity(sql.len() + 16 * edits.len());
        let mut from = 0;
        for (range, name) in edits {
            rewritten.push_str(&sql[from..range.start]);
            // Quoted, so that it stays one token whatever touches it: `EXECUTE"p"` is valid SQL,
            // and a bare name in its place would run into the keyword. A quote next to it would
            // read as a doubled quote inside it, so a space keeps them apart.
            if rewritten.ends_with('"') {
                rewritten.push(' ');
            }
            rewritten.push('"');
            rewritten.push_str(&name);
            rewritten.push('"');
            if sql[range.end..].starts_with('"') {
                rewritten.push(' ');
            }
            from = range.end;
        }
        rewritten.push_str(&sql[from..]);
        Some((rewritten, sent_parse))
    }

    /// Takes a batch of named Parse messages followed by a Sync, sent while the client has no
    /// backend, and answers it without one: the statements are recorded and prepared on a
    /// backend when first used, and the reply (ParseComplete for each, ReadyForQuery 'I') is
    /// appended to `reply`. Returns the bytes consumed, or `None` when `buf` does not start
    /// with such a batch (or not all of it has arrived).
    ///
    /// This is what keeps a client that prepares synchronously (libpq's PQprepare, as pgbench
    /// -M prepared does) from waiting for a backend that only its own blocked thread can free.
    /// The cost: an invalid statement is reported at its first Bind or Describe, not at Parse.
    pub fn answer_parse_batch(
        &mut self,
        buf: &[u8],
        max: usize,
        reply: &mut BytesMut,
    ) -> Option<usize> {
        let mut pos = 0;
        let mut parses = Vec::new();
        loop {
            let header = buf.get(pos..pos + 5)?;
            let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            if !(4..=max).contains(&len) {
                return None;
            }
            let message = buf.get(pos..pos + 1 + len)?;
            pos += 1 + len;
            match message[0] {
                b'P' => match cstr(&message[5..]) {
                    // A statement that would pin the session, or reset it, needs its backend
                    // now; so does a name in use, which Postgres refuses after the query.
                    Some((name, rest))
                        if !name.is_empty()
                            && parse_effect(rest).is_none()
                            && !self.by_client_name.contains_key(name)
                            && !parses.iter().any(|(n, _)| n == name) =>
                    {
                        parses.push((name.to_owned(), rest.to_vec()))
                    }
                    _ => return None,
                },
                b'S' if !parses.is_empty() => break,
                _ => return None,
            }
        }
        for (name, rest) in &parses {
            self.register(name, rest);
            reply.extend_from_slice(&[b'1', 0, 0, 0, 4]);
        }
        reply.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
        Some(pos)
    }

    /// Records the client's statement `name` under a new server-side name.
    fn register(&mut self, name: &str, rest: &[u8]) -> Prepared {
        self.next += 1;
        let server_name = format!("pgv{:x}_{:x}", self.session, self.next);
        let parse = message_with(b'P', &[server_name.as_bytes(), &[0], rest]);
        let prepared = Prepared {
            id: self.next,
            server_name,
            parse,
        };
        self.by_client_name
            .insert(name.to_owned(), prepared.clone());
        prepared
    }

    /// The server-side name of the client's statement `name`, preparing it on this backend
    /// first if it lacks it. `None` for the unnamed statement and for names the client never
    /// prepared (the backend will say so itself).
    fn ensure(
        &self,
        name: &str,
        on_backend: &mut HashSet<String>,
        expected: &mut Expected,
        out: &mut BytesMut,
    ) -> Option<String> {
        let prepared = self.by_client_name.get(name)?;
        if on_backend.insert(prepared.server_name.clone()) {
            out.extend_from_slice(&prepared.parse);
            expected.push(Expect::ParseComplete {
                hide: true,
                id: prepared.id,
            });
        }
        Some(prepared.server_name.clone())
    }
}

/// Whether SQL may name or drop prepared statements: it mentions EXECUTE, DEALLOCATE or
/// DISCARD in any case.
fn names_statements(sql: &str) -> bool {
    let b = sql.as_bytes();
    b.windows(7).any(|w| w.eq_ignore_ascii_case(b"EXECUTE"))
        || b.windows(10).any(|w| w.eq_ignore_ascii_case(b"DEALLOCATE"))
        || b.windows(7).any(|w| w.eq_ignore_ascii_case(b"DISCARD"))
}

/// A statement name as written in SQL: where it stands and the name it means (an unquoted
/// name folded to lower case, a quoted one as written).
fn name_token(sql: &str, token: &Token) -> Option<(std::ops::Range<usize>, String)> {
    let offset = |text: &str| (text.as_ptr() as usize).checked_sub(sql.as_ptr() as usize);
    match token {
        Token::Word(word) => {
            let at = offset(word)?;
            Some((at..at + word.len(), word.to_ascii_lowercase()))
        }
        Token::Quoted(text) => {
            // The quotes around the text are part of what is replaced.
            let at = offset(text)?.checked_sub(1)?;
            let end = at + text.len() + 2;
            // An unterminated quoted name names nothing.
            (sql.as_bytes().get(end - 1) == Some(&b'"') && end - 1 > at)
                .then(|| (at..end, text.replace("\"\"", "\"")))
        }
        _ => None,
    }
}

/// What the query of a Parse (the body after the statement name) does to its session: pin it,
/// reset it, or nothing.
pub fn parse_effect(after_name: &[u8]) -> Option<super::pinning::Effect> {
    cstr(after_name).and_then(|(query, _)| super::pinning::effect(query))
}

fn cstr(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let nul = bytes.iter().position(|&b| b == 0)?;
    let text = std::str::from_utf8(&bytes[..nul]).ok()?;
    Some((text, &bytes[nul + 1..]))
}

/// A simple Query message.
pub fn query_message(sql: &str) -> Bytes {
    message_with(b'Q', &[sql.as_bytes(), &[0]])
}

fn message_with(tag: u8, parts: &[&[u8]]) -> Bytes {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(tag);
    out.put_u32((len + 4) as u32);
    for p in parts {
        out.put_slice(p);
    }
    out.freeze()
}

#[cfg(test)]
mod tests;
