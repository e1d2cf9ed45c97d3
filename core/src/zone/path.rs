//! Zone names: `/`, `/eu`, `/eu/fra`, `/eu/fra/host7`.
//!
//! A path is stored as one shared string so that cloning it (every row and
//! every table key holds one) costs a reference count, not an allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Deepest tree we accept: root plus this many segments. Astrolabe's own
/// deployments used 3 to 5 levels; 16 leaves room without inviting abuse.
pub const MAX_DEPTH: usize = 16;
/// Longest segment, in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;
/// Longest whole path, in bytes.
pub const MAX_PATH_LEN: usize = 255;

/// Why a zone path or segment was refused; the message names the path and the
/// limit it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZonePathError {
    /// The empty string: the root is written `/`.
    #[error("zone path is empty; use \"/\" for the root")]
    Empty,
    /// A path that does not start with `/`.
    #[error("zone path {0:?} must start with '/'")]
    NotAbsolute(String),
    /// Two slashes in a row, or a trailing slash.
    #[error("zone path {path:?} has an empty segment at byte {at} (\"//\" or a trailing '/')")]
    EmptySegment {
        /// The path as given.
        path: String,
        /// Byte offset of the empty segment.
        at: usize,
    },
    /// A character outside letters, digits, `-`, `_` and `.`.
    #[error("zone path {path:?} has bad character {ch:?} at byte {at}: segments use letters, digits, '-', '_' and '.'")]
    BadCharacter {
        /// The path as given.
        path: String,
        /// The first character refused.
        ch: char,
        /// Its byte offset in the path.
        at: usize,
    },
    /// More than `MAX_DEPTH` segments.
    #[error("zone path {path:?} is {depth} levels deep; the limit is {MAX_DEPTH}")]
    TooDeep {
        /// The path as given.
        path: String,
        /// Its number of segments.
        depth: usize,
    },
    /// A segment longer than `MAX_SEGMENT_LEN` bytes.
    #[error("zone path {path:?} has a segment of {len} bytes; the limit is {MAX_SEGMENT_LEN}")]
    SegmentTooLong {
        /// The path as given.
        path: String,
        /// Length of the long segment, in bytes.
        len: usize,
    },
    /// A path longer than `MAX_PATH_LEN` bytes.
    #[error("zone path is {len} bytes long; the limit is {MAX_PATH_LEN}")]
    TooLong {
        /// Length of the path, in bytes.
        len: usize,
    },
    /// A segment given to `ZonePath::child` that is not a valid zone name.
    #[error("segment {0:?} is not a valid zone name")]
    BadSegment(String),
}

/// A validated, absolute zone path. The root is `/`.
/// The depth is kept beside the text: it is asked for every received row.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZonePath(Arc<str>, u8);

fn segment_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

impl ZonePath {
    /// The root zone, `/`.
    pub fn root() -> Self {
        ZonePath(Arc::from("/"), 0)
    }

    /// Validates `s` as an absolute path (`/`, `/eu/fra/host7`) within the
    /// length and depth limits.
    pub fn parse(s: &str) -> Result<Self, ZonePathError> {
        if s.is_empty() {
            return Err(ZonePathError::Empty);
        }
        if s.len() > MAX_PATH_LEN {
            return Err(ZonePathError::TooLong { len: s.len() });
        }
        if !s.starts_with('/') {
            return Err(ZonePathError::NotAbsolute(s.to_string()));
        }
        if s == "/" {
            return Ok(Self::root());
        }
        let mut depth = 0;
        let mut offset = 1;
        for segment in s[1..].split('/') {
            if segment.is_empty() {
                return Err(ZonePathError::EmptySegment {
                    path: s.to_string(),
                    at: offset,
                });
            }
            if segment.len() > MAX_SEGMENT_LEN {
                return Err(ZonePathError::SegmentTooLong {
                    path: s.to_string(),
                    len: segment.len(),
                });
            }
            if let Some((i, ch)) = segment.char_indices().find(|(_, c)| !segment_char_ok(*c)) {
                return Err(ZonePathError::BadCharacter {
                    path: s.to_string(),
                    ch,
                    at: offset + i,
                });
            }
            depth += 1;
            offset += segment.len() + 1;
        }
        if depth > MAX_DEPTH {
            return Err(ZonePathError::TooDeep {
                path: s.to_string(),
                depth,
            });
        }
        Ok(ZonePath(Arc::from(s), depth as u8))
    }

    /// The path as written, `/eu/fra`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        &*self.0 == "/"
    }

    /// Number of segments: 0 for the root, 3 for `/eu/fra/host7`.
    pub fn depth(&self) -> usize {
        self.1 as usize
    }

    /// The segments from the top: `eu`, `fra`, `host7`; none for the root.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The last segment; empty for the root.
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// The enclosing zone; `None` for the root.
    pub fn parent(&self) -> Option<ZonePath> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        if cut == 0 {
            Some(Self::root())
        } else {
            Some(ZonePath(Arc::from(&self.0[..cut]), self.1 - 1))
        }
    }

    /// The zone one level down named `segment`, checked like a parsed path.
    pub fn child(&self, segment: &str) -> Result<ZonePath, ZonePathError> {
        if segment.is_empty()
            || segment.len() > MAX_SEGMENT_LEN
            || !segment.chars().all(segment_char_ok)
        {
            return Err(ZonePathError::BadSegment(segment.to_string()));
        }
        let s = if self.is_root() {
            format!("/{segment}")
        } else {
            format!("{}/{segment}", self.0)
        };
        ZonePath::parse(&s)
    }

    /// The ancestor at `depth` (0 = root). `None` if deeper than this path.
    pub fn ancestor(&self, depth: usize) -> Option<ZonePath> {
        let own = self.depth();
        if depth > own {
            return None;
        }
        if depth == own {
            return Some(self.clone());
        }
        if depth == 0 {
            return Some(Self::root());
        }
        let mut slashes = 0;
        for (i, b) in self.0.bytes().enumerate() {
            if b == b'/' {
                slashes += 1;
                if slashes == depth + 1 {
                    return Some(ZonePath(Arc::from(&self.0[..i]), depth as u8));
                }
            }
        }
        Some(self.clone())
    }

    /// Every ancestor from the root down to the parent, excluding self.
    pub fn ancestors(&self) -> Vec<ZonePath> {
        (0..self.depth()).filter_map(|d| self.ancestor(d)).collect()
    }

    /// Whether `other` lies strictly below this zone (a zone is not its own
    /// ancestor).
    pub fn is_ancestor_of(&self, other: &ZonePath) -> bool {
        if self.is_root() {
            return !other.is_root();
        }
        other.0.len() > self.0.len()
            && other.0.starts_with(&*self.0)
            && other.0.as_bytes()[self.0.len()] == b'/'
    }

    /// Whether `other` is this zone or lies below it.
    pub fn contains(&self, other: &ZonePath) -> bool {
        self == other || self.is_ancestor_of(other)
    }

    /// Depth of the deepest zone that contains both paths.
    pub fn common_depth(&self, other: &ZonePath) -> usize {
        self.segments()
            .zip(other.segments())
            .take_while(|(a, b)| a == b)
            .count()
    }
}

impl fmt::Display for ZonePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ZonePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZonePath({})", &self.0)
    }
}

impl std::str::FromStr for ZonePath {
    type Err = ZonePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ZonePath::parse(s)
    }
}

impl Serialize for ZonePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ZonePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ZonePath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_navigates() {
        let p = ZonePath::parse("/eu/fra/host7").unwrap();
        assert_eq!(p.depth(), 3);
        assert_eq!(p.name(), "host7");
        assert_eq!(p.parent().unwrap().as_str(), "/eu/fra");
        assert_eq!(p.ancestor(0).unwrap(), ZonePath::root());
        assert_eq!(p.ancestor(1).unwrap().as_str(), "/eu");
        assert_eq!(p.ancestor(2).unwrap().as_str(), "/eu/fra");
        assert_eq!(p.ancestor(3).unwrap(), p);
        assert_eq!(p.ancestors().len(), 3);
        assert!(ZonePath::root().is_ancestor_of(&p));
        assert!(ZonePath::parse("/eu").unwrap().is_ancestor_of(&p));
        assert!(!ZonePath::parse("/e").unwrap().is_ancestor_of(&p));
        assert_eq!(p.common_depth(&ZonePath::parse("/eu/ams/h1").unwrap()), 1);
        assert_eq!(ZonePath::root().child("us").unwrap().as_str(), "/us");
        assert_eq!(ZonePath::root().depth(), 0);
        assert_eq!(ZonePath::root().parent(), None);
    }

    #[test]
    fn refuses_bad_paths_with_reasons() {
        assert_eq!(ZonePath::parse(""), Err(ZonePathError::Empty));
        assert!(matches!(
            ZonePath::parse("eu"),
            Err(ZonePathError::NotAbsolute(_))
        ));
        assert!(matches!(
            ZonePath::parse("/eu//fra"),
            Err(ZonePathError::EmptySegment { at: 4, .. })
        ));
        assert!(matches!(
            ZonePath::parse("/eu/"),
            Err(ZonePathError::EmptySegment { .. })
        ));
        assert!(matches!(
            ZonePath::parse("/eu/fr a"),
            Err(ZonePathError::BadCharacter { ch: ' ', at: 6, .. })
        ));
        let deep = "/a".repeat(MAX_DEPTH + 1);
        assert!(matches!(
            ZonePath::parse(&deep),
            Err(ZonePathError::TooDeep { .. })
        ));
        let long_segment = format!("/{}", "x".repeat(MAX_SEGMENT_LEN + 1));
        assert!(matches!(
            ZonePath::parse(&long_segment),
            Err(ZonePathError::SegmentTooLong { .. })
        ));
        let long = "/abcdefgh".repeat(40);
        assert!(matches!(
            ZonePath::parse(&long),
            Err(ZonePathError::TooLong { .. })
        ));
        let msg = ZonePath::parse("/eu/fr a").unwrap_err().to_string();
        assert!(msg.contains("bad character"), "{msg}");
    }

    #[test]
    fn serde_round_trip_validates() {
        let p = ZonePath::parse("/eu/fra").unwrap();
        let bytes = postcard::to_allocvec(&p).unwrap();
        let back: ZonePath = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, p);
        let bad = postcard::to_allocvec(&"no-slash").unwrap();
        assert!(postcard::from_bytes::<ZonePath>(&bad).is_err());
    }
}
