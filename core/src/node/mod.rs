//! One agent's whole protocol, sans-IO: the gossip engine and the overlay
//! behind one interface that takes time and bytes in and gives bytes,
//! answers and host work out, in the style of quinn-proto and foca.
//!
//! The agent's event loop reads a socket, a timer and its API channels,
//! calls the `Node`, and carries out what `poll_output` returns: it sends
//! datagrams, hands answers to their callers and runs host work (reading
//! /proc for a query, running an action, sampling now, changing the log
//! level) whose result comes back as `Input::LocalDone`. The simulator
//! drives the same `Node` with the same bytes (`crate::sim`).
//!
//! What the node owns, so that no caller has to get it right twice: the
//! datagram codec (`crate::transport`), limit screening of what peers send
//! (`crate::engine::Limits`), the command guard that checks operator
//! signatures before anything runs here, certificate installs, and the
//! choice of built-in command. Sealing is not here: the keyring is shared
//! with the admin API at the edge, which seals what this node sends and
//! opens what it is given (`transport::crypto` holds the core of it).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::aggregate::AggregateSet;
use crate::engine::certs::CertError;
use crate::engine::{Effect, Engine, EngineConfig, EngineError, Envelope, LimitCounters, Now};
use crate::overlay::command::{Status, Tally};
use crate::overlay::query::Query;
use crate::overlay::{
    Answer, Outcome, Overlay, OverlayConfig, OverlayEffect, Request, RequestError, Tables,
};
use crate::security::certificate::AggregateCertificate;
use crate::security::command::CommandGuard;
use crate::security::TrustedKeys;
use crate::transport::{self, DropCounters, Frame};
use crate::zone::{Attributes, ZonePath};

#[cfg(test)]
mod tests;

/// What a node is: its engine and overlay settings, and how far a signed
/// command's issue time may be from this clock.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The gossip engine's settings, limits and trusted keys included.
    pub engine: EngineConfig,
    /// The overlay's settings (its address and zone are the engine's).
    pub overlay: OverlayConfig,
    /// Commands issued further than this from our wall clock are refused.
    pub signature_window_ms: u64,
    /// How gossip messages leave the node: as bytes (the agent, and the
    /// simulator by default) or as structs (`Wire::Shared`).
    pub wire: Wire,
}

/// How gossip messages leave a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wire {
    /// Encoded datagrams (`Output::Datagram`), as the agent sends them.
    #[default]
    Bytes,
    /// The envelope itself (`Output::Envelope`), for `Node::handle_envelope`
    /// at the receiver: its rows stay shared between the simulated agents
    /// instead of decoded into a copy for each. The simulator's mode for
    /// 10^5 agents, where a copy per agent would not fit in memory
    /// (BENCHMARKS.md measures both). It skips the codec, and a shared
    /// row's limit screening after the first receiver (the verdict is kept
    /// with its body).
    Shared,
}

impl NodeConfig {
    /// An overlay at the engine's address and zone, with `qid_seed`
    /// making this node's request ids unlike any other's.
    pub fn new(engine: EngineConfig, qid_seed: u64, signature_window_ms: u64) -> NodeConfig {
        let overlay = OverlayConfig::new(engine.advertise, engine.zone.clone(), qid_seed);
        NodeConfig {
            engine,
            overlay,
            signature_window_ms,
            wire: Wire::Bytes,
        }
    }
}

/// What the caller changes in a running node.
#[derive(Debug, Clone)]
pub enum Input {
    /// A fresh sample of this host: the agent's row from now on.
    Attributes(Attributes),
    /// New aggregates and trusted operator keys (SIGHUP).
    Reload {
        /// The aggregate set to compute from now on.
        aggregates: Arc<AggregateSet>,
        /// The operator keys commands and certificates need from now on.
        trusted: TrustedKeys,
    },
    /// The host's answer to `LocalWork` number `qid`.
    LocalDone {
        /// The request id `Output::Local` carried.
        qid: u64,
        /// What the host found or did.
        outcome: Outcome,
    },
    /// Leave the cluster: the tombstone goes out as datagrams.
    Leave,
}

/// What the caller must carry out, in order.
#[derive(Debug)]
pub enum Output {
    /// A plain datagram for `to`; the edge seals it if gossip is encrypted.
    Datagram {
        /// Where it goes.
        to: SocketAddr,
        /// The frame: a gossip envelope or an overlay message, encoded.
        bytes: Vec<u8>,
    },
    /// A gossip message not encoded (`Wire::Shared` only): the edge
    /// encodes it like a `Datagram`'s bytes.
    Envelope {
        /// Where it goes.
        to: SocketAddr,
        /// The message.
        envelope: Envelope,
        /// Its encoded length (without the frame byte).
        len: usize,
    },
    /// The answer, as it stands, of a request started with `Node::request`
    /// (`answer.reply.last` says it is the final one).
    Answer {
        /// The id `Node::request` returned.
        qid: u64,
        /// Result and coverage so far.
        answer: Answer,
    },
    /// Work only the host can do; its result comes back as
    /// `Input::LocalDone` with the same `qid`.
    Local {
        /// The request this host's part belongs to.
        qid: u64,
        /// What to do.
        work: LocalWork,
    },
}

/// Host work a request asks of this agent, already checked: the command's
/// operator signature verified, the query parsed (once, cached).
#[derive(Debug, Clone)]
pub enum LocalWork {
    /// Answer `query` over this host's data (its row, its processes).
    Query {
        /// The parsed query.
        query: Arc<Query>,
        /// This agent's row as it stands.
        attributes: Attributes,
    },
    /// `set-log-level LEVEL`: change this process's log filter.
    SetLogLevel {
        /// The level or filter, unchecked (the edge's logger parses it).
        level: String,
    },
    /// `collect`: sample now, and answer once the sample is the row.
    Collect,
    /// A configured action, by name.
    Action {
        /// The action's name, as the command gave it.
        name: String,
    },
}

/// The agent's protocol state: engine, overlay and the guards around them.
pub struct Node {
    engine: Engine,
    overlay: Overlay,
    guard: CommandGuard,
    wire: Wire,
    limit_counters: Arc<LimitCounters>,
    drops: Arc<DropCounters>,
    out: VecDeque<Output>,
}

impl Node {
    /// A node with `aggregates` and the static part of its row, at `now`.
    pub fn new(
        cfg: NodeConfig,
        aggregates: Arc<AggregateSet>,
        attributes: Attributes,
        now: Now,
    ) -> Result<Node, EngineError> {
        let guard = CommandGuard::new(
            cfg.engine.certificates.trusted.clone(),
            cfg.signature_window_ms,
            cfg.engine.certificates.refusals.clone(),
        );
        let mut overlay_cfg = cfg.overlay;
        overlay_cfg.max_pending = cfg.engine.limits.pending_queries;
        let engine = Engine::new(cfg.engine, aggregates, attributes, now)?;
        Ok(Node {
            engine,
            overlay: Overlay::new(overlay_cfg),
            guard,
            wire: cfg.wire,
            limit_counters: Arc::new(LimitCounters::default()),
            drops: Arc::new(DropCounters::default()),
            out: VecDeque::new(),
        })
    }

    /// The gossip engine, to read (tables, rows, stats).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The overlay, to read (tasks, stats).
    pub fn overlay(&self) -> &Overlay {
        &self.overlay
    }

    /// Limits that refused something, counted for `/metrics`.
    pub fn limit_counters(&self) -> &Arc<LimitCounters> {
        &self.limit_counters
    }

    /// Datagrams dropped before the engine saw them, by reason; the edge
    /// counts the ones its sealing layer refused here too.
    pub fn drops(&self) -> &Arc<DropCounters> {
        &self.drops
    }

    /// One received datagram, plain (opened, if gossip is sealed): decoded,
    /// screened against the limits and handed to the engine or overlay.
    /// Anything that does not decode is dropped and counted by reason.
    pub fn handle_datagram(&mut self, now: Now, from: SocketAddr, bytes: &[u8]) {
        let max = self.engine.config().max_datagram_bytes;
        match transport::decode_frame(bytes, max) {
            Ok(Frame::Gossip(envelope)) => self.handle_envelope(now, from, envelope),
            Ok(Frame::Overlay(message)) => {
                let effects =
                    self.overlay
                        .handle(now.mono_ms, from, message, &Tables::of(&self.engine));
                self.overlay_effects(now, effects);
            }
            Err(reason) => {
                self.drops.count(reason);
                tracing::debug!(%from, %reason, "datagram dropped");
            }
        }
    }

    /// A decoded gossip message (`handle_datagram`'s second half; the
    /// simulator's `Wire::Shared` calls it directly): screened against the
    /// limits, then handed to the engine.
    pub fn handle_envelope(&mut self, now: Now, from: SocketAddr, mut envelope: Envelope) {
        for limit in self.engine.config().limits.screen(&mut envelope) {
            self.limit_counters.count(limit);
        }
        let effects = self.engine.handle(now, from, envelope);
        self.send_gossip(effects);
    }

    /// When `tick` has something to do next (monotonic ms).
    pub fn poll_timeout(&self) -> u64 {
        let overlay = self.overlay.next_tick_ms().unwrap_or(u64::MAX);
        self.engine.next_tick_ms().min(overlay)
    }

    /// The engine's gossip round and the overlay's timers, whichever are due.
    pub fn tick(&mut self, now: Now) {
        if now.mono_ms >= self.engine.next_tick_ms() {
            let effects = self.engine.tick(now);
            self.send_gossip(effects);
        }
        self.tick_overlay(now);
    }

    /// The overlay's timers only, without a gossip round: for the query
    /// simulator, which holds gossip still while a batch of queries runs
    /// over a converged tree with some agents dead but not yet expired
    /// (`sim::overlay`). The agent calls `tick`.
    pub fn tick_overlay(&mut self, now: Now) {
        if self
            .overlay
            .next_tick_ms()
            .is_some_and(|t| now.mono_ms >= t)
        {
            let effects = self.overlay.tick(now.mono_ms, &Tables::of(&self.engine));
            self.overlay_effects(now, effects);
        }
    }

    /// Starts a request for `zone` here; its answers come as
    /// `Output::Answer` with the returned id. Errors found before anything
    /// is sent (bad SQL, an impossible zone, not caught up) come at once.
    pub fn request(
        &mut self,
        now: Now,
        zone: ZonePath,
        request: Request,
        timeout_ms: u64,
    ) -> Result<u64, RequestError> {
        let (qid, effects) = self.overlay.start(
            now.mono_ms,
            zone,
            request,
            timeout_ms,
            &Tables::of(&self.engine),
        )?;
        self.overlay_effects(now, effects);
        Ok(qid)
    }

    /// Installs a signed aggregate certificate given to this agent's API.
    pub fn install_certificate(
        &mut self,
        now: Now,
        cert: AggregateCertificate,
    ) -> Result<(), CertError> {
        let effects = self.engine.install_certificate(now, cert)?;
        self.send_gossip(effects);
        Ok(())
    }

    /// Applies a change from the caller.
    pub fn apply(&mut self, now: Now, input: Input) {
        match input {
            Input::Attributes(attributes) => {
                let effects = self.engine.set_attributes(now, attributes);
                self.send_gossip(effects);
            }
            Input::Reload {
                aggregates,
                trusted,
            } => {
                self.guard.set_trusted(trusted.clone());
                let (dropped, effects) = self.engine.set_trusted_keys(now, trusted);
                for cert in dropped {
                    tracing::warn!(zone = %cert.zone, name = %cert.name, "aggregate certificate dropped: no trusted key signed it");
                }
                self.send_gossip(effects);
                let effects = self.engine.set_aggregates(now, aggregates);
                self.send_gossip(effects);
            }
            Input::LocalDone { qid, outcome } => {
                let effects =
                    self.overlay
                        .local_done(now.mono_ms, qid, outcome, &Tables::of(&self.engine));
                self.overlay_effects(now, effects);
            }
            Input::Leave => {
                let effects = self.engine.leave(now);
                self.send_gossip(effects);
            }
        }
    }

    /// The next thing to carry out, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Every output waiting, oldest first, leaving the queue empty and
    /// unallocated: for a caller that carries out a whole batch at once
    /// (the simulator), so that no node keeps the memory of its largest
    /// burst and nothing is moved twice. Equal to `poll_output` until
    /// `None`.
    pub fn take_outputs(&mut self) -> VecDeque<Output> {
        std::mem::take(&mut self.out)
    }

    fn send_gossip(&mut self, effects: Vec<Effect>) {
        self.out.reserve(effects.len());
        for Effect::Send {
            to,
            envelope,
            bytes,
        } in effects
        {
            self.out.push_back(match self.wire {
                Wire::Bytes => Output::Datagram {
                    to,
                    bytes: transport::encode(&envelope),
                },
                Wire::Shared => Output::Envelope {
                    to,
                    envelope,
                    len: bytes,
                },
            });
        }
    }

    /// Overlay effects become outputs; host work that needs no host (a
    /// refused signature, a malformed built-in) is answered here at once.
    fn overlay_effects(&mut self, now: Now, effects: Vec<OverlayEffect>) {
        let mut queue: VecDeque<OverlayEffect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                OverlayEffect::Send { to, message } => self.out.push_back(Output::Datagram {
                    to,
                    bytes: transport::encode_overlay(&message),
                }),
                OverlayEffect::Answer { qid, answer } => {
                    self.out.push_back(Output::Answer { qid, answer })
                }
                OverlayEffect::Local { qid, request } => match self.local_work(now, &request) {
                    Ok(work) => self.out.push_back(Output::Local { qid, work }),
                    Err(outcome) => queue.extend(self.overlay.local_done(
                        now.mono_ms,
                        qid,
                        outcome,
                        &Tables::of(&self.engine),
                    )),
                },
            }
        }
    }

    /// What the host must do for `request`, or the outcome when nothing
    /// may or can run.
    fn local_work(&mut self, now: Now, request: &Request) -> Result<LocalWork, Outcome> {
        match request {
            Request::Query { sql } => match self.overlay.plan(sql) {
                Ok(query) => Ok(LocalWork::Query {
                    query,
                    attributes: self
                        .engine
                        .own_row()
                        .map(|r| r.values().clone())
                        .unwrap_or_default(),
                }),
                Err(e) => Err(Outcome::Error(RequestError::BadQuery(e.0))),
            },
            Request::Command { name, args, seal } => {
                let leaf = self.engine.zone().clone();
                let host = leaf.to_string();
                if let Err(reason) = self
                    .guard
                    .check(&leaf, name, args, seal.as_ref(), now.wall_ms)
                {
                    let why = format!("operator signature: {}", reason.label());
                    return Err(Outcome::Command(Tally::one(&host, Status::Refused, &why)));
                }
                match (name.as_str(), args.as_slice()) {
                    ("set-log-level", [level]) => Ok(LocalWork::SetLogLevel {
                        level: level.clone(),
                    }),
                    ("set-log-level", _) => {
                        // Logged like one that runs (the edge logs those):
                        // every request to change the level is on record.
                        tracing::warn!(level = %args.join(" "), "set-log-level requested over the overlay");
                        Err(Outcome::Command(Tally::one(
                        &host,
                        Status::Failed,
                            "set-log-level takes one level or filter, like debug or astrolabe=debug,info",
                        )))
                    }
                    ("collect", _) => Ok(LocalWork::Collect),
                    _ => Ok(LocalWork::Action { name: name.clone() }),
                }
            }
        }
    }
}
