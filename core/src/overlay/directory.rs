//! The overlay's view of the zone tree: what the gossip engine knows.

use std::net::SocketAddr;

use crate::engine::{Engine, Table};
use crate::zone::ZonePath;

/// One child zone as its gossiped row describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildZone {
    /// The child zone's path.
    pub zone: ZonePath,
    /// Its representatives (for a host: the host itself).
    pub contacts: Vec<SocketAddr>,
    /// Live hosts below it, by the gossiped count.
    pub members: u64,
}

/// The children of the zones this agent holds a table for (its ancestors).
pub trait Directory {
    /// The children of `zone` as this agent's table of it lists them; `None` if
    /// it holds no table for `zone`.
    fn children(&self, zone: &ZonePath) -> Option<Vec<ChildZone>>;

    /// Whether the tables are complete enough to answer for the zones
    /// above this agent's own. A just-started agent is still learning
    /// them (the engine's catch-up): what it would answer for `/eu` counts
    /// only the children it has heard of so far, so it says it is not
    /// ready and the asker turns to the zone's next contact.
    fn ready(&self) -> bool {
        true
    }
}

/// The engine's tables as a directory.
pub struct Tables<'a> {
    tables: &'a [Table],
    ready: bool,
}

impl<'a> Tables<'a> {
    /// The engine's tables, ready once its catch-up is over.
    pub fn of(engine: &'a Engine) -> Tables<'a> {
        Tables {
            tables: engine.tables(),
            ready: !engine.is_catching_up(),
        }
    }
}

impl Directory for Tables<'_> {
    fn ready(&self) -> bool {
        self.ready
    }

    fn children(&self, zone: &ZonePath) -> Option<Vec<ChildZone>> {
        let table = self.tables.iter().find(|t| t.zone == *zone)?;
        Some(
            table
                .rows()
                .filter(|r| !r.is_tombstone())
                .map(|r| ChildZone {
                    zone: r.zone.clone(),
                    contacts: r.contacts().to_vec(),
                    members: r.members(),
                })
                .collect(),
        )
    }
}
