//! Operator key files and new keys: the file and OS-randomness half of
//! `astrolabe_core::security::operator`, which only signs and verifies.

use std::path::Path;

use astrolabe_core::security::operator::{OperatorKey, OperatorKeyError};

/// A new key from the operating system's randomness.
pub fn generate() -> Result<OperatorKey, OperatorKeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| OperatorKeyError::Random(e.to_string()))?;
    Ok(OperatorKey::from_seed(seed))
}

/// Writes a new private key file readable by its owner only; refuses
/// to overwrite an existing one (a lost key cannot be recovered).
pub fn save(key: &OperatorKey, path: &Path) -> Result<(), OperatorKeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |reason: String| OperatorKeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    f.write_all(key.to_file_text().as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| err(e.to_string()))
}

/// Reads a private key file; one others can read is refused, like ssh does.
pub fn load(path: &Path) -> Result<OperatorKey, OperatorKeyError> {
    use std::os::unix::fs::PermissionsExt;
    let err = |reason: String| OperatorKeyError::File {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "permissions {:o} let others read the private key; chmod 600 it",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    OperatorKey::parse_file_text(&text).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_private_and_refuse_loose_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("astrolabe-opkey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("operator.key");
        let key = generate().unwrap();
        save(&key, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.public_base64(), key.public_base64());
        // Never overwritten.
        assert!(save(&generate().unwrap(), &path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::write(dir.join("bad"), "hello").unwrap();
        std::fs::set_permissions(dir.join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = load(&dir.join("bad")).unwrap_err().to_string();
        assert!(e.contains("not an operator key file"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
