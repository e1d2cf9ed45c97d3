//! Zone names, rows, values and the hybrid logical clock.

mod fnv;
mod hlc;
mod path;
mod row;
mod value;

pub use fnv::{fnv1a64, Fnv1a32, Fnv1a64};
pub use hlc::{Hlc, HlcClock};
pub use path::{ZonePath, ZonePathError, MAX_DEPTH, MAX_PATH_LEN, MAX_SEGMENT_LEN};
pub use row::{
    state_of, varint_len, AgentId, Body, Freshness, Row, SharedBody, ATTR_ADDR, ATTR_CONTACTS,
    ATTR_ID, ATTR_MEMBERS, ATTR_REPORTING,
};
pub use value::{Attributes, Value};
