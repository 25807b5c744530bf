//! What the backend still owes: the ReadyForQuery messages for Query, Sync and FunctionCall
//! messages forwarded, extended-protocol messages not yet followed by a Sync, and COPY FROM
//! STDIN, during which the backend ignores Syncs. The relay releases a connection in
//! transaction mode only when this says the backend owes nothing.

/// Requests sent to the backend that it has not yet answered with ReadyForQuery.
#[derive(Debug, Default)]
pub struct InFlight {
    /// Query, Sync and FunctionCall messages forwarded, minus ReadyForQuery messages seen.
    awaiting_ready: usize,
    /// Extended-protocol messages forwarded since the last Sync.
    unsynced: bool,
    /// Syncs forwarded since the last Execute or Query: if that started a COPY FROM STDIN,
    /// the backend read them in copy-in mode and ignored them.
    syncs_since_execute: usize,
    /// The client is sending COPY data; Syncs are ignored until CopyDone or CopyFail.
    copy_in: bool,
    /// The last statement started with Execute (extended protocol), not Query: a COPY it
    /// began is finished by the client's next Sync.
    extended: bool,
}

/// What forwarding one client message means for the answers owed.
pub struct Owed {
    /// The backend will answer this message with a ReadyForQuery.
    pub ready: bool,
    /// Earlier Syncs the backend turned out to ignore: their ReadyForQuery will not come.
    pub voided: usize,
}

impl InFlight {
    pub fn client_message(&mut self, tag: u8) -> Owed {
        let mut owed = Owed {
            ready: false,
            voided: 0,
        };
        match tag {
            b'Q' | b'F' => {
                self.awaiting_ready += 1;
                self.syncs_since_execute = 0;
                self.extended = false;
                owed.ready = true;
            }
            b'S' if self.copy_in => {}
            b'S' => {
                self.awaiting_ready += 1;
                self.syncs_since_execute += 1;
                self.unsynced = false;
                owed.ready = true;
            }
            b'E' => {
                self.syncs_since_execute = 0;
                self.extended = true;
                self.unsynced = true;
            }
            b'P' | b'B' | b'D' | b'C' | b'H' => self.unsynced = true,
            b'd' | b'c' | b'f' => {
                if !self.copy_in {
                    // The copy began at the last Execute or Query; any Sync sent after it
                    // reached the backend in copy-in mode.
                    owed.voided = std::mem::take(&mut self.syncs_since_execute);
                    self.awaiting_ready = self.awaiting_ready.saturating_sub(owed.voided);
                    self.copy_in = true;
                }
                if tag != b'd' {
                    self.copy_in = false;
                    // After an extended-protocol COPY the backend answers at the next Sync.
                    self.unsynced |= self.extended;
                }
            }
            _ => {}
        }
        owed
    }

    pub fn ready(&mut self) {
        self.awaiting_ready = self.awaiting_ready.saturating_sub(1);
    }

    pub fn idle(&self) -> bool {
        self.awaiting_ready == 0 && !self.unsynced && !self.copy_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut InFlight, tags: &[u8]) -> (usize, usize) {
        let (mut ready, mut voided) = (0, 0);
        for &t in tags {
            let owed = f.client_message(t);
            ready += usize::from(owed.ready);
            voided += owed.voided;
        }
        (ready, voided)
    }

    #[test]
    fn extended_copy_in_owes_one_ready_and_is_busy_until_it() {
        let mut f = InFlight::default();
        // tokio-postgres: Bind, Execute, Sync (read in copy-in mode and ignored), data, done, Sync.
        assert_eq!(feed(&mut f, b"BES"), (1, 0));
        assert_eq!(feed(&mut f, b"dd"), (0, 1), "the first data voids the Sync");
        assert!(!f.idle(), "busy while copying");
        assert_eq!(
            feed(&mut f, b"S"),
            (0, 0),
            "a Sync during the copy is ignored too"
        );
        assert_eq!(feed(&mut f, b"c"), (0, 0));
        assert!(!f.idle(), "the backend answers at the next Sync");
        assert_eq!(feed(&mut f, b"S"), (1, 0));
        f.ready();
        assert!(f.idle());
    }

    #[test]
    fn simple_copy_in_ends_with_its_query() {
        let mut f = InFlight::default();
        assert_eq!(feed(&mut f, b"Qddc"), (1, 0));
        assert!(!f.idle());
        f.ready();
        assert!(f.idle());
    }

    #[test]
    fn pipelined_syncs_each_owe_a_ready() {
        let mut f = InFlight::default();
        assert_eq!(feed(&mut f, b"PBDESBES"), (2, 0));
        f.ready();
        assert!(!f.idle());
        f.ready();
        assert!(f.idle());
    }
}
