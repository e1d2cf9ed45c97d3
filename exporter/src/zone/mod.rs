//! Zone names, rows, values and the hybrid logical clock.

mod hlc;
mod path;
mod row;
mod value;

pub use hlc::{Hlc, HlcClock};
pub use path::{ZonePath, ZonePathError, MAX_DEPTH, MAX_PATH_LEN, MAX_SEGMENT_LEN};
pub use row::{
    fnv1a64, state_of, varint_len, AgentId, Body, Freshness, Row, SharedBody, ATTR_ADDR,
    ATTR_CONTACTS, ATTR_ID, ATTR_MEMBERS, ATTR_REPORTING,
};
pub use value::{Attributes, Value};
