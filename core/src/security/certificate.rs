//! Aggregation function certificates (Astrolabe's AFCs): an aggregate
//! installed into a zone at runtime, or removed from it, signed by an
//! operator key. The same struct is the JSON body of
//! `POST /api/v1/aggregates` and what gossip carries.

use serde::{Deserialize, Serialize};

use super::operator::{OperatorKey, TrustedKeys, AGGREGATE_DOMAIN};
use super::refusals::RefusalReason;
use crate::aggregate::AggregateSet;
use crate::zone::ZonePath;

/// Longest SQL a certificate may carry: a certificate travels whole in one
/// gossip datagram.
pub const MAX_SQL_BYTES: usize = 640;
/// Largest encoded certificate (it must fit one datagram with its envelope).
pub const MAX_CERT_BYTES: usize = 1000;
/// Longest certificate name.
pub const MAX_NAME_BYTES: usize = 64;
/// How far ahead of this agent's clock a certificate may be issued.
pub const MAX_CLOCK_AHEAD_MS: u64 = 60_000;

/// One signed install (with `sql`) or removal (`remove: true`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateCertificate {
    /// The zone whose subtree computes the aggregate, e.g. `/eu`.
    pub zone: String,
    /// Names the aggregate within the zone, for its removal.
    pub name: String,
    /// The SELECT to add; absent in a removal.
    #[serde(default)]
    pub sql: Option<String>,
    /// A removal certificate: the newer one for the same zone and name wins.
    #[serde(default)]
    pub remove: bool,
    /// Wall-clock milliseconds since the epoch.
    pub issued: u64,
    /// Wall-clock milliseconds since the epoch after which agents drop it.
    pub expires: u64,
    /// The operator's public key, base64.
    #[serde(default)]
    pub key: String,
    /// Ed25519 signature, base64.
    #[serde(default)]
    pub signature: String,
}

/// What the signature covers.
#[derive(Serialize)]
struct SignedAggregate<'a> {
    zone: &'a str,
    name: &'a str,
    sql: Option<&'a str>,
    remove: bool,
    issued: u64,
    expires: u64,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl AggregateCertificate {
    fn signed(&self) -> SignedAggregate<'_> {
        SignedAggregate {
            zone: &self.zone,
            name: &self.name,
            sql: self.sql.as_deref(),
            remove: self.remove,
            issued: self.issued,
            expires: self.expires,
        }
    }

    /// A certificate signed on the operator's side.
    pub fn signed_by(
        key: &OperatorKey,
        zone: &str,
        name: &str,
        sql: Option<String>,
        issued: u64,
        expires: u64,
    ) -> AggregateCertificate {
        use base64::Engine as _;
        let mut cert = AggregateCertificate {
            zone: zone.to_string(),
            name: name.to_string(),
            remove: sql.is_none(),
            sql,
            issued,
            expires,
            key: b64().encode(key.public_bytes()),
            signature: String::new(),
        };
        cert.signature = b64().encode(key.sign(AGGREGATE_DOMAIN, &cert.signed()));
        cert
    }

    /// The zone, checked.
    pub fn zone_path(&self) -> Result<ZonePath, RefusalReason> {
        ZonePath::parse(&self.zone).map_err(|_| RefusalReason::Malformed)
    }

    /// Everything an agent checks before applying a certificate: shape,
    /// signature by a trusted key, time, and that its SQL compiles.
    pub fn check(&self, trusted: &TrustedKeys, now_wall_ms: u64) -> Result<(), RefusalReason> {
        use base64::Engine as _;
        if self.key.is_empty() || self.signature.is_empty() {
            return Err(RefusalReason::Unsigned);
        }
        let shape_ok = self.name.len() <= MAX_NAME_BYTES
            && !self.name.is_empty()
            && self.remove == self.sql.is_none()
            && self.sql.as_ref().is_none_or(|s| s.len() <= MAX_SQL_BYTES)
            && self.expires > self.issued
            && postcard::experimental::serialized_size(self).is_ok_and(|n| n <= MAX_CERT_BYTES);
        if !shape_ok {
            return Err(RefusalReason::Malformed);
        }
        self.zone_path()?;
        let key = b64()
            .decode(self.key.trim())
            .map_err(|_| RefusalReason::Malformed)?;
        let signature = b64()
            .decode(self.signature.trim())
            .map_err(|_| RefusalReason::Malformed)?;
        trusted.verify(AGGREGATE_DOMAIN, &self.signed(), &key, &signature)?;
        if now_wall_ms >= self.expires || self.issued > now_wall_ms + MAX_CLOCK_AHEAD_MS {
            return Err(RefusalReason::Expired);
        }
        if let Some(sql) = &self.sql {
            AggregateSet::with_defaults(&[sql]).map_err(|_| RefusalReason::Unparsable)?;
        }
        Ok(())
    }

    /// Orders two certificates for the same zone and name: the later issue
    /// wins, ties broken by the signature so every agent picks the same.
    pub fn supersedes(&self, other: &AggregateCertificate) -> bool {
        (self.issued, &self.signature) > (other.issued, &other.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn cert(key: &OperatorKey, sql: Option<&str>) -> AggregateCertificate {
        AggregateCertificate::signed_by(
            key,
            "/eu",
            "load_peak",
            sql.map(str::to_string),
            NOW - 1000,
            NOW + 3_600_000,
        )
    }

    #[test]
    fn certificates_check_signature_time_and_sql() {
        let key = crate::security::operator::test_key();
        let trusted = TrustedKeys::parse(&[key.public_base64()]).unwrap();
        let good = cert(&key, Some("SELECT max(load1) AS load1_peak_eu"));
        assert_eq!(good.check(&trusted, NOW), Ok(()));
        let removal = cert(&key, None);
        assert!(removal.remove);
        assert_eq!(removal.check(&trusted, NOW), Ok(()));
        // Round trip through JSON, as the API takes it.
        let json = serde_json::to_string(&good).unwrap();
        let back: AggregateCertificate = serde_json::from_str(&json).unwrap();
        assert_eq!(back.check(&trusted, NOW), Ok(()));

        let mut unsigned = good.clone();
        unsigned.signature.clear();
        assert_eq!(unsigned.check(&trusted, NOW), Err(RefusalReason::Unsigned));
        let mut widened = good.clone();
        widened.zone = "/".into();
        assert_eq!(
            widened.check(&trusted, NOW),
            Err(RefusalReason::BadSignature)
        );
        assert_eq!(
            good.check(&trusted, NOW + 3_600_000),
            Err(RefusalReason::Expired)
        );
        let stranger = crate::security::operator::test_key();
        assert_eq!(
            cert(&stranger, Some("SELECT max(load1) AS x")).check(&trusted, NOW),
            Err(RefusalReason::UntrustedKey)
        );
        assert_eq!(
            cert(&key, Some("SELEC max(load1) AS x")).check(&trusted, NOW),
            Err(RefusalReason::Unparsable)
        );
        assert_eq!(
            good.check(&TrustedKeys::default(), NOW),
            Err(RefusalReason::UntrustedKey)
        );
        let later = AggregateCertificate::signed_by(&key, "/eu", "load_peak", None, NOW, NOW + 5);
        assert!(later.supersedes(&good) && !good.supersedes(&later));
    }
}
