//! The session's sans-IO parts, reachable from the fuzz targets in `fuzz/`: the SQL lexer and
//! what the relay reads in a client's SQL, statement renaming, and the requests in flight. Not an
//! API: these are the relay's own functions, named here so that fuzzing runs the real code.

pub use super::in_flight::InFlight;
pub use super::lexer::{Lexer, Token};
pub use super::pinning::{Effect, PinReason, carried_set, effect};
pub use super::statements::{Expect, Expected, Statements, wanted};

/// The SQL of a whole Query or Parse message, as the relay reads it.
pub fn query_text(message: &[u8]) -> Option<&str> {
    super::relay_sql::query_text(message)
}

/// [`effect`] without its quick test for keywords: the two must agree.
pub fn lexed_effect(sql: &str) -> Option<Effect> {
    super::pinning::lexed_effect(sql)
}

/// The databases a statement needs without sessions (DROP DATABASE and the like).
pub fn needing_no_sessions(sql: &str) -> Vec<String> {
    super::database_ddl::needing_no_sessions(sql)
}
