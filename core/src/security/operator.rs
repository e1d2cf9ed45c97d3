//! Operator keys: Ed25519 keypairs that sign commands and aggregate
//! certificates, and the set of public keys an agent trusts.
//!
//! Every signature covers `domain || 0x00 || body`, where `domain` names
//! the kind of thing signed ("astrolabe-command-v1", ...) so a signature
//! made for one kind can never be replayed as another, and `body` is the
//! postcard encoding of a fixed struct (deterministic for a given value).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// Domain of signed overlay commands.
pub const COMMAND_DOMAIN: &str = "astrolabe-command-v1";
/// Domain of aggregate install and removal certificates.
pub const AGGREGATE_DOMAIN: &str = "astrolabe-aggregate-v1";

/// First word of a private key file, so a wrong file is named as such.
const PRIVATE_KEY_HEADER: &str = "astrolabe-operator-key-v1";

/// Why an operator key could not be read, parsed or made.
#[derive(Debug, thiserror::Error)]
pub enum OperatorKeyError {
    /// A key file that could not be read or written, or holds no key.
    #[error("{path}: {reason}")]
    File {
        /// The file's path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A public key that is not base64 of a 32-byte Ed25519 point.
    #[error("public key {key:?}: {reason}")]
    PublicKey {
        /// The key as given.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OS gave no random bytes for a new key (the exporter draws them).
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The key is well formed but not trusted here.
    #[error("the key is not one of this agent's trusted keys")]
    UntrustedKey,
    /// The key or signature has the wrong length or is not a curve point.
    #[error("the key or signature is malformed")]
    Malformed,
    /// The signature does not cover these bytes under this key.
    #[error("the signature does not match")]
    BadSignature,
}

/// The bytes a signature covers.
pub fn signed_bytes<T: serde::Serialize>(domain: &str, body: &T) -> Vec<u8> {
    let mut bytes = domain.as_bytes().to_vec();
    bytes.push(0);
    // postcard cannot fail on the plain structs signed here; an empty body
    // would only make the signature fail to verify, never pass.
    bytes.extend(postcard::to_allocvec(body).unwrap_or_default());
    bytes
}

/// An operator's private key. Debug shows the public half only.
pub struct OperatorKey(SigningKey);

impl std::fmt::Debug for OperatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OperatorKey({})", self.public_base64())
    }
}

impl OperatorKey {
    /// The key whose 32-byte seed is `seed`.
    pub fn from_seed(seed: [u8; 32]) -> OperatorKey {
        OperatorKey(SigningKey::from_bytes(&seed))
    }

    /// The public key as agents list it in `--security.trusted-key`.
    pub fn public_base64(&self) -> String {
        B64.encode(self.0.verifying_key().as_bytes())
    }

    /// The raw 32-byte public key, as a `CommandSeal` carries it.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Signs `body` under `domain`; 64 bytes.
    pub fn sign<T: serde::Serialize>(&self, domain: &str, body: &T) -> Vec<u8> {
        self.0.sign(&signed_bytes(domain, body)).to_bytes().to_vec()
    }

    /// The private key file: a header word and the base64 seed, one line.
    pub fn to_file_text(&self) -> String {
        format!("{PRIVATE_KEY_HEADER} {}\n", B64.encode(self.0.to_bytes()))
    }

    /// Reads the text `to_file_text` wrote; the error says what is wrong with
    /// it.
    pub fn parse_file_text(text: &str) -> Result<OperatorKey, String> {
        let rest = text
            .trim()
            .strip_prefix(PRIVATE_KEY_HEADER)
            .ok_or_else(|| {
                format!("not an operator key file (it should start with {PRIVATE_KEY_HEADER})")
            })?;
        let bytes = B64
            .decode(rest.trim())
            .map_err(|e| format!("the key is not base64: {e}"))?;
        let seed: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("the key has {} bytes, not 32", b.len()))?;
        Ok(OperatorKey::from_seed(seed))
    }
}

/// A public key in base64 (32 bytes, a valid curve point).
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, OperatorKeyError> {
    let bad = |reason: String| OperatorKeyError::PublicKey {
        key: text.to_string(),
        reason,
    };
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| bad(format!("not base64: {e}")))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| bad(format!("{} bytes, an Ed25519 public key has 32", b.len())))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| bad("not an Ed25519 public key".into()))
}

/// The operator keys an agent accepts signatures from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl TrustedKeys {
    /// From `--security.trusted-key` values; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(keys: &[S]) -> Result<TrustedKeys, OperatorKeyError> {
        let mut list = Vec::new();
        for k in keys {
            let k = k.as_ref().trim();
            if k.is_empty() {
                continue;
            }
            let key = parse_public_key(k)?;
            if !list.contains(&key) {
                list.push(key);
            }
        }
        Ok(TrustedKeys(list))
    }

    /// Whether no key is trusted: the command guard then lets unsigned commands
    /// run.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Base64 of every trusted key, for the start-up log.
    pub fn describe(&self) -> Vec<String> {
        self.0.iter().map(|k| B64.encode(k.as_bytes())).collect()
    }

    /// Checks that `signature` by `key` (a trusted key) covers `body` under `domain`.
    pub fn verify<T: serde::Serialize>(
        &self,
        domain: &str,
        body: &T,
        key: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let key: [u8; 32] = key.try_into().map_err(|_| SignatureError::Malformed)?;
        let trusted = self
            .0
            .iter()
            .find(|k| k.as_bytes() == &key)
            .ok_or(SignatureError::UntrustedKey)?;
        let signature = Signature::from_slice(signature).map_err(|_| SignatureError::Malformed)?;
        trusted
            .verify(&signed_bytes(domain, body), &signature)
            .map_err(|_| SignatureError::BadSignature)
    }
}

/// Distinct keys for tests, without OS randomness.
#[cfg(test)]
pub(crate) fn test_key() -> OperatorKey {
    use std::sync::atomic::{AtomicU8, Ordering};
    static NEXT: AtomicU8 = AtomicU8::new(1);
    OperatorKey::from_seed([NEXT.fetch_add(1, Ordering::Relaxed); 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize)]
    struct Body<'a> {
        zone: &'a str,
        n: u64,
    }

    #[test]
    fn signatures_verify_only_for_the_same_domain_body_and_a_trusted_key() {
        let key = test_key();
        let other = test_key();
        let trusted = TrustedKeys::parse(&[key.public_base64()]).unwrap();
        let body = Body { zone: "/eu", n: 1 };
        let sig = key.sign(COMMAND_DOMAIN, &body);
        assert_eq!(sig.len(), 64);
        let pk = key.public_bytes();
        assert_eq!(trusted.verify(COMMAND_DOMAIN, &body, &pk, &sig), Ok(()));
        // Another kind of thing, another body, another key: all refused.
        assert_eq!(
            trusted.verify(AGGREGATE_DOMAIN, &body, &pk, &sig),
            Err(SignatureError::BadSignature)
        );
        let changed = Body { zone: "/", n: 1 };
        assert_eq!(
            trusted.verify(COMMAND_DOMAIN, &changed, &pk, &sig),
            Err(SignatureError::BadSignature)
        );
        let forged = other.sign(COMMAND_DOMAIN, &body);
        assert_eq!(
            trusted.verify(COMMAND_DOMAIN, &body, &other.public_bytes(), &forged),
            Err(SignatureError::UntrustedKey)
        );
        // A trusted key named with another key's signature.
        assert_eq!(
            trusted.verify(COMMAND_DOMAIN, &body, &pk, &forged),
            Err(SignatureError::BadSignature)
        );
        assert_eq!(
            trusted.verify(COMMAND_DOMAIN, &body, &pk, &sig[..10]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            trusted.verify(COMMAND_DOMAIN, &body, &pk[..5], &sig),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn bad_public_keys_are_named_with_the_reason() {
        let e = TrustedKeys::parse(&["!!"]).unwrap_err().to_string();
        assert!(e.contains("not base64"), "{e}");
        let e = TrustedKeys::parse(&[B64.encode([1u8; 16])])
            .unwrap_err()
            .to_string();
        assert!(e.contains("16 bytes"), "{e}");
        let k = test_key().public_base64();
        assert_eq!(TrustedKeys::parse(&[k.clone(), k]).unwrap().len(), 1);
    }
}
