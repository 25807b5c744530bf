//! The relay's backend connection in transaction mode: borrowed at the client's next message,
//! given back once the backend is idle with nothing in flight, and the cancel key pointed at
//! whichever connection serves the client meanwhile.

use bytes::BytesMut;

use super::State;
use crate::config::PoolMode;
use crate::error::ClientError;
use crate::metrics::ClientPhase;
use crate::protocol::messages::{self, Severity};

impl State<'_> {
    /// In transaction mode, gives the backend back once it is idle with nothing in flight.
    pub(super) async fn release_if_idle(&mut self) {
        if self.pool.mode() != PoolMode::Transaction
            || self.pinned.is_some()
            || !self.at_clean_boundary()
            || !self.bufs.from_backend.is_empty()
            || !self.bufs.backend_written()
        {
            return;
        }
        // The connection goes into the boxed future at once, not through this one's state.
        let released = self.backend.take_if(|b| b.status == b'I').map(|backend| {
            self.ticket.serve(None);
            self.client_state.set(ClientPhase::Idle);
            // Boxed, as the borrow in `attach`: see there.
            Box::pin(backend.release(true))
        });
        if let Some(released) = released {
            released.await;
        }
    }

    /// Makes sure a backend is attached, borrowing one in transaction mode.
    pub(super) async fn attach(&mut self) -> Result<(), &'static str> {
        if self.backend.is_some() {
            return Ok(());
        }
        self.client_state.set(ClientPhase::Waiting);
        // Boxed: a borrow may check or set up a connection, a large future, and a session
        // task is as large as its largest state for its whole life, idle or not.
        let e = match Box::pin(self.pool.borrow(&self.settings)).await {
            Ok(backend) => {
                self.client_state.set(ClientPhase::Active);
                self.ticket.serve(
                    backend
                        .key
                        .map(|key| (backend.target.clone(), backend.peer, key)),
                );
                self.backend = Some(backend);
                return Ok(());
            }
            Err(e) => e,
        };
        tracing::info!(pool = %self.pool.name(), error = %e, "no backend connection for a transaction");
        let mut out = BytesMut::new();
        messages::error_response(
            &mut out,
            Severity::Fatal,
            e.sqlstate().unwrap_or("08006"),
            &e.client_message(),
        );
        let kind = e.kind();
        drop(e);
        let _ = self.write_client(&out).await;
        Err(kind)
    }

    pub(super) fn drop_backend(&mut self) {
        self.ticket.serve(None);
        self.backend = None;
    }
}
