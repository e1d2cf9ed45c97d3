//! The overlay's view of the zone tree: what the gossip engine knows.

use std::net::SocketAddr;

use crate::engine::Table;
use crate::zone::ZonePath;

/// One child zone as its gossiped row describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChildZone {
    pub zone: ZonePath,
    /// Its representatives (for a host: the host itself).
    pub contacts: Vec<SocketAddr>,
    /// Live hosts below it, by the gossiped count.
    pub members: u64,
}

/// The children of the zones this agent holds a table for (its ancestors).
pub trait Directory {
    fn children(&self, zone: &ZonePath) -> Option<Vec<ChildZone>>;
}

/// The engine's tables as a directory.
pub struct Tables<'a>(pub &'a [Table]);

impl Directory for Tables<'_> {
    fn children(&self, zone: &ZonePath) -> Option<Vec<ChildZone>> {
        let table = self.0.iter().find(|t| t.zone == *zone)?;
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
