//! Aggregate certificates in the engine: a small, bounded set held beside
//! the tables, spread by its own anti-entropy exchange, and the per-table
//! aggregate sets it makes.
//!
//! An agent holds the certificates whose zone contains its leaf. The
//! table of zone Z (depth k) is aggregated with the base set plus every
//! held install whose zone is an ancestor-or-self of Z, so a certificate
//! for `/eu` changes the rows of `/eu` and of every zone below it, and
//! nothing above.
//!
//! Exchange: when an agent holding certificates sends its digest to a
//! partner of level k, it also sends `CertDigest { depth: k, hash }`, a
//! 64-bit hash of its certificates for zones of depth <= k (the zones the
//! two share). A receiver whose own hash differs answers with its
//! certificates for those zones (`Certs { answer: true }`), and the first
//! sender answers back with its own if they still differ. Agents without
//! certificates send nothing extra, so the exchange costs nothing until an
//! operator installs one. Everything received is verified here against
//! the trusted keys of the engine's configuration (pure CPU); what fails
//! is counted once and never applied or passed on.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Effect, Engine, Message, Now};
use crate::aggregate::AggregateSet;
use crate::security::certificate::AggregateCertificate;
use crate::security::{RefusalReason, SignatureRefusals, SignedKind, TrustedKeys};
use crate::zone::ZonePath;

/// Certificates (installs and removals) one agent holds at most.
pub const MAX_CERTIFICATES: usize = 32;
/// Refused certificates remembered, so one re-sent every round is counted once.
const MAX_REMEMBERED_REFUSALS: usize = 1024;

/// Who may sign certificates, and where refusals are counted.
#[derive(Debug, Clone, Default)]
pub struct CertConfig {
    /// Operator keys whose signatures on a certificate are accepted.
    pub trusted: TrustedKeys,
    /// Where refused certificates are counted, shared with `/metrics`.
    pub refusals: Arc<SignatureRefusals>,
}

/// Why a certificate handed to `install_certificate` was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// The signature check failed, for the reason given.
    #[error("refused: {}", .0.label())]
    Refused(RefusalReason),
    /// The certificate's zone does not contain this agent's leaf.
    #[error("this agent is not in the certificate's zone; send it to an agent of that zone")]
    NotHere,
    /// An equal or newer certificate for the same zone and name is held.
    #[error("an equal or newer certificate for this zone and name is already held")]
    Stale,
}

/// The certificates an engine holds and the per-table aggregate sets they make;
/// kept inside the engine.
#[derive(Debug, Default)]
pub struct CertState {
    /// By (zone, name).
    held: BTreeMap<(String, String), Arc<AggregateCertificate>>,
    /// Per table: base set plus the installs that apply to it; None when
    /// none does (the base set is used).
    sets: Vec<Option<Arc<AggregateSet>>>,
    /// Hashes of certificates refused already.
    refused: HashSet<u64>,
}

/// FNV-1a over the postcard encodings, in (zone, name) order.
fn set_hash<'a>(certs: impl Iterator<Item = &'a AggregateCertificate>) -> u64 {
    let mut h = crate::zone::Fnv1a64::new();
    for c in certs {
        h.write(&postcard::to_allocvec(c).unwrap_or_default());
        h.write(&[0xff]);
    }
    h.finish()
}

fn depth_of(cert: &AggregateCertificate) -> usize {
    ZonePath::parse(&cert.zone).map_or(usize::MAX, |z| z.depth())
}

impl Engine {
    /// The aggregate set of table `k`.
    pub(super) fn table_aggregates(&self, k: usize) -> &Arc<AggregateSet> {
        self.certs
            .sets
            .get(k)
            .and_then(Option::as_ref)
            .unwrap_or(&self.aggregates)
    }

    /// Certificates held, installs and removals.
    pub fn certificates(&self) -> Vec<Arc<AggregateCertificate>> {
        self.certs.held.values().cloned().collect()
    }

    /// An operator's certificate, handed to this agent directly (the API).
    /// Refusals are counted; on success the next rounds spread it.
    pub fn install_certificate(
        &mut self,
        now: Now,
        cert: AggregateCertificate,
    ) -> Result<Vec<Effect>, CertError> {
        if self.left {
            return Err(CertError::NotHere);
        }
        match self.accept_certificate(now, Arc::new(cert), true) {
            Ok(true) => {
                self.certificates_changed();
                Ok(self.finish(now))
            }
            Ok(false) => Err(CertError::Stale),
            Err(e) => Err(e),
        }
    }

    /// Replaces the trusted operator keys (SIGHUP). A held certificate no
    /// trusted key signed any more is dropped at once: taking a key out of
    /// the list is how an operator revokes it, and its certificates must
    /// not outlive it until they expire. Refusals remembered under the old
    /// keys are forgotten, so a certificate signed by a newly trusted key
    /// is taken when a peer next offers it. Returns the dropped ones.
    pub fn set_trusted_keys(
        &mut self,
        now: Now,
        trusted: TrustedKeys,
    ) -> (Vec<Arc<AggregateCertificate>>, Vec<Effect>) {
        self.cfg.certificates.trusted = trusted;
        self.certs.refused.clear();
        let trusted = &self.cfg.certificates.trusted;
        let mut dropped = Vec::new();
        self.certs.held.retain(|_, c| {
            let keep = c.check(trusted, now.wall_ms).is_ok();
            if !keep {
                dropped.push(c.clone());
            }
            keep
        });
        if !dropped.is_empty() {
            self.certificates_changed();
        }
        let effects = if self.left {
            Vec::new()
        } else {
            self.finish(now)
        };
        (dropped, effects)
    }

    /// Checks and stores one certificate; Ok(true) if the held set changed.
    fn accept_certificate(
        &mut self,
        now: Now,
        cert: Arc<AggregateCertificate>,
        direct: bool,
    ) -> Result<bool, CertError> {
        let zone = match cert.zone_path() {
            Ok(z) => z,
            Err(reason) => return Err(self.refuse_certificate(&cert, reason)),
        };
        if !zone.contains(&self.cfg.zone) {
            return Err(CertError::NotHere);
        }
        let key = (zone.to_string(), cert.name.clone());
        if let Some(existing) = self.certs.held.get(&key) {
            if !cert.supersedes(existing) {
                return Ok(false);
            }
        }
        let fingerprint = set_hash(std::iter::once(cert.as_ref()));
        if !direct && self.certs.refused.contains(&fingerprint) {
            return Ok(false);
        }
        if let Err(reason) = cert.check(&self.cfg.certificates.trusted, now.wall_ms) {
            return Err(self.refuse_certificate(&cert, reason));
        }
        let removes_longer_install = cert.sql.is_none()
            && self
                .certs
                .held
                .get(&key)
                .is_some_and(|held| held.sql.is_some() && held.expires > cert.expires);
        if removes_longer_install {
            return Err(self.refuse_certificate(&cert, RefusalReason::RemovalExpiresFirst));
        }
        if !self.certs.held.contains_key(&key) && self.certs.held.len() >= MAX_CERTIFICATES {
            return Err(self.refuse_certificate(&cert, RefusalReason::Overflow));
        }
        if let Some(sql) = &cert.sql {
            // Its columns must not clash with the base set or another install.
            let mut sources: Vec<String> = self.aggregates.sources().to_vec();
            sources.extend(
                self.certs
                    .held
                    .iter()
                    .filter(|(k, _)| **k != key)
                    .filter_map(|(_, c)| c.sql.clone()),
            );
            sources.push(sql.clone());
            if AggregateSet::compile(&sources).is_err() {
                return Err(self.refuse_certificate(&cert, RefusalReason::Unparsable));
            }
        }
        self.certs.held.insert(key, cert);
        Ok(true)
    }

    fn refuse_certificate(
        &mut self,
        cert: &AggregateCertificate,
        reason: RefusalReason,
    ) -> CertError {
        let fingerprint = set_hash(std::iter::once(cert));
        // Counted once per certificate, however often peers resend it.
        if self.certs.refused.len() >= MAX_REMEMBERED_REFUSALS {
            self.certs.refused.clear();
        }
        if self.certs.refused.insert(fingerprint) {
            self.cfg
                .certificates
                .refusals
                .count(SignedKind::Aggregate, reason);
            tracing::warn!(zone = %cert.zone, name = %cert.name, reason = reason.label(), "aggregate certificate refused");
        }
        CertError::Refused(reason)
    }

    /// Rebuilds the per-table sets and recomputes every zone row.
    fn certificates_changed(&mut self) {
        self.rebuild_certificate_sets();
        for t in &mut self.tables {
            t.dirty = true;
            t.content_dirty = true;
        }
    }

    pub(super) fn rebuild_certificate_sets(&mut self) {
        let mut sets = Vec::with_capacity(self.tables.len());
        for k in 0..self.tables.len() {
            let extra: Vec<String> = self
                .certs
                .held
                .values()
                .filter(|c| depth_of(c) <= k)
                .filter_map(|c| c.sql.clone())
                .collect();
            if extra.is_empty() {
                sets.push(None);
                continue;
            }
            let mut sources: Vec<String> = self.aggregates.sources().to_vec();
            sources.extend(extra);
            // Checked on acceptance; a reload of the base set may still
            // clash, and then the base set alone applies (and is logged).
            match AggregateSet::compile(&sources) {
                Ok(set) => sets.push(Some(Arc::new(set))),
                Err(e) => {
                    tracing::warn!(error = %e, "aggregate certificates clash with the configured aggregates; not applied");
                    sets.push(None);
                }
            }
        }
        self.certs.sets = sets;
    }

    /// Drops certificates past their expiry (a removal with them).
    pub(super) fn expire_certificates(&mut self, now: Now) {
        let before = self.certs.held.len();
        self.certs.held.retain(|_, c| c.expires > now.wall_ms);
        if self.certs.held.len() != before {
            self.certificates_changed();
        }
    }

    fn certificates_up_to(&self, depth: usize) -> Vec<Arc<AggregateCertificate>> {
        self.certs
            .held
            .values()
            .filter(|c| depth_of(c) <= depth)
            .cloned()
            .collect()
    }

    pub(super) fn send_certificate_digest(&mut self, to: SocketAddr, level: usize) {
        if self.certs.held.is_empty() {
            return;
        }
        let depth = level.min(u8::MAX as usize);
        let hash = set_hash(self.certificates_up_to(depth).iter().map(|c| c.as_ref()));
        self.send(
            to,
            Message::CertDigest {
                depth: depth as u8,
                hash,
            },
        );
    }

    pub(super) fn on_certificate_digest(
        &mut self,
        from: SocketAddr,
        sender_zone: &ZonePath,
        depth: u8,
        hash: u64,
    ) {
        let common = self.cfg.zone.common_depth(sender_zone);
        let depth = depth as usize;
        let shared = depth.min(common);
        let mine = self.certificates_up_to(shared);
        if shared == depth && set_hash(mine.iter().map(|c| c.as_ref())) == hash {
            return;
        }
        self.send_certificates(from, mine, true);
    }

    pub(super) fn on_certificates(
        &mut self,
        now: Now,
        from: SocketAddr,
        sender_zone: &ZonePath,
        answer: bool,
        certs: Vec<Arc<AggregateCertificate>>,
    ) {
        let common = self.cfg.zone.common_depth(sender_zone);
        let theirs = set_hash(certs.iter().map(|c| c.as_ref()));
        let mut changed = false;
        for cert in certs.into_iter().take(MAX_CERTIFICATES) {
            // Only certificates of zones both agents are in; others are ignored.
            if depth_of(&cert) > common {
                continue;
            }
            if let Ok(true) = self.accept_certificate(now, cert, false) {
                changed = true;
            }
        }
        if changed {
            self.certificates_changed();
        }
        if answer {
            let mine = self.certificates_up_to(common);
            if set_hash(mine.iter().map(|c| c.as_ref())) != theirs {
                self.send_certificates(from, mine, false);
            }
        }
    }

    fn send_certificates(
        &mut self,
        to: SocketAddr,
        certs: Vec<Arc<AggregateCertificate>>,
        answer: bool,
    ) {
        if certs.is_empty() {
            self.send(
                to,
                Message::Certs {
                    answer,
                    certs: Vec::new(),
                },
            );
            return;
        }
        self.send_batched(to, certs, |certs| Message::Certs { answer, certs });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::security::OperatorKey;
    use crate::zone::{Attributes, Value};

    const WALL: u64 = 1_800_000_000_000;
    const ZONES: [&str; 9] = [
        "/eu/fra/h0",
        "/eu/fra/h1",
        "/eu/fra/h2",
        "/eu/ber/h3",
        "/eu/ber/h4",
        "/eu/ber/h5",
        "/us/nyc/h6",
        "/us/nyc/h7",
        "/us/nyc/h8",
    ];

    /// Nine engines on a lossless network, 200 ms rounds, messages
    /// delivered within the step they are sent in.
    struct Net {
        engines: Vec<Engine>,
        addrs: Vec<SocketAddr>,
        now: u64,
    }

    impl Net {
        fn new(trusted: &TrustedKeys, refusals: &Arc<SignatureRefusals>) -> Net {
            let addrs: Vec<SocketAddr> = (0..ZONES.len())
                .map(|i| format!("127.0.0.1:{}", 10_000 + i).parse().unwrap())
                .collect();
            let base = Arc::new(AggregateSet::with_defaults(&[] as &[&str]).unwrap());
            let engines = ZONES
                .iter()
                .enumerate()
                .map(|(i, z)| {
                    let zone = ZonePath::parse(z).unwrap();
                    let mut cfg = EngineConfig::new(i as u64 + 1, zone, addrs[i]);
                    cfg.seeds = vec![addrs[0]];
                    cfg.interval_ms = 200;
                    cfg.certificates = CertConfig {
                        trusted: trusted.clone(),
                        refusals: refusals.clone(),
                    };
                    let mut attrs = Attributes::new();
                    attrs.insert("load1".into(), Value::Float(i as f64));
                    Engine::new(cfg, base.clone(), attrs, Net::at(0)).unwrap()
                })
                .collect();
            Net {
                engines,
                addrs,
                now: 0,
            }
        }

        fn at(t: u64) -> Now {
            Now {
                mono_ms: t,
                wall_ms: WALL + t,
            }
        }

        fn deliver(&mut self, from: usize, effects: Vec<Effect>) {
            let mut queue: VecDeque<(usize, Effect)> =
                effects.into_iter().map(|e| (from, e)).collect();
            while let Some((from, Effect::Send { to, envelope, .. })) = queue.pop_front() {
                let Some(i) = self.addrs.iter().position(|a| *a == to) else {
                    continue;
                };
                let out = self.engines[i].handle(Net::at(self.now), self.addrs[from], envelope);
                queue.extend(out.into_iter().map(|e| (i, e)));
            }
        }

        fn run_ms(&mut self, ms: u64) {
            let end = self.now + ms;
            while self.now < end {
                self.now += 50;
                for i in 0..self.engines.len() {
                    let effects = self.engines[i].tick(Net::at(self.now));
                    self.deliver(i, effects);
                }
            }
        }

        /// The value of `column` in the row of `zone` as engine `i` computes it.
        fn computed(&self, i: usize, zone: &str, column: &str) -> Option<Value> {
            let e = &self.engines[i];
            let row = if zone == "/" {
                e.root().clone()
            } else {
                let z = ZonePath::parse(zone).unwrap();
                let k = z.depth() - 1;
                e.tables()[k].own_row()?.clone()
            };
            (row.zone.as_str() == zone)
                .then(|| row.values().get(column).cloned())
                .flatten()
        }
    }

    #[test]
    fn a_key_taken_out_of_the_trusted_list_takes_its_certificates_with_it() {
        let old = crate::security::operator::test_key();
        let new = crate::security::operator::test_key();
        let both = TrustedKeys::parse(&[old.public_base64(), new.public_base64()]).unwrap();
        let refusals = Arc::new(SignatureRefusals::default());
        let mut net = Net::new(&both, &refusals);
        net.run_ms(10_000);
        let signed = |key: &OperatorKey, name: &str, column: &str, now: u64| {
            AggregateCertificate::signed_by(
                key,
                "/eu",
                name,
                Some(format!("SELECT max(load1) AS {column}")),
                WALL + now,
                WALL + now + 600_000,
            )
        };
        for (key, name, column) in [(&old, "a", "peak_old"), (&new, "b", "peak_new")] {
            let cert = signed(key, name, column, net.now);
            let effects = net.engines[0]
                .install_certificate(Net::at(net.now), cert)
                .unwrap();
            net.deliver(0, effects);
        }
        net.run_ms(10_000);
        for (i, zone) in ZONES.iter().enumerate().take(6) {
            assert_eq!(net.engines[i].certificates().len(), 2, "{zone}");
            assert!(net.computed(i, "/eu", "peak_old").is_some());
        }

        // Agent h4 reloads with the old key taken out: it drops that
        // certificate at once, keeps the other, and refuses the old one
        // when its zone-mates offer it again (counted once).
        let only_new = TrustedKeys::parse(&[new.public_base64()]).unwrap();
        let (dropped, effects) = net.engines[4].set_trusted_keys(Net::at(net.now), only_new);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].name, "a");
        net.deliver(4, effects);
        net.run_ms(300);
        assert_eq!(net.computed(4, "/eu", "peak_old"), None);
        assert_eq!(net.computed(4, "/eu", "peak_new"), Some(Value::Float(5.0)));
        net.run_ms(10_000);
        let held: Vec<String> = net.engines[4]
            .certificates()
            .iter()
            .map(|c| c.name.clone())
            .collect();
        assert_eq!(held, ["b"]);
        assert_eq!(net.computed(4, "/eu", "peak_old"), None);
        assert_eq!(
            refusals.get(SignedKind::Aggregate, RefusalReason::UntrustedKey),
            1
        );
        // The others still trust the old key and keep both.
        assert_eq!(net.engines[3].certificates().len(), 2);

        // A key added by a reload is taken from then on.
        let late = crate::security::operator::test_key();
        let cert = signed(&late, "c", "peak_late", net.now);
        assert_eq!(
            net.engines[4]
                .install_certificate(Net::at(net.now), cert.clone())
                .unwrap_err(),
            CertError::Refused(RefusalReason::UntrustedKey)
        );
        let with_late = TrustedKeys::parse(&[new.public_base64(), late.public_base64()]).unwrap();
        let (dropped, _) = net.engines[4].set_trusted_keys(Net::at(net.now), with_late);
        assert!(dropped.is_empty());
        assert!(net.engines[4]
            .install_certificate(Net::at(net.now), cert)
            .is_ok());
    }

    #[test]
    fn a_signed_certificate_reaches_every_agent_of_its_zone_and_no_other() {
        let key = crate::security::operator::test_key();
        let trusted = TrustedKeys::parse(&[key.public_base64()]).unwrap();
        let refusals = Arc::new(SignatureRefusals::default());
        let mut net = Net::new(&trusted, &refusals);
        net.run_ms(10_000);
        assert!(
            net.engines.iter().all(|e| e.root().members() == 9),
            "the tree did not converge"
        );
        let sql = "SELECT max(load1) AS load1_peak_eu";
        let cert = AggregateCertificate::signed_by(
            &key,
            "/eu",
            "peak",
            Some(sql.into()),
            WALL + net.now,
            WALL + net.now + 600_000,
        );
        // Outside its zone an agent will not take it.
        assert_eq!(
            net.engines[7]
                .install_certificate(Net::at(net.now), cert.clone())
                .unwrap_err(),
            CertError::NotHere
        );
        // Unsigned: refused and counted.
        let mut unsigned = cert.clone();
        unsigned.signature.clear();
        unsigned.name = "unsigned".into();
        assert_eq!(
            net.engines[4]
                .install_certificate(Net::at(net.now), unsigned)
                .unwrap_err(),
            CertError::Refused(RefusalReason::Unsigned)
        );
        assert_eq!(
            refusals.get(SignedKind::Aggregate, RefusalReason::Unsigned),
            1
        );
        let effects = net.engines[1]
            .install_certificate(Net::at(net.now), cert.clone())
            .unwrap();
        net.deliver(1, effects);
        net.run_ms(10_000);
        for (i, zone) in ZONES.iter().enumerate() {
            let held = net.engines[i].certificates();
            if zone.starts_with("/eu/") {
                assert_eq!(held.len(), 1, "{zone} lacks the certificate");
                assert_eq!(held[0].as_ref(), &cert);
                // Its own /eu row and its leaf zone's row carry the column:
                // the maximum over the leaves of /eu (h5, load 5).
                assert_eq!(
                    net.computed(i, "/eu", "load1_peak_eu"),
                    Some(Value::Float(5.0)),
                    "{zone}"
                );
                let leaf_zone = &zone[..zone.rfind('/').unwrap()];
                assert!(net.computed(i, leaf_zone, "load1_peak_eu").is_some());
            } else {
                assert!(held.is_empty(), "{zone} holds a certificate of /eu");
                assert_eq!(net.computed(i, "/us", "load1_peak_eu"), None);
            }
            // Never above its zone.
            assert_eq!(net.computed(i, "/", "load1_peak_eu"), None, "{zone}");
        }
        assert_eq!(
            refusals.get(SignedKind::Aggregate, RefusalReason::Unsigned),
            1
        );

        // A removal that would expire before the install: refused, since
        // once it expired a peer still holding the install would bring it
        // back; the install stays.
        let short = AggregateCertificate::signed_by(
            &key,
            "/eu",
            "peak",
            None,
            WALL + net.now,
            cert.expires - 1,
        );
        assert_eq!(
            net.engines[4]
                .install_certificate(Net::at(net.now), short)
                .unwrap_err(),
            CertError::Refused(RefusalReason::RemovalExpiresFirst)
        );
        assert_eq!(net.engines[4].certificates()[0].as_ref(), &cert);

        // A newer removal from another agent of /eu takes it away everywhere.
        let removal = AggregateCertificate::signed_by(
            &key,
            "/eu",
            "peak",
            None,
            WALL + net.now,
            WALL + net.now + 600_000,
        );
        let effects = net.engines[4]
            .install_certificate(Net::at(net.now), removal.clone())
            .unwrap();
        net.deliver(4, effects);
        net.run_ms(10_000);
        for (i, zone) in ZONES.iter().enumerate().take(6) {
            assert_eq!(
                net.engines[i].certificates()[0].as_ref(),
                &removal,
                "{zone}"
            );
            assert_eq!(net.computed(i, "/eu", "load1_peak_eu"), None, "{zone}");
        }
        // The old install, offered again, is stale.
        assert_eq!(
            net.engines[0]
                .install_certificate(Net::at(net.now), cert)
                .unwrap_err(),
            CertError::Stale
        );
    }
}
