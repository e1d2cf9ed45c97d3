//! The gossip keyring at the edge: its file (Serf's JSON array of base64
//! keys, the primary first), the shared state the agent and the admin API
//! use, and the OS randomness of nonces. Sealing itself is the core's
//! `transport::crypto`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

pub use astrolabe_core::transport::crypto::*;

/// Serf's keyring file: a JSON array of base64 keys, the primary first.
pub fn load_file(path: &Path) -> Result<Keyring, KeyError> {
    let err = |reason: String| KeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let list: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| err(format!("expected a JSON array of base64 keys: {e}")))?;
    let keys = list
        .iter()
        .map(|k| Key::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    Keyring::new(keys).map_err(|e| err(e.to_string()))
}

/// Writes the keyring atomically, readable by its owner only.
pub fn save_file(ring: &Keyring, path: &Path) -> Result<(), KeyError> {
    let err = |reason: String| KeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let list: Vec<String> = ring.keys().iter().map(Key::to_base64).collect();
    let text = serde_json::to_string_pretty(&list).map_err(|e| err(e.to_string()))?;
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| err(e.to_string()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .and_then(|()| f.sync_all())
            .map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
}

/// The keyring of a running agent, shared by the socket loop and the
/// admin API, with where to persist changes.
#[derive(Debug)]
pub struct GossipSecurity {
    ring: RwLock<Keyring>,
    file: Option<PathBuf>,
    gossip_replay: Mutex<ReplayGuard>,
    admin_replay: Mutex<ReplayGuard>,
}

impl GossipSecurity {
    pub fn new(ring: Keyring, file: Option<PathBuf>, window_ms: u64) -> GossipSecurity {
        GossipSecurity {
            ring: RwLock::new(ring),
            file,
            gossip_replay: Mutex::new(ReplayGuard::new(window_ms)),
            admin_replay: Mutex::new(ReplayGuard::new(window_ms)),
        }
    }

    pub fn keyring(&self) -> Keyring {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn seal(&self, wall_ms: u64, plain: &[u8]) -> Vec<u8> {
        match self.ring.read() {
            Ok(r) => r.seal(wall_ms, rand::random(), plain),
            Err(poisoned) => poisoned.into_inner().seal(wall_ms, rand::random(), plain),
        }
    }

    /// Opens a gossip datagram: authentic, within the window, never seen.
    pub fn open(&self, now_ms: u64, datagram: &[u8]) -> Result<Vec<u8>, OpenError> {
        let opened = match self.ring.read() {
            Ok(r) => r.open(datagram)?,
            Err(poisoned) => poisoned.into_inner().open(datagram)?,
        };
        let mut guard = match self.gossip_replay.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.check(now_ms, opened.sent_ms, opened.nonce_id)?;
        Ok(opened.plain)
    }

    /// Applies a sealed key command from the admin API and persists the
    /// keyring; returns the fingerprints after the change.
    pub fn apply_command(&self, now_ms: u64, sealed: &[u8]) -> Result<Vec<String>, CommandError> {
        let opened = self
            .keyring()
            .open(sealed)
            .map_err(CommandError::Unauthenticated)?;
        {
            let mut guard = match self.admin_replay.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            guard
                .check(now_ms, opened.sent_ms, opened.nonce_id)
                .map_err(CommandError::Unauthenticated)?;
        }
        let cmd: KeyCommand = serde_json::from_slice(&opened.plain)
            .map_err(|e| CommandError::Malformed(e.to_string()))?;
        let key = Key::parse(&cmd.key).map_err(CommandError::Refused)?;
        let mut ring = match self.ring.write() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = ring.clone();
        match cmd.op {
            KeyOp::Install => next.install(key.clone()),
            KeyOp::Use => next.use_key(&key).map_err(CommandError::Refused)?,
            KeyOp::Remove => next.remove(&key).map_err(CommandError::Refused)?,
        }
        // Persist first: a keyring that would be lost at restart is refused.
        if let Some(path) = &self.file {
            save_file(&next, path).map_err(CommandError::Refused)?;
        }
        *ring = next;
        tracing::info!(op = ?cmd.op, key = %key.fingerprint(), primary = %ring.primary().fingerprint(), "gossip keyring changed");
        Ok(ring.keys().iter().map(Key::fingerprint).collect())
    }

    pub fn fingerprints(&self) -> Vec<String> {
        self.keyring().keys().iter().map(Key::fingerprint).collect()
    }
}

/// Loads the keyring a configuration names: the keyring file if it exists
/// (Serf's precedence), else the single key, which also initialises a
/// keyring file that does not exist yet.
pub fn load_keyring(key: Option<&str>, file: Option<&Path>) -> Result<Option<Keyring>, KeyError> {
    match (key, file) {
        (_, Some(path)) if path.exists() => load_file(path).map(Some),
        (Some(k), Some(path)) => {
            let ring = Keyring::new(vec![Key::parse(k)?])?;
            save_file(&ring, path)?;
            Ok(Some(ring))
        }
        (None, Some(path)) => Err(KeyError::File {
            path: path.display().to_string(),
            reason:
                "does not exist (create it with `astrolabe keys generate`, or give --gossip.key)"
                    .into(),
        }),
        (Some(k), None) => Ok(Some(Keyring::new(vec![Key::parse(k)?])?)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&Key]) -> Keyring {
        Keyring::new(keys.iter().map(|k| (*k).clone()).collect()).unwrap()
    }

    #[test]
    fn keyring_file_round_trip_and_commands() {
        let dir = std::env::temp_dir().join(format!("astrolabe-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keyring.json");
        let _ = std::fs::remove_file(&path);
        let a = Key::generate(&mut rand::rng());
        let ring0 = load_keyring(Some(&a.to_base64()), Some(&path))
            .unwrap()
            .unwrap();
        assert_eq!(ring0.keys(), std::slice::from_ref(&a));
        assert_eq!(load_file(&path).unwrap().keys(), std::slice::from_ref(&a));
        let sec = GossipSecurity::new(ring0.clone(), Some(path.clone()), 60_000);
        let b = Key::generate(&mut rand::rng());
        let cmd = |op: KeyOp, k: &Key| {
            serde_json::to_vec(&KeyCommand {
                op,
                key: k.to_base64(),
            })
            .unwrap()
        };
        let sealed = ring0.seal(1_000, rand::random(), &cmd(KeyOp::Install, &b));
        assert_eq!(sec.apply_command(1_000, &sealed).unwrap().len(), 2);
        // The same sealed command again is a replay.
        assert!(matches!(
            sec.apply_command(1_001, &sealed),
            Err(CommandError::Unauthenticated(OpenError::Replay))
        ));
        // A command sealed by an outsider is refused.
        let outsider = ring(&[&Key::generate(&mut rand::rng())]).seal(
            1_000,
            rand::random(),
            &cmd(KeyOp::Use, &b),
        );
        assert!(matches!(
            sec.apply_command(1_002, &outsider),
            Err(CommandError::Unauthenticated(OpenError::Decrypt))
        ));
        sec.apply_command(
            1_003,
            &ring0.seal(1_003, rand::random(), &cmd(KeyOp::Use, &b)),
        )
        .unwrap();
        sec.apply_command(
            1_004,
            &ring0.seal(1_004, rand::random(), &cmd(KeyOp::Remove, &a)),
        )
        .unwrap();
        let on_disk = load_file(&path).unwrap();
        assert_eq!(on_disk.keys(), std::slice::from_ref(&b));
        // A file with garbage is refused with its path.
        std::fs::write(&path, "[\"nope\"]").unwrap();
        let e = load_file(&path).unwrap_err().to_string();
        assert!(e.contains("keyring.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
