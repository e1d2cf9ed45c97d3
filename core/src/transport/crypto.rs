//! Sealed datagrams: gossip encryption, authentication and replay protection.
//!
//! A sealed datagram is
//!
//! ```text
//! 0xA5 | nonce (24 bytes: sender wall clock ms, u64 BE | 16 random bytes) | XChaCha20-Poly1305(datagram) | tag (16)
//! ```
//!
//! The whole plain datagram is sealed, whatever its first byte (gossip frame,
//! overlay frame, ...), so the kinds of frames are invisible on the wire.
//! The overhead is 41 bytes, within the 64 the engine reserves
//! (`TRANSPORT_OVERHEAD_BYTES`). XChaCha's 192-bit nonce makes random nonces
//! safe however many datagrams a key seals.
//!
//! The keyring works like Serf's: the first key seals, every key opens, so
//! a new key is installed everywhere before anyone seals with it, and the
//! old one is removed only once nobody does.
//!
//! Replay: the sender's clock is inside the nonce, which the AEAD
//! authenticates. A datagram whose clock is further than the window from
//! ours is dropped (`stale`), and one seen before within the window is
//! dropped (`replay`). Only datagrams that opened are remembered, so an
//! outsider cannot fill the memory; it is capped all the same.
//!
//! Everything here is sans-IO: the caller passes the wall clock and the
//! random bytes; the exporter's `transport::keyring` keeps the keyring
//! file and draws them.

use std::collections::{HashSet, VecDeque};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// First byte of a sealed datagram. Plain frames start with a small
/// version or kind number, so the two never collide.
pub const SEALED_MARKER: u8 = 0xA5;
/// Bytes of a gossip key.
pub const KEY_LEN: usize = 32;
/// Bytes of an XChaCha20 nonce: 8 of sender clock, 16 random.
pub const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes a seal adds to a datagram.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Default replay window: clocks of a cluster must agree within it (NTP).
pub const DEFAULT_REPLAY_WINDOW_MS: u64 = 60_000;
/// Most datagrams remembered for replay detection (about 6 MB at most).
pub const REPLAY_MEMORY_CAP: usize = 1 << 17;

/// Why a sealed datagram could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// A plain datagram where gossip is sealed.
    #[error("plain datagram, but gossip is encrypted")]
    Unencrypted,
    /// A sealed datagram where no gossip key is configured.
    #[error("sealed datagram, but no key is configured")]
    Encrypted,
    /// No key of the keyring opens it (or it is too short to be sealed).
    #[error("no key of the keyring opens it")]
    Decrypt,
    /// The sender's clock is outside the replay window (or below the floor of a
    /// full memory).
    #[error("sender clock outside the replay window")]
    Stale,
    /// Opened before within the window.
    #[error("seen before")]
    Replay,
}

/// Why a gossip key or a keyring change was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Not base64 of 32 bytes.
    #[error("a gossip key is base64 of 32 bytes ({0})")]
    Format(String),
    /// A keyring needs at least one key.
    #[error("the keyring is empty")]
    Empty,
    /// The key (by fingerprint) is not in the keyring.
    #[error("key {0} is not installed")]
    NotInstalled(String),
    /// The key (by fingerprint) seals; another must be made primary before it
    /// goes.
    #[error("key {0} is the primary key; use another one first")]
    RemovePrimary(String),
    /// The keyring file could not be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// A 32-byte cluster key. Its Debug shows the fingerprint, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.fingerprint())
    }
}

impl Key {
    /// A new key from `rng`, which must be a cryptographic generator
    /// seeded from the operating system (the caller's choice).
    pub fn generate(rng: &mut impl rand::CryptoRng) -> Key {
        let mut k = [0u8; KEY_LEN];
        rng.fill_bytes(&mut k);
        Key(k)
    }

    /// The key made of these bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// Reads a key written as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Key, KeyError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| KeyError::Format(e.to_string()))?;
        let arr: [u8; KEY_LEN] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| KeyError::Format(format!("got {} bytes", b.len())))?;
        Ok(Key(arr))
    }

    /// The key as base64, the form `parse` reads.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// A name for the key that reveals nothing of it: 8 bytes of its SHA-256.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }
}

/// Keys in order: the first seals, all open.
#[derive(Debug, Clone)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl Keyring {
    /// A keyring of `keys` (duplicates dropped); the first seals.
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut unique: Vec<Key> = Vec::with_capacity(keys.len());
        for k in keys {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        Ok(Keyring { keys: unique })
    }

    /// Every key, the sealing one first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// The key that seals.
    pub fn primary(&self) -> &Key {
        // Never empty: `new` and `remove` keep at least one key.
        &self.keys[0]
    }

    /// Adds a key that opens but does not seal yet.
    pub fn install(&mut self, key: Key) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Makes an installed key the one that seals.
    pub fn use_key(&mut self, key: &Key) -> Result<(), KeyError> {
        let at = self
            .keys
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| KeyError::NotInstalled(key.fingerprint()))?;
        let k = self.keys.remove(at);
        self.keys.insert(0, k);
        Ok(())
    }

    /// Removes a key that no longer seals; the primary cannot be removed.
    pub fn remove(&mut self, key: &Key) -> Result<(), KeyError> {
        if self.primary() == key {
            return Err(KeyError::RemovePrimary(key.fingerprint()));
        }
        let before = self.keys.len();
        self.keys.retain(|k| k != key);
        if self.keys.len() == before {
            return Err(KeyError::NotInstalled(key.fingerprint()));
        }
        Ok(())
    }

    /// Seals `plain` under the primary key, stamped with `wall_ms`;
    /// `random` is the nonce's random half, fresh for every datagram.
    pub fn seal(&self, wall_ms: u64, random: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&wall_ms.to_be_bytes());
        nonce[8..].copy_from_slice(&random);
        let sealed = self
            .primary()
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &[SEALED_MARKER],
                },
            )
            // Encryption fails only for messages of gigabytes.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plain.len());
        out.push(SEALED_MARKER);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens a sealed datagram with any key; returns the sender's clock,
    /// the nonce and the plain bytes. Replay is the caller's next step.
    pub fn open(&self, datagram: &[u8]) -> Result<Opened, OpenError> {
        if datagram.first() != Some(&SEALED_MARKER) {
            return Err(OpenError::Unencrypted);
        }
        if datagram.len() < SEAL_OVERHEAD {
            return Err(OpenError::Decrypt);
        }
        let nonce = &datagram[1..1 + NONCE_LEN];
        let body = &datagram[1 + NONCE_LEN..];
        for key in &self.keys {
            if let Ok(plain) = key.cipher().decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &[SEALED_MARKER],
                },
            ) {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&nonce[..8]);
                let mut id = [0u8; 16];
                id.copy_from_slice(&nonce[8..]);
                return Ok(Opened {
                    sent_ms: u64::from_be_bytes(ts),
                    nonce_id: u128::from_be_bytes(id),
                    plain,
                });
            }
        }
        Err(OpenError::Decrypt)
    }
}

/// What `Keyring::open` found in a sealed datagram.
#[derive(Debug)]
pub struct Opened {
    /// The sender's wall clock when it sealed, ms since the epoch.
    pub sent_ms: u64,
    /// The nonce's 16 random bytes: the datagram's identity for the replay
    /// check.
    pub nonce_id: u128,
    /// The plain datagram.
    pub plain: Vec<u8>,
}

/// Remembers the datagrams opened within the window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    cap: usize,
    seen: HashSet<u128>,
    order: VecDeque<(u64, u128)>,
    /// Everything stamped at or before this was forgotten early (cap) and
    /// is refused as if stale.
    floor: u64,
}

impl ReplayGuard {
    /// A guard for `window_ms` either side of the local clock, remembering at
    /// most `REPLAY_MEMORY_CAP` datagrams.
    pub fn new(window_ms: u64) -> ReplayGuard {
        ReplayGuard::with_cap(window_ms, REPLAY_MEMORY_CAP)
    }

    /// A guard remembering at most `cap` datagrams (at least 1); past it the
    /// oldest are forgotten and everything stamped as early is refused.
    pub fn with_cap(window_ms: u64, cap: usize) -> ReplayGuard {
        ReplayGuard {
            window_ms,
            cap: cap.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
            floor: 0,
        }
    }

    /// Datagrams remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Accepts a datagram once, if its clock is within the window of ours.
    pub fn check(&mut self, now_ms: u64, sent_ms: u64, nonce_id: u128) -> Result<(), OpenError> {
        let oldest = now_ms.saturating_sub(self.window_ms);
        while let Some(&(ts, id)) = self.order.front() {
            if ts >= oldest {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
        if sent_ms < oldest || sent_ms > now_ms.saturating_add(self.window_ms) {
            return Err(OpenError::Stale);
        }
        if sent_ms <= self.floor {
            return Err(OpenError::Stale);
        }
        if !self.seen.insert(nonce_id) {
            return Err(OpenError::Replay);
        }
        self.order.push_back((sent_ms, nonce_id));
        while self.order.len() > self.cap {
            if let Some((ts, id)) = self.order.pop_front() {
                self.seen.remove(&id);
                self.floor = self.floor.max(ts);
            }
        }
        Ok(())
    }
}

/// What the admin API changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyOp {
    /// Add a key that opens but does not seal.
    Install,
    /// Make an installed key the one that seals.
    Use,
    /// Remove a key that no longer seals.
    Remove,
}

/// The body of `POST /api/v1/keys`, sealed with a key of the keyring.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeyCommand {
    /// What to do with the key.
    pub op: KeyOp,
    /// The key, base64.
    pub key: String,
}

/// Why a key command was refused.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It was not sealed with a key of the keyring.
    #[error("not sealed with a key of this agent's keyring: {0}")]
    Unauthenticated(OpenError),
    /// It opened, but is not a key command.
    #[error("malformed key command: {0}")]
    Malformed(String),
    /// The keyring refused the change.
    #[error("{0}")]
    Refused(KeyError),
}

/// Deterministic key and nonce bytes for tests (no OS randomness here).
#[cfg(test)]
pub(crate) mod test_random {
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(1);

    pub(crate) fn rng() -> rand_chacha::ChaCha20Rng {
        rand::SeedableRng::seed_from_u64(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn nonce() -> [u8; 16] {
        (NEXT.fetch_add(1, Ordering::Relaxed) as u128).to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::test_random::{nonce, rng};
    use super::*;

    fn ring(keys: &[&Key]) -> Keyring {
        Keyring::new(keys.iter().map(|k| (*k).clone()).collect()).unwrap()
    }

    #[test]
    fn seal_open_round_trip_with_overhead_within_the_reserve() {
        let a = Key::generate(&mut rng());
        let r = ring(&[&a]);
        for plain in [&b""[..], b"\x01hello", &[2u8; 1336]] {
            let sealed = r.seal(1000, nonce(), plain);
            assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            let opened = r.open(&sealed).unwrap();
            assert_eq!(opened.plain, plain);
            assert_eq!(opened.sent_ms, 1000);
        }
        const { assert!(SEAL_OVERHEAD <= crate::engine::TRANSPORT_OVERHEAD_BYTES) };
    }

    #[test]
    fn wrong_key_tampered_truncated_and_plain_are_refused() {
        let a = Key::generate(&mut rng());
        let b = Key::generate(&mut rng());
        let sealed = ring(&[&a]).seal(5, nonce(), b"\x01payload");
        assert_eq!(ring(&[&b]).open(&sealed).unwrap_err(), OpenError::Decrypt);
        for at in [1, 10, 30, sealed.len() - 1] {
            let mut t = sealed.clone();
            t[at] ^= 0x40;
            assert_eq!(
                ring(&[&a]).open(&t).unwrap_err(),
                OpenError::Decrypt,
                "{at}"
            );
        }
        assert_eq!(
            ring(&[&a]).open(&sealed[..20]).unwrap_err(),
            OpenError::Decrypt
        );
        assert_eq!(
            ring(&[&a]).open(b"\x01plain").unwrap_err(),
            OpenError::Unencrypted
        );
        assert_eq!(ring(&[&a]).open(b"").unwrap_err(), OpenError::Unencrypted);
    }

    #[test]
    fn keyring_first_seals_all_open_and_rotation() {
        let old = Key::generate(&mut rng());
        let new = Key::generate(&mut rng());
        let mut r = ring(&[&old]);
        let by_old_only = r.seal(1, nonce(), b"x");
        r.install(new.clone());
        // Installed but not used: still seals with old, opens both.
        assert!(ring(&[&old]).open(&r.seal(1, nonce(), b"x")).is_ok());
        assert!(r.open(&ring(&[&new]).seal(1, nonce(), b"y")).is_ok());
        r.use_key(&new).unwrap();
        assert!(ring(&[&new]).open(&r.seal(1, nonce(), b"x")).is_ok());
        assert!(r.open(&by_old_only).is_ok());
        assert!(matches!(r.remove(&new), Err(KeyError::RemovePrimary(_))));
        r.remove(&old).unwrap();
        assert_eq!(r.open(&by_old_only).unwrap_err(), OpenError::Decrypt);
        assert!(matches!(r.remove(&old), Err(KeyError::NotInstalled(_))));
        assert!(matches!(r.use_key(&old), Err(KeyError::NotInstalled(_))));
        assert_eq!(r.keys().len(), 1);
    }

    #[test]
    fn replay_within_window_and_stale_are_refused() {
        let mut g = ReplayGuard::new(1000);
        assert_eq!(g.check(10_000, 9_500, 1), Ok(()));
        assert_eq!(g.check(10_001, 9_500, 1), Err(OpenError::Replay));
        assert_eq!(g.check(10_001, 8_000, 2), Err(OpenError::Stale));
        assert_eq!(g.check(10_001, 12_000, 3), Err(OpenError::Stale));
        // Once out of the window it is forgotten, and refused as stale.
        assert_eq!(g.check(20_000, 9_500, 1), Err(OpenError::Stale));
        assert!(g.is_empty());
    }

    #[test]
    fn replay_memory_is_capped_and_stays_safe() {
        let mut g = ReplayGuard::with_cap(60_000, 100);
        for i in 0..1000u128 {
            assert_eq!(g.check(100_000, 50_000 + i as u64, i), Ok(()));
        }
        assert_eq!(g.len(), 100);
        // An early-forgotten datagram is still refused.
        assert_eq!(g.check(100_000, 50_005, 5), Err(OpenError::Stale));
        assert_eq!(g.check(100_000, 50_999, 999), Err(OpenError::Replay));
    }

    #[test]
    fn keys_parse_and_never_print() {
        let k = Key::generate(&mut rng());
        assert_eq!(Key::parse(&k.to_base64()).unwrap(), k);
        assert!(Key::parse("c2hvcnQ=").is_err());
        assert!(Key::parse("not base64!").is_err());
        assert!(!format!("{k:?}").contains(&k.to_base64()));
    }
}
