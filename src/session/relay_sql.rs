//! What a client's SQL means for the relay: its text in a Query or Parse, the pin or reset it
//! causes, a SET that can be carried instead of pinned, and databases it needs without
//! sessions.

use crate::pool::{Pool, Pooled, Pools};
use crate::session::database_ddl;
use crate::session::pinning::{self, Effect, PinReason};

/// What a transaction-mode client's SQL does to its session. A lone plain `SET` sent while
/// nothing else is under way (`carry`) is not a pin: it is kept in `pending` and, once its
/// ReadyForQuery shows it took, carried with the client's settings to every connection it
/// borrows.
pub(super) fn effect_of(
    sql: &str,
    carry: bool,
    pending: &mut Option<(String, String)>,
) -> Option<Effect> {
    let effect = pinning::effect(sql);
    if carry
        && effect == Some(Effect::Pin(PinReason::Set))
        && let Some(set) = pinning::carried_set(sql)
    {
        *pending = Some(set);
        return None;
    }
    effect
}

/// The SQL of a whole Query or Parse message (tag and length included); `None` for other
/// messages and for text that is not UTF-8.
pub(super) fn query_text(message: &[u8]) -> Option<&str> {
    let body = message.get(5..)?;
    let sql = match message[0] {
        b'Q' => body,
        b'P' => &body[body.iter().position(|&b| b == 0)? + 1..],
        _ => return None,
    };
    std::str::from_utf8(sql.split(|&b| b == 0).next().unwrap_or_default()).ok()
}

/// Closes the idle pooled connections to the databases `sql` needs without sessions (DROP
/// DATABASE and the like), so that a client's own pooled connections do not stand in its way.
pub(super) fn free_databases(pools: &Pools, sql: &str) {
    for database in database_ddl::needing_no_sessions(sql) {
        let closed = pools.close_idle(&database);
        tracing::info!(%database, closed, "closed idle pooled connections to a database a client is dropping or renaming");
    }
}

/// Acts on what a client's SQL does to its session: a pin keeps the backend for the session
/// (the first reason logged and counted); either way the backend is reset before reuse.
pub(super) fn apply(
    effect: Option<Effect>,
    pinned: &mut Option<PinReason>,
    pool: &Pool,
    backend: &mut Pooled,
) {
    let reason = match effect {
        None => return,
        Some(Effect::Reset) => return backend.mark_dirty(),
        Some(Effect::Pin(reason)) => reason,
    };
    backend.mark_dirty();
    if pinned.is_none() {
        *pinned = Some(reason);
        pool.count_pin(reason.as_str());
        tracing::info!(
            pool = %pool.name(), %reason,
            "session pinned to its backend connection until it ends: it made state that cannot move"
        );
    }
}
