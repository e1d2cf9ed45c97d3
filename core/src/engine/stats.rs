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
    /// Every refusal, in the order of its counter index (`Refusal as usize`).
    pub const ALL: [Refusal; 5] = [
        Refusal::NotShared,
        Refusal::WrongKind,
        Refusal::ZoneConflict,
        Refusal::FromTheFuture,
        Refusal::TooLarge,
    ];

    /// The refusal's `reason` label in `astrolabe_gossip_refused_rows_total`.
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

/// What one engine has done since it started, for `astrolabe_gossip_*` and the
/// simulator's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Gossip rounds run.
    pub rounds: u64,
    /// Datagrams sent.
    pub messages_sent: u64,
    /// Bytes of engine messages sent (transport framing not included).
    pub bytes_sent: u64,
    /// Messages taken in (own and zone-conflicting ones included).
    pub messages_received: u64,
    /// Received rows installed as fresher than what was held.
    pub rows_installed: u64,
    /// Received rows not fresher than what was held or remembered.
    pub rows_stale: u64,
    /// Rows dropped for having expired.
    pub rows_expired: u64,
    /// Own rows (the leaf's or an ancestor's) pushed to the sibling zones.
    pub pushes: u64,
    /// Messages sent by kind: digest, request, rows, refresh.
    pub sent_by_kind: [u64; 4],
    /// Rows sent in `Rows` and `Push` messages.
    pub rows_sent: u64,
    /// Heartbeats sent in `Refresh` messages.
    pub refreshes_sent: u64,
    /// Relays of pushed rows into this agent's part of the tree, one per
    /// target.
    pub forwards: u64,
    /// Refusals by `Refusal as usize`.
    pub refused: [u64; Refusal::ALL.len()],
    /// Rows refused by a limit (`limits`), by `Limit as usize`.
    pub limit_refused: [u64; super::limits::Limit::ALL.len()],
}

impl Stats {
    /// Counts one refusal.
    pub fn refuse(&mut self, why: Refusal) {
        self.refused[why as usize] += 1;
    }

    /// Refusals of this kind so far.
    pub fn refused(&self, why: Refusal) -> u64 {
        self.refused[why as usize]
    }

    /// Counts one row refused by a limit.
    pub fn refuse_limit(&mut self, limit: super::limits::Limit) {
        self.limit_refused[limit as usize] += 1;
    }

    /// Rows refused by this limit so far.
    pub fn limit_refused(&self, limit: super::limits::Limit) -> u64 {
        self.limit_refused[limit as usize]
    }
}
