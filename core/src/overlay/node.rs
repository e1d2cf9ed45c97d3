//! The sans-IO overlay node: one per agent. Time and messages in, messages
//! and events out; the agent and the simulator drive the same code.
//!
//! A request for zone Z is a task at every node it reaches, keyed by
//! (query id, Z). A node inside Z asks `fanout` contacts of each child of
//! Z for that child's subtree (a DAG: two parents per zone, so one dead
//! contact loses nothing) and merges the best reply per child; a host
//! answers for itself; a node outside Z forwards towards Z through the
//! contacts of the nearest zone it knows. Children that have not answered
//! are asked again through the next contact; replies come back as soon as
//! something improves and for the last time when every child has answered
//! or the task's share of the deadline is up.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use super::command::Tally;
use super::directory::{ChildZone, Directory};
use super::message::{
    chunk_reply, Assembly, AssemblyKey, Outcome, OverlayMessage, Reply, Request, RequestError,
    MAX_MISSING,
};
use super::query::Query;
use crate::zone::ZonePath;

/// Effects of the overlay, for its driver to carry out.
#[derive(Debug, Clone)]
pub enum OverlayEffect {
    /// Send `message` to `to`.
    Send {
        /// The peer's gossip address.
        to: SocketAddr,
        /// The message, to be framed by the transport.
        message: OverlayMessage,
    },
    /// Answer `request` for this host and call `local_done`.
    Local {
        /// The request's id, for `local_done`.
        qid: u64,
        /// What to answer.
        request: Arc<Request>,
    },
    /// The answer of a request started here, as it stands (`last`: final).
    Answer {
        /// The id `start` returned.
        qid: u64,
        /// The answer as it stands.
        answer: Answer,
    },
}

/// What the caller of `start` is told.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The answer as it stands; `reply.last` says it is final.
    pub reply: Reply,
    /// Time since the request started, in ms.
    pub elapsed_ms: u64,
}

/// The parameters of an overlay node; `new` gives the defaults (fanout 2, 75%
/// of the remaining time to each child, 10 s linger).
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// The gossip address this agent is reached at.
    pub addr: SocketAddr,
    /// Its leaf zone.
    pub zone: ZonePath,
    /// Contacts asked at once per child zone.
    pub fanout: usize,
    /// A child's share of its parent's remaining time, in percent.
    pub child_share_percent: u64,
    /// How long a finished task remembers its reply for late duplicates.
    pub linger_ms: u64,
    /// Seed of this agent's request ids, so that two agents' ids do not
    /// collide.
    pub qid_seed: u64,
    /// Most tasks, and separately most reply assemblies, held at once: a
    /// peer asking without end cannot grow this agent's memory.
    pub max_pending: usize,
}

impl OverlayConfig {
    /// The defaults for an agent at `addr` in leaf zone `zone`.
    pub fn new(addr: SocketAddr, zone: ZonePath, qid_seed: u64) -> OverlayConfig {
        OverlayConfig {
            addr,
            zone,
            fanout: 2,
            child_share_percent: 75,
            linger_ms: 10_000,
            qid_seed,
            max_pending: crate::engine::Limits::default().pending_queries,
        }
    }
}

#[derive(Debug)]
struct Child {
    target: ZonePath,
    contacts: Vec<SocketAddr>,
    members: u64,
    /// Hosts the target zone surely has by the gossiped count: `members`
    /// when the row is the target's own, 0 when the target lies below the
    /// row (a forwarded ask, where `members` counts the whole subtree).
    floor: u64,
    /// Asks sent so far (the next one goes to `contacts[asked % len]`).
    asked: usize,
    /// When the latest ask went, and how many asks were retries.
    asked_at: u64,
    retries: u32,
    next_retry: u64,
    /// Some contact acknowledged or answered: the zone is being worked on.
    heard: bool,
    /// Nothing came within the silence limit, or every contact is a
    /// suspect: dead (or its datagrams were lost). It no longer holds back
    /// a settled reply.
    silent: bool,
    /// The peers asked for it so far: suspects if it stays silent.
    asked_peers: Vec<SocketAddr>,
    /// Contacts that refused the ask at their pending limit.
    busy: usize,
    best: Option<Reply>,
}

impl Child {
    /// Every contact of the zone refused the ask at its pending limit.
    fn all_refused(&self) -> bool {
        !self.contacts.is_empty() && self.busy >= self.contacts.len()
    }

    fn done(&self) -> bool {
        self.best.as_ref().is_some_and(|r| r.last)
    }

    /// Nothing better is expected soon: finished, settled below, or silent.
    fn quiet(&self) -> bool {
        self.silent || self.best.as_ref().is_some_and(|r| r.last || r.settled)
    }
}

/// What a task does, which decides where its reply comes from. A task
/// is one of these from its start to its end.
#[derive(Debug)]
enum TaskKind {
    /// For this host's own zone: it answers for itself (`local_done`),
    /// `None` until it has.
    Leaf { local: Option<Outcome> },
    /// For a zone above this host, or one on the way to a zone elsewhere:
    /// it asks contacts of child zones (or of the next zone towards the
    /// target) and merges the best reply per child.
    Inner(Fanout),
    /// Its outcome is known at once: an error found here.
    Fixed(Reply),
}

/// The children an inner task asks, and what their responses taught it.
#[derive(Debug)]
struct Fanout {
    children: Vec<Child>,
    /// The slowest first response (ack or reply) of a child so far: the
    /// round trip this task's children need, which sets the silence limit.
    slowest_response_ms: Option<u64>,
}

impl Fanout {
    /// How long a child may stay unheard before it is called silent: half
    /// again the slowest first response of its siblings, known once most
    /// of them (all but a quarter) responded, so that a few fast answers
    /// do not make the slower live children look dead.
    fn silence_limit(&self) -> Option<u64> {
        let slowest = self.slowest_response_ms?;
        let unheard = self.children.iter().filter(|c| !c.heard).count();
        (unheard <= (self.children.len() / 4).max(1)).then(|| silence_ms(slowest))
    }

    /// The children due to be asked again, each through its next contact:
    /// where the asks go. A child still unheard is silent by now, and the
    /// peers asked for it become suspects.
    fn retries_due(
        &mut self,
        now: u64,
        budget: u64,
        own: SocketAddr,
        suspects: &mut HashMap<SocketAddr, u64>,
    ) -> Vec<(SocketAddr, ZonePath)> {
        let silence = self.silence_limit();
        let mut sends = Vec::new();
        for c in self.children.iter_mut() {
            if c.done() || c.next_retry > now || c.contacts.is_empty() {
                continue;
            }
            if !c.heard {
                c.silent = true;
                for peer in c.asked_peers.drain(..) {
                    if suspects.len() < MAX_SUSPECTS {
                        suspects.insert(peer, now + SUSPECT_MS);
                    }
                }
            }
            // A silent child is asked again soon through its next
            // contact (backing off while it stays silent); one that
            // answered is asked again only to repair a lost reply.
            let wait = match silence {
                Some(s) if !c.heard => (s << c.retries.min(8)).min(retry_ms(budget)),
                _ => retry_ms(budget),
            };
            let to = c.contacts[c.asked % c.contacts.len()];
            if to != own {
                c.asked_peers.push(to);
            }
            c.asked += 1;
            c.retries += 1;
            c.asked_at = now;
            c.next_retry = now + wait;
            sends.push((to, c.target.clone()));
        }
        sends
    }
}

/// Whether a task still works, or has sent its last reply and lingers.
#[derive(Debug)]
enum Phase {
    InProgress,
    /// Its last reply, kept with its chunks for late duplicates of the ask
    /// until `forget_at`.
    Finished {
        chunks: Vec<OverlayMessage>,
        reply: Reply,
        forget_at: u64,
    },
}

#[derive(Debug)]
struct Task {
    request: Arc<Request>,
    query: Option<Arc<Query>>,
    parents: Vec<SocketAddr>,
    /// Started here (`start`): every reply also goes to the caller, as an
    /// `OverlayEffect::Answer`.
    entry: bool,
    started: u64,
    deadline: u64,
    kind: TaskKind,
    version: u32,
    /// Hosts answered in the last reply sent, whether it was settled, and
    /// when it went.
    sent_answered: Option<u32>,
    sent_settled: bool,
    sent_at: u64,
    first_answer_at: Option<u64>,
    /// A child's reply improved since the last reply went up.
    improved: bool,
    phase: Phase,
}

impl Task {
    /// A task in progress, asked by `from` (none: started here).
    fn new(
        now: u64,
        from: Option<SocketAddr>,
        request: Arc<Request>,
        query: Option<Arc<Query>>,
        deadline: u64,
        kind: TaskKind,
    ) -> Task {
        Task {
            request,
            query,
            parents: from.into_iter().collect(),
            entry: from.is_none(),
            started: now,
            deadline,
            kind,
            version: 0,
            sent_answered: None,
            sent_settled: false,
            sent_at: now,
            first_answer_at: None,
            improved: false,
            phase: Phase::InProgress,
        }
    }

    fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Finished { .. })
    }

    /// The children it asks (none for a leaf or fixed task).
    fn children(&self) -> &[Child] {
        match &self.kind {
            TaskKind::Inner(fanout) => &fanout.children,
            _ => &[],
        }
    }
}

/// Counters for the simulator and the agent's metrics.
#[derive(Debug, Clone, Default)]
pub struct OverlayStats {
    /// Asks sent to child zones' contacts.
    pub asks_sent: u64,
    /// Reply chunks sent.
    pub chunks_sent: u64,
    /// Encoded reply bytes sent (chunk payloads).
    pub reply_bytes: u64,
    /// Asks sent again to a child zone that has not answered, or whose reply
    /// was lost.
    pub retries: u64,
    /// Datagrams, chunks or assembled replies that did not decode.
    pub malformed: u64,
    /// Requests, asks and reply assemblies refused at `max_pending`.
    pub pending_refused: u64,
    /// Refusals (`Overloaded`) received from asked peers.
    pub busy_replies: u64,
    /// The most tasks in progress at once so far (not lingering ones).
    pub live_peak: usize,
}

/// One agent's overlay node: the tasks of the requests it takes part in, driven
/// by received messages, `tick` and local answers, returning `OverlayEffect`s.
pub struct Overlay {
    cfg: OverlayConfig,
    tasks: BTreeMap<(u64, ZonePath), Task>,
    /// Tasks in `tasks` still in progress: what `max_pending` bounds.
    live: usize,
    /// Finished tasks lingering for late duplicates, oldest first: at most
    /// `max_pending` of them, the oldest forgotten early beyond that. A
    /// burst of short queries must not fill the limit with finished work.
    lingering: VecDeque<(u64, ZonePath)>,
    assemblies: HashMap<AssemblyKey, Assembly>,
    inbox: VecDeque<Internal>,
    next_qid: u64,
    stats: OverlayStats,
    /// Plans by SQL text: every node of a query parses it once, not once
    /// per zone it answers for.
    plans: HashMap<String, Arc<Query>>,
    /// Peers that stayed silent when asked, until when they are suspected.
    /// Later requests ask a zone's other contacts first and do not wait
    /// for a child whose every contact is suspected: MON's adjustment
    /// around dead nodes, remembered from one request to the next. Any
    /// datagram from a peer clears it.
    suspects: HashMap<SocketAddr, u64>,
}

/// A request for one zone arriving at this node, from a peer's ask or
/// this node's own (`from`), or from `start` (no `from`).
struct Opening {
    from: Option<SocketAddr>,
    qid: u64,
    zone: ZonePath,
    request: Arc<Request>,
    budget_ms: u32,
}

enum Internal {
    Ask {
        from: SocketAddr,
        qid: u64,
        zone: ZonePath,
        request: Arc<Request>,
        budget_ms: u32,
    },
    Reply {
        qid: u64,
        zone: ZonePath,
        reply: Reply,
    },
}

/// Retries wait at least this long: below it a reply is merely in flight.
const MIN_RETRY_MS: u64 = 40;
/// An improvement is passed up at most this often before the last reply.
const MIN_FLUSH_MS: u64 = 15;
/// A child is silent after this many times the slowest first response of
/// its siblings (in percent): slower than every live sibling by half again.
const SILENCE_PERCENT: u64 = 150;
/// How long a silent peer stays suspected (unless it is heard from).
const SUSPECT_MS: u64 = 60_000;
/// Suspects remembered at most (a bound on memory, not on correctness).
const MAX_SUSPECTS: usize = 4096;

fn merge_outcome(query: Option<&Query>, acc: &mut Option<Outcome>, other: &Outcome) {
    match (acc.as_mut(), other) {
        (_, Outcome::Error(_)) => *acc = Some(other.clone()),
        (Some(Outcome::Error(_)), _) => {}
        (None, o) => *acc = Some(o.clone()),
        (Some(Outcome::Query(a)), Outcome::Query(b)) => {
            if let Some(q) = query {
                q.merge(a, b)
            }
        }
        (Some(Outcome::Command(a)), Outcome::Command(b)) => a.merge(b),
        _ => {}
    }
}

impl Overlay {
    /// A node with no task yet.
    pub fn new(cfg: OverlayConfig) -> Overlay {
        let next_qid = cfg.qid_seed | 1;
        Overlay {
            cfg,
            tasks: BTreeMap::new(),
            live: 0,
            lingering: VecDeque::new(),
            assemblies: HashMap::new(),
            inbox: VecDeque::new(),
            next_qid,
            stats: OverlayStats::default(),
            plans: HashMap::new(),
            suspects: HashMap::new(),
        }
    }

    /// Its counters.
    pub fn stats(&self) -> &OverlayStats {
        &self.stats
    }

    /// The parameters it was made with.
    pub fn config(&self) -> &OverlayConfig {
        &self.cfg
    }

    /// Tasks in progress or lingering (for tests and metrics).
    pub fn task_count(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks in progress, which `max_pending` bounds.
    pub fn live_count(&self) -> usize {
        self.live
    }

    fn overloaded(&self) -> RequestError {
        RequestError::Overloaded(self.cfg.max_pending.min(u32::MAX as usize) as u32)
    }

    /// Keeps a new task; every insertion goes through here.
    fn insert_task(&mut self, key: (u64, ZonePath), task: Task) {
        if self.tasks.insert(key, task).is_none() {
            self.live += 1;
            self.stats.live_peak = self.stats.live_peak.max(self.live);
        }
    }

    /// Starts a request for `zone` here; its answers come as
    /// `OverlayEffect::Answer` with the returned id. Errors found before
    /// anything is sent (bad SQL, a zone this agent knows cannot exist)
    /// are returned at once.
    pub fn start(
        &mut self,
        now: u64,
        zone: ZonePath,
        request: Request,
        timeout_ms: u64,
        dir: &dyn Directory,
    ) -> Result<(u64, Vec<OverlayEffect>), RequestError> {
        if let Request::Query { sql } = &request {
            Query::parse(sql).map_err(|e| RequestError::BadQuery(e.0))?;
        }
        if let Some(e) = self.locally_unknown(&zone, dir) {
            return Err(e);
        }
        if zone != self.cfg.zone && !dir.ready() {
            return Err(self.not_ready());
        }
        // Refused now, not answered late as if hosts had timed out. The
        // request's own sub-tasks here (one per level below the zone) are
        // admitted with it, so `live` stays below max_pending plus the depth.
        if self.live >= self.cfg.max_pending {
            self.stats.pending_refused += 1;
            return Err(self.overloaded());
        }
        // Ids: a per-agent sequence scrambled with the agent's seed, so two
        // agents' ids do not collide and a restarted agent starts afresh.
        self.next_qid = self
            .next_qid
            .wrapping_mul(0x5851_f42d_4c95_7f2d)
            .wrapping_add(0x1405_7b7e_f767_814f);
        let qid = self.next_qid;
        let mut out = Vec::new();
        let opening = Opening {
            from: None,
            qid,
            zone,
            request: Arc::new(request),
            budget_ms: timeout_ms.min(u32::MAX as u64) as u32,
        };
        self.open(now, opening, dir, &mut out);
        self.drain(now, dir, &mut out);
        Ok((qid, out))
    }

    /// `sql` parsed, from a small cache: a query asked again and again
    /// (a dashboard's) is parsed once.
    pub fn plan(&mut self, sql: &str) -> Result<Arc<Query>, super::query::QueryError> {
        if let Some(q) = self.plans.get(sql) {
            return Ok(q.clone());
        }
        let q = Arc::new(Query::parse(sql)?);
        if self.plans.len() >= 64 {
            self.plans.clear();
        }
        self.plans.insert(sql.to_string(), q.clone());
        Ok(q)
    }

    fn not_ready(&self) -> RequestError {
        RequestError::NotReady(self.cfg.addr.to_string())
    }

    /// A zone whose parent's table this agent holds, but which is not in it.
    fn locally_unknown(&self, zone: &ZonePath, dir: &dyn Directory) -> Option<RequestError> {
        if zone.is_root() || zone.contains(&self.cfg.zone) {
            return None;
        }
        let parent = zone.parent()?;
        let children = dir.children(&parent)?;
        if children.iter().any(|c| c.zone == *zone) {
            None
        } else {
            Some(RequestError::UnknownZone(zone.to_string()))
        }
    }

    /// A datagram's message from `from`.
    pub fn handle(
        &mut self,
        now: u64,
        from: SocketAddr,
        message: OverlayMessage,
        dir: &dyn Directory,
    ) -> Vec<OverlayEffect> {
        let mut out = Vec::new();
        // It is alive, whatever it says.
        self.suspects.remove(&from);
        match message {
            OverlayMessage::Ask {
                qid,
                zone,
                request,
                budget_ms,
            } => self.inbox.push_back(Internal::Ask {
                from,
                qid,
                zone,
                request,
                budget_ms,
            }),
            OverlayMessage::Chunk {
                qid,
                zone,
                version,
                index,
                count,
                bytes,
            } => {
                if count == 0 || index >= count || count as usize > super::message::MAX_CHUNKS {
                    self.stats.malformed += 1;
                    return out;
                }
                let key = (from, qid, zone.clone(), version);
                if self.assemblies.len() >= self.cfg.max_pending
                    && !self.assemblies.contains_key(&key)
                {
                    self.stats.pending_refused += 1;
                    return out;
                }
                let done = {
                    let asm = self
                        .assemblies
                        .entry(key.clone())
                        .or_insert_with(|| Assembly::new(count, now));
                    if asm.parts.len() != count as usize {
                        self.stats.malformed += 1;
                        return out;
                    }
                    asm.add(index, bytes)
                };
                match done {
                    None => {}
                    Some(result) => {
                        self.assemblies.remove(&key);
                        match result {
                            Ok(reply) => self.inbox.push_back(Internal::Reply { qid, zone, reply }),
                            Err(_) => self.stats.malformed += 1,
                        }
                    }
                }
            }
        }
        self.drain(now, dir, &mut out);
        out
    }

    /// This host's own answer to a request (after `OverlayEffect::Local`).
    pub fn local_done(
        &mut self,
        now: u64,
        qid: u64,
        outcome: Outcome,
        dir: &dyn Directory,
    ) -> Vec<OverlayEffect> {
        let mut out = Vec::new();
        let key = (qid, self.cfg.zone.clone());
        if let Some(Task {
            kind: TaskKind::Leaf {
                local: local @ None,
            },
            ..
        }) = self.tasks.get_mut(&key)
        {
            *local = Some(outcome);
        }
        self.progress(now, &key, &mut out);
        self.drain(now, dir, &mut out);
        out
    }

    /// When `tick` has something to do next.
    pub fn next_tick_ms(&self) -> Option<u64> {
        let mut next: Option<u64> = None;
        let mut at = |t: u64| next = Some(next.map_or(t, |n: u64| n.min(t)));
        for task in self.tasks.values() {
            if let Phase::Finished { forget_at, .. } = task.phase {
                at(forget_at);
                continue;
            }
            at(task.deadline);
            for c in task.children() {
                if !c.done() {
                    at(c.next_retry);
                }
            }
            if task.improved {
                at(task.sent_at + self.flush_gap(task));
            }
        }
        next
    }

    /// Retries, flushes, deadlines and forgetting.
    pub fn tick(&mut self, now: u64, dir: &dyn Directory) -> Vec<OverlayEffect> {
        let mut out = Vec::new();
        self.tasks.retain(|_, t| match t.phase {
            Phase::InProgress => true,
            Phase::Finished { forget_at, .. } => forget_at > now,
        });
        if self.lingering.len() > self.tasks.len() - self.live {
            let tasks = &self.tasks;
            self.lingering.retain(|k| tasks.contains_key(k));
        }
        self.assemblies.retain(|_, a| a.started_ms + 5_000 > now);
        self.suspects.retain(|_, until| *until > now);
        let keys: Vec<(u64, ZonePath)> = self.tasks.keys().cloned().collect();
        for key in keys {
            if let Some(task) = self.tasks.get_mut(&key) {
                if task.is_finished() {
                    continue;
                }
                let budget = self.cfg.child_share_percent * task.deadline.saturating_sub(now) / 100;
                // A leaf or fixed task asks nobody: only its deadline may be up.
                let sends = match &mut task.kind {
                    TaskKind::Inner(fanout) => {
                        fanout.retries_due(now, budget, self.cfg.addr, &mut self.suspects)
                    }
                    _ => Vec::new(),
                };
                self.stats.retries += sends.len() as u64;
                for (to, target) in sends {
                    let request = task.request.clone();
                    Self::ask(
                        &self.cfg,
                        &mut self.stats,
                        &mut self.inbox,
                        to,
                        key.0,
                        target,
                        request,
                        budget,
                        &mut out,
                    );
                }
            }
            self.progress(now, &key, &mut out);
        }
        self.drain(now, dir, &mut out);
        out
    }

    fn flush_gap(&self, task: &Task) -> u64 {
        let first = task.first_answer_at.unwrap_or(task.started);
        (first - task.started).clamp(MIN_FLUSH_MS, 200)
    }

    #[allow(clippy::too_many_arguments)]
    fn ask(
        cfg: &OverlayConfig,
        stats: &mut OverlayStats,
        inbox: &mut VecDeque<Internal>,
        to: SocketAddr,
        qid: u64,
        zone: ZonePath,
        request: Arc<Request>,
        budget_ms: u64,
        out: &mut Vec<OverlayEffect>,
    ) {
        let budget_ms = budget_ms.min(u32::MAX as u64) as u32;
        if to == cfg.addr {
            inbox.push_back(Internal::Ask {
                from: to,
                qid,
                zone,
                request,
                budget_ms,
            });
            return;
        }
        let message = OverlayMessage::Ask {
            qid,
            zone,
            request,
            budget_ms,
        };
        stats.asks_sent += 1;
        out.push(OverlayEffect::Send { to, message });
    }

    fn drain(&mut self, now: u64, dir: &dyn Directory, out: &mut Vec<OverlayEffect>) {
        while let Some(item) = self.inbox.pop_front() {
            match item {
                Internal::Ask {
                    from,
                    qid,
                    zone,
                    request,
                    budget_ms,
                } => {
                    let opening = Opening {
                        from: Some(from),
                        qid,
                        zone,
                        request,
                        budget_ms,
                    };
                    self.open(now, opening, dir, out)
                }
                Internal::Reply { qid, zone, reply } => self.on_reply(now, qid, zone, reply, out),
            }
        }
    }

    /// A request for one zone arrives here: from `start` or an ask.
    fn open(&mut self, now: u64, ask: Opening, dir: &dyn Directory, out: &mut Vec<OverlayEffect>) {
        let Opening {
            from,
            qid,
            zone,
            request,
            budget_ms,
        } = ask;
        // No caller may wait longer than the API allows, so no peer's ask
        // may hold a pending slot longer (a u32 budget is 49 days).
        let budget_ms = budget_ms.min(super::message::MAX_TIMEOUT_MS as u32);
        let key = (qid, zone.clone());
        if self.tasks.contains_key(&key) {
            if let Some(from) = from {
                self.answer_again(from, &key, out);
            }
            return;
        }
        if let Some(peer) = from.filter(|f| *f != self.cfg.addr) {
            if self.live >= self.cfg.max_pending {
                self.refuse(peer, qid, &zone, out);
                return;
            }
        }
        let query = match request.as_ref() {
            Request::Query { sql } => match self.plan(sql) {
                Ok(q) => Some(q),
                Err(e) => {
                    // Only a peer with another parser gets here.
                    let e = RequestError::BadQuery(e.0);
                    self.fixed(now, from, key, request, Outcome::Error(e), out);
                    return;
                }
            },
            Request::Command { .. } => None,
        };
        let own = &self.cfg.zone;
        if zone != *own && !dir.ready() {
            // Its tables may lack children it has not heard of yet: an
            // answer from them would leave hosts out without saying so.
            let e = self.not_ready();
            self.fixed(now, from, key, request, Outcome::Error(e), out);
            return;
        }
        let deadline = now + budget_ms as u64;
        if zone == *own {
            let kind = TaskKind::Leaf { local: None };
            let task = Task::new(now, from, request.clone(), query, deadline, kind);
            self.insert_task(key, task);
            out.push(OverlayEffect::Local { qid, request });
            return;
        }
        let Some(plan) = self.zones_to_ask(&zone, dir) else {
            let e = RequestError::UnknownZone(zone.to_string());
            self.fixed(now, from, key, request, Outcome::Error(e), out);
            return;
        };
        let budget = self.cfg.child_share_percent * budget_ms as u64 / 100;
        let (children, asks) = self.first_asks(now, plan, budget);
        let fanout = Fanout {
            children,
            slowest_response_ms: None,
        };
        let kind = TaskKind::Inner(fanout);
        let task = Task::new(now, from, request.clone(), query, deadline, kind);
        // Acknowledge at once: the asker learns this contact is alive, and
        // from the round trip how long to wait before calling a sibling of
        // ours silent and asking its next contact.
        if let Some(from) = from.filter(|f| *f != self.cfg.addr) {
            let chunks = ack_chunks(qid, &zone, &task);
            self.send_chunks(from, chunks, out);
        }
        self.insert_task(key.clone(), task);
        for (to, target) in asks {
            Self::ask(
                &self.cfg,
                &mut self.stats,
                &mut self.inbox,
                to,
                qid,
                target,
                request.clone(),
                budget,
                out,
            );
        }
        // A zone without children answers at once (empty, complete).
        self.progress(now, &key, out);
    }

    /// A repeated ask for a task held here: the reply was lost, or this is
    /// a new parent. It gets the latest reply, or an acknowledgement.
    fn answer_again(
        &mut self,
        from: SocketAddr,
        key: &(u64, ZonePath),
        out: &mut Vec<OverlayEffect>,
    ) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        let (qid, zone) = key;
        if !task.parents.contains(&from) {
            task.parents.push(from);
        }
        let latest = match &task.phase {
            Phase::Finished { chunks, reply, .. } => Some((chunks.clone(), reply.clone())),
            Phase::InProgress if task.sent_answered.is_some() => {
                let reply = Self::current(task);
                Some((chunk_reply(*qid, zone, task.version, &reply), reply))
            }
            Phase::InProgress => None,
        };
        match latest {
            Some((chunks, reply)) => {
                if from == self.cfg.addr {
                    self.inbox.push_back(Internal::Reply {
                        qid: *qid,
                        zone: zone.clone(),
                        reply,
                    });
                } else {
                    self.send_chunks(from, chunks, out);
                }
            }
            None if !matches!(task.kind, TaskKind::Leaf { .. }) => {
                let chunks = ack_chunks(*qid, zone, task);
                self.send_chunks(from, chunks, out);
            }
            None => {}
        }
    }

    /// Refuses a peer's ask at the pending limit. Nothing is kept; the
    /// asker is told at once, and asks the zone's next contact instead of
    /// waiting for silence.
    fn refuse(
        &mut self,
        peer: SocketAddr,
        qid: u64,
        zone: &ZonePath,
        out: &mut Vec<OverlayEffect>,
    ) {
        self.stats.pending_refused += 1;
        let refusal = Reply::finished(Outcome::Error(self.overloaded()));
        let chunks = chunk_reply(qid, zone, 0, &refusal);
        self.send_chunks(peer, chunks, out);
    }

    /// Which zones to ask for `zone`, each with the row it is reached
    /// through: its children when this agent is inside it, else the zone
    /// on the way to it. `None`: this agent knows no way there.
    fn zones_to_ask(
        &self,
        zone: &ZonePath,
        dir: &dyn Directory,
    ) -> Option<Vec<(ZonePath, ChildZone)>> {
        let own = &self.cfg.zone;
        if zone.contains(own) {
            dir.children(zone)
                .map(|cs| cs.into_iter().map(|c| (c.zone.clone(), c)).collect())
        } else {
            let depth = zone.common_depth(own);
            let via = zone.ancestor(depth + 1);
            let parent = zone.ancestor(depth);
            match (via, parent) {
                (Some(via), Some(parent)) => dir
                    .children(&parent)
                    .and_then(|cs| cs.into_iter().find(|c| c.zone == via))
                    .map(|c| vec![(zone.clone(), c)]),
                _ => None,
            }
        }
    }

    /// The children of a new inner task and the asks that go at once:
    /// `fanout` contacts of each, in the order they are tried.
    fn first_asks(
        &self,
        now: u64,
        plan: Vec<(ZonePath, ChildZone)>,
        budget: u64,
    ) -> (Vec<Child>, Vec<(SocketAddr, ZonePath)>) {
        let mut children = Vec::new();
        let mut asks = Vec::new();
        for (target, c) in plan {
            let mut contacts = c.contacts.clone();
            // Itself first: answering its own part costs no message; then
            // the contacts not suspected of being dead, in their order.
            let own = self.cfg.addr;
            let suspected = |a: &SocketAddr| self.suspects.get(a).is_some_and(|u| *u > now);
            contacts.sort_by_key(|a| (*a != own, suspected(a)));
            let all_suspected = !contacts.is_empty() && contacts.iter().all(suspected);
            let first = contacts.len().min(self.cfg.fanout.max(1));
            for to in &contacts[..first] {
                asks.push((*to, target.clone()));
            }
            let asked_peers = contacts[..first]
                .iter()
                .copied()
                .filter(|a| *a != own)
                .collect();
            let floor = if c.zone == target { c.members } else { 0 };
            children.push(Child {
                target,
                contacts,
                floor,
                members: c.members,
                asked: first,
                asked_at: now,
                retries: 0,
                next_retry: now + retry_ms(budget),
                heard: false,
                silent: all_suspected,
                asked_peers,
                busy: 0,
                best: None,
            });
        }
        (children, asks)
    }

    /// A task whose reply is known at once (an error found here).
    fn fixed(
        &mut self,
        now: u64,
        from: Option<SocketAddr>,
        key: (u64, ZonePath),
        request: Arc<Request>,
        outcome: Outcome,
        out: &mut Vec<OverlayEffect>,
    ) {
        let reply = Reply::finished(outcome);
        let task = Task::new(now, from, request, None, now, TaskKind::Fixed(reply));
        self.insert_task(key.clone(), task);
        self.progress(now, &key, out);
    }

    fn on_reply(
        &mut self,
        now: u64,
        qid: u64,
        zone: ZonePath,
        reply: Reply,
        out: &mut Vec<OverlayEffect>,
    ) {
        // The tasks that asked for `zone`: its parent's, or a forwarding one.
        let mut keys = Vec::new();
        for ((q, z), task) in self.tasks.range((qid, ZonePath::root())..) {
            if *q != qid {
                break;
            }
            if !task.is_finished() && task.children().iter().any(|c| c.target == zone) {
                keys.push((*q, z.clone()));
            }
        }
        for key in keys {
            if let Some(task) = self.tasks.get_mut(&key) {
                // Only inner tasks have children.
                let TaskKind::Inner(fanout) = &mut task.kind else {
                    continue;
                };
                if matches!(reply.outcome, Outcome::Error(RequestError::NotReady(_))) {
                    // A contact that has just started: alive, but not an
                    // answer. Ask the zone's next contact now.
                    for c in fanout
                        .children
                        .iter_mut()
                        .filter(|c| c.target == zone && !c.done())
                    {
                        c.next_retry = c.next_retry.min(now);
                    }
                    continue;
                }
                if matches!(reply.outcome, Outcome::Error(RequestError::Overloaded(_))) {
                    // A contact at its limit: alive, so no suspect; its
                    // zone's other contacts are asked at once, and once
                    // all refused, the zone no longer holds the reply back.
                    self.stats.busy_replies += 1;
                    for c in fanout
                        .children
                        .iter_mut()
                        .filter(|c| c.target == zone && !c.done())
                    {
                        c.heard = true;
                        c.busy += 1;
                        if c.busy < c.contacts.len() {
                            c.next_retry = now;
                        } else if c.best.is_none() {
                            c.silent = true;
                        }
                    }
                    continue;
                }
                let is_error = matches!(reply.outcome, Outcome::Error(_));
                // An empty interim reply is only ever an acknowledgement.
                let ack = reply.answered == 0 && !reply.last && !is_error;
                let mut newly_heard = false;
                for c in fanout.children.iter_mut().filter(|c| c.target == zone) {
                    if !c.heard {
                        c.heard = true;
                        newly_heard = true;
                        let rtt = now.saturating_sub(c.asked_at);
                        if fanout.slowest_response_ms.is_none_or(|s| rtt > s) {
                            fanout.slowest_response_ms = Some(rtt);
                        }
                    }
                    if ack {
                        continue;
                    }
                    c.silent = false;
                    // The best reply per child, never two merged: the two
                    // contacts of a zone answer for the same hosts.
                    let better = match &c.best {
                        None => true,
                        Some(b) => {
                            (reply.answered, reply.last, reply.settled)
                                > (b.answered, b.last, b.settled)
                                || is_error
                        }
                    };
                    if better {
                        c.best = Some(reply.clone());
                        task.improved = true;
                    }
                }
                // Now that a round trip is known, children not heard from
                // are called silent (and asked again) after a short wait
                // instead of a fifth of the budget.
                if newly_heard {
                    if let Some(s) = fanout.silence_limit() {
                        for c in fanout.children.iter_mut().filter(|c| !c.heard) {
                            c.next_retry = c.next_retry.min(c.asked_at + s);
                        }
                    }
                }
                if ack {
                    continue;
                }
                if task.first_answer_at.is_none() {
                    task.first_answer_at = Some(now);
                    task.sent_at = now;
                }
            }
            self.progress(now, &key, out);
        }
    }

    /// The task's reply as it stands.
    fn current(task: &Task) -> Reply {
        let fanout = match &task.kind {
            TaskKind::Fixed(r) => return r.clone(),
            TaskKind::Leaf { local } => {
                return match local {
                    Some(o) => Reply {
                        answered: 1,
                        expected: 1,
                        ..Reply::finished(o.clone())
                    },
                    None => Reply {
                        expected: 1,
                        ..Reply::new(empty_outcome(task))
                    },
                }
            }
            TaskKind::Inner(fanout) => fanout,
        };
        let mut outcome: Option<Outcome> = None;
        let (mut answered, mut expected) = (0u32, 0u32);
        let mut missing = Vec::new();
        let mut missing_more = 0u32;
        let mut refused: Vec<ZonePath> = Vec::new();
        let mut last = true;
        for c in &fanout.children {
            match &c.best {
                Some(r) => {
                    merge_outcome(task.query.as_deref(), &mut outcome, &r.outcome);
                    answered = answered.saturating_add(r.answered);
                    // The parent's gossiped count of the child's hosts is
                    // a floor even for its last reply: a contact that knows
                    // fewer hosts than its zone's row says (it has just
                    // started, or lost a row) must not make the answer
                    // look complete while hosts are left out.
                    expected = expected
                        .saturating_add(r.expected.max(c.floor.min(u32::MAX as u64) as u32));
                    for m in &r.missing {
                        if missing.len() < MAX_MISSING {
                            missing.push(m.clone());
                        } else {
                            missing_more += 1;
                        }
                    }
                    missing_more = missing_more.saturating_add(r.missing_more);
                    let room = MAX_MISSING.saturating_sub(refused.len());
                    refused.extend(r.refused.iter().take(room).cloned());
                    last &= r.last;
                }
                None => {
                    expected = expected.saturating_add(c.members.min(u32::MAX as u64) as u32);
                    if missing.len() < MAX_MISSING {
                        missing.push(c.target.clone());
                    } else {
                        missing_more += 1;
                    }
                    if c.all_refused() && refused.len() < MAX_MISSING {
                        refused.push(c.target.clone());
                    }
                    last = false;
                }
            }
        }
        Reply {
            last,
            settled: last || fanout.children.iter().all(Child::quiet),
            outcome: outcome.unwrap_or_else(|| empty_outcome(task)),
            answered,
            expected,
            missing,
            missing_more,
            refused,
        }
    }

    /// Passes the task's reply up when it is final, or improved and due.
    fn progress(&mut self, now: u64, key: &(u64, ZonePath), out: &mut Vec<OverlayEffect>) {
        let gap = match self.tasks.get(key) {
            Some(t) => self.flush_gap(t),
            None => return,
        };
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        if task.is_finished() {
            return;
        }
        let mut reply = Self::current(task);
        let expired = now >= task.deadline;
        if expired {
            reply.last = true;
            reply.settled = true;
        }
        // Interim replies: the entry passes every improvement to its
        // caller; an inner task passes one up at once when it is settled
        // (all that looks alive below has answered), else at most once per
        // flush gap, which bounds the bytes while dead hosts are awaited.
        let grew = task.sent_answered.is_none_or(|a| reply.answered > a);
        let newly_settled = reply.settled && !task.sent_settled;
        let due = reply.last
            || (reply.answered > 0
                && if task.entry {
                    grew
                } else {
                    (grew || newly_settled) && (reply.settled || now >= task.sent_at + gap)
                });
        if !due {
            return;
        }
        task.version += 1;
        task.improved = false;
        task.sent_answered = Some(reply.answered);
        task.sent_settled = reply.settled;
        task.sent_at = now;
        let elapsed_ms = now - task.started;
        let (qid, zone) = key.clone();
        if task.entry {
            out.push(OverlayEffect::Answer {
                qid,
                answer: Answer {
                    reply: reply.clone(),
                    elapsed_ms,
                },
            });
        }
        let chunks = chunk_reply(qid, &zone, task.version, &reply);
        let parents = task.parents.clone();
        if reply.last {
            task.phase = Phase::Finished {
                chunks: chunks.clone(),
                reply: reply.clone(),
                forget_at: now.max(task.deadline) + self.cfg.linger_ms,
            };
            self.live -= 1;
            self.lingering.push_back(key.clone());
            while self.lingering.len() > self.cfg.max_pending {
                if let Some(old) = self.lingering.pop_front() {
                    if self.tasks.get(&old).is_some_and(Task::is_finished) {
                        self.tasks.remove(&old);
                    }
                }
            }
        }
        for p in parents {
            if p == self.cfg.addr {
                self.inbox.push_back(Internal::Reply {
                    qid,
                    zone: zone.clone(),
                    reply: reply.clone(),
                });
            } else {
                self.send_chunks(p, chunks.clone(), out);
            }
        }
    }

    fn send_chunks(
        &mut self,
        to: SocketAddr,
        chunks: Vec<OverlayMessage>,
        out: &mut Vec<OverlayEffect>,
    ) {
        if to == self.cfg.addr {
            return;
        }
        for message in chunks {
            self.stats.chunks_sent += 1;
            if let OverlayMessage::Chunk { bytes, .. } = &message {
                self.stats.reply_bytes += bytes.len() as u64;
            }
            out.push(OverlayEffect::Send { to, message });
        }
    }
}

fn empty_outcome(task: &Task) -> Outcome {
    match &task.query {
        Some(q) => Outcome::Query(q.empty()),
        None => Outcome::Command(Tally::default()),
    }
}

/// How long to wait for a child before asking the next contact: a share
/// of the time it was given, so retries fit several times in the budget.
fn retry_ms(child_budget: u64) -> u64 {
    (child_budget / 5).clamp(MIN_RETRY_MS, 1_000)
}

/// How long a child may stay silent, given the slowest first response of
/// its siblings.
fn silence_ms(slowest_response_ms: u64) -> u64 {
    (slowest_response_ms * SILENCE_PERCENT / 100).max(MIN_RETRY_MS)
}

/// The acknowledgement of an ask: an empty interim reply (version 0, which
/// no real reply uses), sent before any work is done.
fn ack_chunks(qid: u64, zone: &ZonePath, task: &Task) -> Vec<OverlayMessage> {
    chunk_reply(qid, zone, 0, &Reply::new(empty_outcome(task)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::overlay::query::LocalData;

    const SQL: &str = "SELECT count(*) AS n FROM host";
    const LINK_MS: u64 = 10;

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7946))
    }

    fn zone(p: &str) -> ZonePath {
        ZonePath::parse(p).unwrap()
    }

    /// `/x/e` (the entry, addr 1) and `/z` with hosts a, b, c (addrs 2, 3,
    /// 4), contacts a and b; c is dead but its row still counts. `ready`:
    /// the agent has caught up; `z_members`: the hosts `/z`'s row counts.
    #[derive(Clone, Copy)]
    struct Dir {
        ready: bool,
        z_members: u64,
    }

    const DIR: Dir = Dir {
        ready: true,
        z_members: 3,
    };

    impl Directory for Dir {
        fn ready(&self) -> bool {
            self.ready
        }

        fn children(&self, z: &ZonePath) -> Option<Vec<ChildZone>> {
            let child = |p: &str, contacts: Vec<u8>, members| ChildZone {
                zone: zone(p),
                contacts: contacts.into_iter().map(addr).collect(),
                members,
            };
            match z.as_str() {
                "/" => Some(vec![
                    child("/x", vec![1], 1),
                    child("/z", vec![2, 3], self.z_members),
                ]),
                "/x" => Some(vec![child("/x/e", vec![1], 1)]),
                "/z" => Some(vec![
                    child("/z/a", vec![2], 1),
                    child("/z/b", vec![3], 1),
                    child("/z/c", vec![4], 1),
                ]),
                _ => None,
            }
        }
    }

    /// Replies as the entry received them from a contact of `/z`.
    #[derive(Debug)]
    struct Seen {
        at: u64,
        reply: Reply,
    }

    /// Runs one query for `/z` from the entry, every link LINK_MS, the
    /// dead host dropping what it is sent; returns the replies for `/z`
    /// that reached the entry and when, and when host b's answer reached
    /// contact a.
    fn run(nodes: &mut [Overlay], start: u64) -> (Vec<Seen>, Option<u64>) {
        let (seen, b_reached_a, _) = run_with(nodes, &[DIR; 3], zone("/z"), start);
        (seen, b_reached_a)
    }

    /// `run` with each node's own directory, for `zone`; also returns the
    /// entry's answers.
    fn run_with(
        nodes: &mut [Overlay],
        dirs: &[Dir],
        target: ZonePath,
        start: u64,
    ) -> (Vec<Seen>, Option<u64>, Vec<Reply>) {
        let q = Query::parse(SQL).unwrap();
        let mut queue: BTreeMap<u64, Vec<(usize, SocketAddr, OverlayMessage)>> = BTreeMap::new();
        let mut effects: Vec<(usize, Vec<OverlayEffect>)> = Vec::new();
        let (_, out) = nodes[0]
            .start(
                start,
                target,
                Request::Query { sql: SQL.into() },
                2000,
                &dirs[0],
            )
            .unwrap();
        effects.push((0, out));
        let mut seen = Vec::new();
        let mut answers = Vec::new();
        let mut b_reached_a = None;
        let mut assemblies: HashMap<AssemblyKey, Assembly> = HashMap::new();
        let mut now = start;
        let mut ticked = false;
        while now <= start + 2100 {
            while let Some((from, out)) = effects.pop() {
                for e in out {
                    match e {
                        OverlayEffect::Send { to, message } => {
                            let to_index = (to.ip().to_string().rsplit('.').next())
                                .and_then(|d| d.parse::<usize>().ok())
                                .unwrap()
                                - 1;
                            if to_index < nodes.len() {
                                queue.entry(now + LINK_MS).or_default().push((
                                    to_index,
                                    nodes[from].config().addr,
                                    message,
                                ));
                            }
                        }
                        OverlayEffect::Local { qid, .. } => {
                            let partial = q.local(&LocalData::default());
                            let done = nodes[from].local_done(
                                now,
                                qid,
                                Outcome::Query(partial),
                                &dirs[from],
                            );
                            effects.push((from, done));
                        }
                        OverlayEffect::Answer { answer, .. } => answers.push(answer.reply),
                    }
                }
            }
            if let Some(batch) = queue.remove(&now) {
                for (to, from, message) in batch {
                    if let OverlayMessage::Chunk {
                        qid,
                        zone: z,
                        version,
                        index,
                        count,
                        bytes,
                    } = &message
                    {
                        if to == 0 && version > &0 {
                            let asm = assemblies
                                .entry((from, *qid, z.clone(), *version))
                                .or_insert_with(|| Assembly::new(*count, now));
                            if let Some(Ok(reply)) = asm.add(*index, bytes.clone()) {
                                seen.push(Seen { at: now, reply });
                            }
                        }
                        if to == 1 && from == addr(3) && b_reached_a.is_none() {
                            b_reached_a = Some(now);
                        }
                    }
                    let out = nodes[to].handle(now, from, message, &dirs[to]);
                    effects.push((to, out));
                }
                continue;
            }
            if !ticked {
                ticked = true;
                for (i, node) in nodes.iter_mut().enumerate() {
                    if node.next_tick_ms().is_some_and(|t| t <= now) {
                        effects.push((i, node.tick(now, &dirs[i])));
                    }
                }
                continue;
            }
            now += 1;
            ticked = false;
        }
        (seen, b_reached_a, answers)
    }

    #[test]
    fn a_dead_host_is_noticed_then_remembered_and_never_holds_back_the_live_answer() {
        let mut nodes: Vec<Overlay> = [("/x/e", 1), ("/z/a", 2), ("/z/b", 3)]
            .iter()
            .map(|(z, i)| Overlay::new(OverlayConfig::new(addr(*i), zone(z), *i as u64)))
            .collect();

        // First query: c is unknown. Contact a hears b, waits half again
        // b's round trip for c, then sends a settled reply with the two
        // live hosts, long before its deadline; the last reply names c.
        let (seen, b_at_a) = run(&mut nodes, 0);
        let b_at_a = b_at_a.unwrap();
        let settled = seen
            .iter()
            .find(|s| s.reply.settled && !s.reply.last)
            .unwrap_or_else(|| panic!("no settled interim reply: {seen:?}"));
        assert_eq!(settled.reply.answered, 2);
        assert_eq!(settled.reply.expected, 3);
        assert!(settled.at > b_at_a + LINK_MS, "{seen:?}");
        let last = seen.iter().rev().find(|s| s.reply.last).unwrap();
        assert_eq!(last.reply.answered, 2);
        assert_eq!(last.reply.missing, vec![zone("/z/c")]);

        // Second query: c is a suspect, so a's settled reply leaves the
        // moment b's answer arrives (one link later at the entry).
        let (seen, b_at_a) = run(&mut nodes, 10_000);
        let b_at_a = b_at_a.unwrap();
        let first_settled = seen
            .iter()
            .find(|s| s.reply.settled && s.reply.answered == 2)
            .unwrap_or_else(|| panic!("no settled reply: {seen:?}"));
        assert_eq!(first_settled.at, b_at_a + LINK_MS, "{seen:?}");
        assert!(!first_settled.reply.last);
    }
    #[test]
    fn a_just_started_contact_says_not_ready_and_the_next_contact_answers_at_once() {
        let mut nodes: Vec<Overlay> = [("/x/e", 1), ("/z/a", 2), ("/z/b", 3)]
            .iter()
            .map(|(z, i)| {
                let mut cfg = OverlayConfig::new(addr(*i), zone(z), *i as u64);
                cfg.fanout = 1;
                Overlay::new(cfg)
            })
            .collect();
        // Contact a has just started: its tables may lack hosts of /z.
        let a_starting = Dir {
            ready: false,
            ..DIR
        };
        let (seen, _, answers) = run_with(&mut nodes, &[DIR, a_starting, DIR], zone("/z"), 0);
        assert!(
            seen.iter()
                .any(|s| matches!(s.reply.outcome, Outcome::Error(RequestError::NotReady(_)))),
            "a did not say it is not ready: {seen:?}"
        );
        // b, asked the moment a said so, answers for a and b; the dead c
        // is missing. No answer of the entry is a's refusal.
        let last = answers.last().expect("no answer");
        assert!(last.last, "{answers:?}");
        assert!(matches!(last.outcome, Outcome::Query(_)), "{last:?}");
        assert_eq!((last.answered, last.expected), (2, 3), "{last:?}");
        let first_from_b = seen
            .iter()
            .find(|s| s.reply.answered > 0)
            .expect("no answer from b");
        // Refused at 2 links, b asked at once: b's first reply is back
        // within a few links, not after a retry interval.
        assert!(first_from_b.at < 200, "{seen:?}");

        // The entry itself still catching up refuses the request.
        let err = nodes[0]
            .start(
                10_000,
                zone("/z"),
                Request::Query { sql: SQL.into() },
                2000,
                &a_starting,
            )
            .unwrap_err();
        assert!(matches!(err, RequestError::NotReady(_)), "{err:?}");
    }

    #[test]
    fn an_answer_expects_at_least_the_hosts_the_zone_row_counts() {
        let mut nodes: Vec<Overlay> = [("/x/e", 1), ("/z/a", 2), ("/z/b", 3)]
            .iter()
            .map(|(z, i)| Overlay::new(OverlayConfig::new(addr(*i), zone(z), *i as u64)))
            .collect();
        // The root's row of /z counts 5 hosts; its contacts know only 3.
        let entry = Dir {
            z_members: 5,
            ..DIR
        };
        let (_, _, answers) = run_with(&mut nodes, &[entry, DIR, DIR], zone("/"), 0);
        let last = answers.last().expect("no answer");
        assert!(last.last, "{answers:?}");
        // 1 (/x) + max(3 known below, 5 by the row): the 2 hosts nobody
        // below knows of are not passed off as complete.
        assert_eq!((last.answered, last.expected), (3, 6), "{last:?}");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    struct NoTables;

    impl Directory for NoTables {
        fn children(&self, _: &ZonePath) -> Option<Vec<ChildZone>> {
            None
        }
    }

    fn addr(i: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, i], 7946))
    }

    /// Contact 2 of `/z`, full (`max_pending` 1, one task in progress),
    /// and an entry agent in `/x`.
    fn busy_contact_and_entry(dir: &TwoZones) -> (Overlay, Overlay) {
        let mut cfg = OverlayConfig::new(addr(2), ZonePath::parse("/z/a").unwrap(), 2);
        cfg.max_pending = 1;
        let mut busy = Overlay::new(cfg);
        busy.start(0, ZonePath::parse("/z/a").unwrap(), query(), 2000, dir)
            .unwrap();
        let entry = Overlay::new(OverlayConfig::new(
            addr(1),
            ZonePath::parse("/x/e").unwrap(),
            1,
        ));
        (busy, entry)
    }

    /// A tree of two zones under the root: `/x` (contact 1, one host) and
    /// `/z` with the given contacts and hosts.
    struct TwoZones {
        z_contacts: Vec<SocketAddr>,
        z_members: u64,
    }

    impl Directory for TwoZones {
        fn children(&self, z: &ZonePath) -> Option<Vec<ChildZone>> {
            (z.as_str() == "/").then(|| {
                vec![
                    ChildZone {
                        zone: ZonePath::parse("/x").unwrap(),
                        contacts: vec![addr(1)],
                        members: 1,
                    },
                    ChildZone {
                        zone: ZonePath::parse("/z").unwrap(),
                        contacts: self.z_contacts.clone(),
                        members: self.z_members,
                    },
                ]
            })
        }
    }

    /// A peer asking (or sending reply parts) without end: tasks and
    /// assemblies stop at `max_pending`, the rest is refused and counted.
    #[test]
    fn asks_and_assemblies_beyond_max_pending_are_refused_and_counted() {
        let zone = ZonePath::parse("/a/h1").unwrap();
        let me: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let peer: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut cfg = OverlayConfig::new(me, zone.clone(), 7);
        cfg.max_pending = 3;
        let mut overlay = Overlay::new(cfg);
        let request = Arc::new(Request::Query {
            sql: "SELECT count(*) AS n FROM host".into(),
        });
        for qid in 0..10u64 {
            let ask = OverlayMessage::Ask {
                qid,
                zone: zone.clone(),
                request: request.clone(),
                budget_ms: u32::MAX,
            };
            overlay.handle(0, peer, ask, &NoTables);
        }
        assert_eq!(overlay.task_count(), 3);
        assert_eq!(overlay.stats().pending_refused, 7);
        // Asked for 49 days, the tasks end by the API's longest timeout
        // plus the linger, and free their slots.
        let freed = super::super::message::MAX_TIMEOUT_MS + overlay.cfg.linger_ms + 1_000;
        for now in (0..=freed).step_by(1_000) {
            overlay.tick(now, &NoTables);
        }
        assert_eq!(overlay.task_count(), 0);
        for qid in 0..10u64 {
            let part = OverlayMessage::Chunk {
                qid,
                zone: zone.clone(),
                version: 1,
                index: 0,
                count: 2,
                bytes: vec![1, 2, 3],
            };
            overlay.handle(0, peer, part, &NoTables);
        }
        assert_eq!(overlay.assemblies.len(), 3);
        assert_eq!(overlay.stats().pending_refused, 14);
        // A part of an assembly already held is still taken.
        let second = OverlayMessage::Chunk {
            qid: 0,
            zone: zone.clone(),
            version: 1,
            index: 1,
            count: 2,
            bytes: vec![4],
        };
        overlay.handle(0, peer, second, &NoTables);
        assert_eq!(overlay.stats().pending_refused, 14);
    }

    fn query() -> Request {
        Request::Query {
            sql: "SELECT count(*) AS n FROM host".into(),
        }
    }

    /// A burst of short queries: finished tasks linger for late duplicates
    /// but hold no slot, so every query is taken; with `max_pending` tasks
    /// in progress the next request is refused at once, with the reason.
    #[test]
    fn finished_tasks_hold_no_slot_and_a_full_agent_refuses_at_once() {
        let zone = ZonePath::parse("/a/h1").unwrap();
        let me: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut cfg = OverlayConfig::new(me, zone.clone(), 7);
        cfg.max_pending = 3;
        let mut overlay = Overlay::new(cfg);
        let q = Query::parse("SELECT count(*) AS n FROM host").unwrap();
        for now in 0..100u64 {
            let (qid, out) = overlay
                .start(now, zone.clone(), query(), 2000, &NoTables)
                .unwrap_or_else(|e| panic!("query {now} refused: {e}"));
            assert!(out.iter().any(|e| matches!(e, OverlayEffect::Local { .. })));
            let partial = q.local(&crate::overlay::query::LocalData::default());
            let done = overlay.local_done(now, qid, Outcome::Query(partial), &NoTables);
            assert!(done.iter().any(|e| matches!(e,
                OverlayEffect::Answer { answer, .. } if answer.reply.last && answer.reply.answered == 1)));
        }
        assert_eq!(overlay.live_count(), 0);
        assert!(overlay.task_count() <= 3, "{}", overlay.task_count());
        assert_eq!(overlay.stats().pending_refused, 0);
        for now in 0..3u64 {
            overlay
                .start(200 + now, zone.clone(), query(), 2000, &NoTables)
                .unwrap();
        }
        let refused = overlay.start(300, zone.clone(), query(), 2000, &NoTables);
        assert_eq!(refused.unwrap_err(), RequestError::Overloaded(3));
        assert_eq!(overlay.stats().pending_refused, 1);
        assert_eq!(overlay.stats().live_peak, 3);
    }

    /// `/x/e` asks for `/z`, whose contacts are 2, 3 and 4. A contact at
    /// its limit says so at once, and the next contact is asked at once.
    #[test]
    fn a_refused_ask_is_answered_at_once_and_the_next_contact_is_asked() {
        let dir = TwoZones {
            z_contacts: vec![addr(2), addr(3), addr(4)],
            z_members: 3,
        };
        let z = ZonePath::parse("/z").unwrap();
        let (mut busy, mut entry) = busy_contact_and_entry(&dir);
        let (_, out) = entry.start(0, z.clone(), query(), 2000, &dir).unwrap();
        let asked: Vec<SocketAddr> = out
            .iter()
            .filter_map(|e| match e {
                OverlayEffect::Send {
                    to,
                    message: OverlayMessage::Ask { .. },
                } => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![addr(2), addr(3)]);
        let ask = out
            .into_iter()
            .find_map(|e| match e {
                OverlayEffect::Send { to, message } if to == addr(2) => Some(message),
                _ => None,
            })
            .unwrap();
        let refusal = busy.handle(5, addr(1), ask, &dir);
        assert_eq!(busy.stats().pending_refused, 1);
        assert_eq!(busy.task_count(), 1, "a refused ask keeps nothing");
        let mut asked_next = Vec::new();
        for e in refusal {
            let OverlayEffect::Send { to, message } = e else {
                panic!("{e:?}")
            };
            assert_eq!(to, addr(1));
            let more = entry.handle(10, addr(2), message, &dir);
            assert!(more.is_empty(), "{more:?}");
        }
        assert_eq!(entry.stats().busy_replies, 1);
        assert!(entry.next_tick_ms().is_some_and(|t| t <= 10));
        for e in entry.tick(10, &dir) {
            if let OverlayEffect::Send {
                to,
                message: OverlayMessage::Ask { .. },
            } = e
            {
                asked_next.push(to);
            }
        }
        assert_eq!(asked_next, vec![addr(4)]);
    }

    /// `/x/e` asks for `/z`, whose one contact is at its limit: the
    /// answer lists `/z` as missing and as refused, so the caller can tell
    /// a busy zone from a dead one.
    #[test]
    fn a_zone_whose_every_contact_refused_is_listed_as_refused() {
        let dir = TwoZones {
            z_contacts: vec![addr(2)],
            z_members: 4,
        };
        let (mut busy, mut entry) = busy_contact_and_entry(&dir);
        let z = ZonePath::parse("/z").unwrap();
        let (_, out) = entry.start(0, z.clone(), query(), 2000, &dir).unwrap();
        for e in out {
            if let OverlayEffect::Send { to, message } = e {
                assert_eq!(to, addr(2));
                for r in busy.handle(5, addr(1), message, &dir) {
                    if let OverlayEffect::Send { message, .. } = r {
                        entry.handle(10, addr(2), message, &dir);
                    }
                }
            }
        }
        let answers: Vec<Reply> = entry
            .tick(2000, &dir)
            .into_iter()
            .filter_map(|e| match e {
                OverlayEffect::Answer { answer, .. } => Some(answer.reply),
                _ => None,
            })
            .collect();
        let last = answers.last().expect("no answer at the deadline");
        assert!(last.last);
        assert_eq!((last.answered, last.expected), (0, 4));
        assert_eq!(last.missing, vec![z.clone()]);
        assert_eq!(last.refused, vec![z]);
    }
}
