//! Counters the engine keeps about itself; exposed as `astrolabe_gossip_*`.

/// Why a received row or message part was not taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The row's table is not one the two agents share.
    NotShared,
    /// A leaf row in an inner table, or a zone row among leaves.
    WrongKind,
    /// Another agent claims this agent's own zone path.
    ZoneConflict,
    /// Issued further in the future than any plausible clock skew.
    FromTheFuture,
    /// A row too large to fit any datagram (never sent).
    TooLarge,
}

impl Refusal {
    pub const ALL: [Refusal; 5] = [
        Refusal::NotShared,
        Refusal::WrongKind,
        Refusal::ZoneConflict,
        Refusal::FromTheFuture,
        Refusal::TooLarge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::NotShared => "not_shared",
            Refusal::WrongKind => "wrong_kind",
            Refusal::ZoneConflict => "zone_conflict",
            Refusal::FromTheFuture => "from_the_future",
            Refusal::TooLarge => "too_large",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rounds: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_received: u64,
    pub rows_installed: u64,
    pub rows_stale: u64,
    pub rows_expired: u64,
    pub pushes: u64,
    /// Messages sent by kind: digest, request, rows, refresh.
    pub sent_by_kind: [u64; 4],
    pub rows_sent: u64,
    pub refreshes_sent: u64,
    pub forwards: u64,
    pub refused: [u64; Refusal::ALL.len()],
    /// Rows refused by a limit (`limits`), by `Limit as usize`.
    pub limit_refused: [u64; super::limits::Limit::ALL.len()],
}

impl Stats {
    pub fn refuse(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }

    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize]
    }

    pub fn refuse_limit(&mut self, limit: super::limits::Limit) {
        self.limit_refused[limit as usize] += 1;
    }

    pub fn limit_refused(&self, limit: super::limits::Limit) -> u64 {
        self.limit_refused[limit as usize]
    }
}
