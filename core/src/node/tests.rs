//! Nodes talking through nothing but the bytes they return.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::overlay::query::LocalData;
use crate::zone::Value;

const EPOCH_MS: u64 = 1_700_000_000_000;

fn now(ms: u64) -> Now {
    Now {
        mono_ms: ms,
        wall_ms: EPOCH_MS + ms,
    }
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i as u8 + 1], 7946))
}

fn node(i: usize, zone: &str, seeds: &[usize], trusted: TrustedKeys) -> Node {
    let mut cfg = EngineConfig::new(i as u64 + 1, ZonePath::parse(zone).unwrap(), addr(i));
    cfg.seeds = seeds.iter().map(|s| addr(*s)).collect();
    cfg.rng_seed = i as u64 + 7;
    cfg.certificates.trusted = trusted;
    let aggregates = Arc::new(
        AggregateSet::with_system::<&str, &str>(&[], &["SELECT sum(load) AS load_sum"]).unwrap(),
    );
    let mut attrs = Attributes::new();
    attrs.insert("load".into(), Value::Int(10 + i as i64));
    Node::new(
        NodeConfig::new(cfg, i as u64, 60_000),
        aggregates,
        attrs,
        now(0),
    )
    .unwrap()
}

/// Delivers every datagram a node returns to the node at its address
/// (after 1 ms) and answers host queries from each node's row; returns the
/// answers and the host work of other kinds seen.
struct Net {
    nodes: Vec<Node>,
    t: u64,
    in_flight: VecDeque<(u64, SocketAddr, SocketAddr, Vec<u8>)>,
    answers: Vec<(u64, Answer)>,
    other_work: Vec<LocalWork>,
}

impl Net {
    fn new(nodes: Vec<Node>) -> Net {
        Net {
            nodes,
            t: 0,
            in_flight: VecDeque::new(),
            answers: Vec::new(),
            other_work: Vec::new(),
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].poll_output() {
            match out {
                Output::Datagram { to, bytes } => {
                    self.in_flight.push_back((self.t + 1, addr(i), to, bytes))
                }
                Output::Envelope { .. } => panic!("Wire::Bytes sends bytes"),
                Output::Answer { qid, answer } => self.answers.push((qid, answer)),
                Output::Local { qid, work } => match work {
                    LocalWork::Query { query, attributes } => {
                        let data = LocalData {
                            host: attributes,
                            processes: Vec::new(),
                        };
                        let outcome = Outcome::Query(query.local(&data));
                        self.nodes[i].apply(now(self.t), Input::LocalDone { qid, outcome });
                    }
                    other => self.other_work.push(other),
                },
            }
        }
    }

    /// The last answer of request `qid`, which must have come.
    fn final_answer(&self, qid: u64) -> Answer {
        self.answers
            .iter()
            .rev()
            .find(|(q, a)| *q == qid && a.reply.last)
            .map(|(_, a)| a.clone())
            .expect("a final answer")
    }

    fn run_until(&mut self, until: u64) {
        while self.t < until {
            self.t += 1;
            for i in 0..self.nodes.len() {
                if self.nodes[i].poll_timeout() <= self.t {
                    self.nodes[i].tick(now(self.t));
                }
                self.drain(i);
            }
            while self.in_flight.front().is_some_and(|d| d.0 <= self.t) {
                let Some((_, from, to, bytes)) = self.in_flight.pop_front() else {
                    break;
                };
                if let Some(j) = (0..self.nodes.len()).find(|j| addr(*j) == to) {
                    self.nodes[j].handle_datagram(now(self.t), from, &bytes);
                    self.drain(j);
                }
            }
        }
    }
}

fn three_nodes(trusted: TrustedKeys) -> Net {
    Net::new(vec![
        node(0, "/a/h0", &[1], trusted.clone()),
        node(1, "/a/h1", &[0], trusted.clone()),
        node(2, "/b/h2", &[0], trusted),
    ])
}

#[test]
fn nodes_converge_and_answer_a_query_through_bytes_alone() {
    let mut net = three_nodes(TrustedKeys::default());
    net.run_until(30_000);
    for n in &net.nodes {
        assert_eq!(n.engine().root().members(), 3, "{}", n.engine().zone());
        assert_eq!(
            n.engine().root().values().get("load_sum"),
            Some(&Value::Int(33))
        );
    }
    let qid = net.nodes[2]
        .request(
            now(net.t),
            ZonePath::root(),
            Request::Query {
                sql: "SELECT count(*) AS n, sum(load) AS s FROM host".into(),
            },
            2_000,
        )
        .unwrap();
    net.drain(2);
    net.run_until(net.t + 3_000);
    let last = net.final_answer(qid);
    assert_eq!((last.reply.answered, last.reply.expected), (3, 3));
    let Outcome::Query(partial) = &last.reply.outcome else {
        panic!("{:?}", last.reply.outcome);
    };
    let table = Query::parse("SELECT count(*) AS n, sum(load) AS s FROM host")
        .unwrap()
        .finish(partial);
    assert_eq!(table.columns, ["n", "s"]);
    assert_eq!(table.rows, [[Value::Int(3), Value::Int(33)]]);
}

#[test]
fn bytes_that_do_not_decode_are_counted_and_change_nothing() {
    let mut n = node(0, "/a/h0", &[], TrustedKeys::default());
    n.handle_datagram(now(1), addr(9), &[]);
    n.handle_datagram(now(1), addr(9), &[0x7f, 1, 2]);
    n.handle_datagram(
        now(1),
        addr(9),
        &[crate::transport::WIRE_VERSION, 0xff, 0xff],
    );
    n.handle_datagram(now(1), addr(9), &[crate::transport::OVERLAY_FRAME, 0xff]);
    let dropped: u64 = n.drops().snapshot().iter().map(|(_, c)| c).sum();
    assert_eq!(dropped, 4);
    assert!(n.poll_output().is_none());
    assert_eq!(n.engine().root().members(), 1);
}

#[test]
fn an_unsigned_command_is_refused_before_any_host_work() {
    let key = crate::security::operator::test_key();
    let trusted = TrustedKeys::parse(&[key.public_base64()]).unwrap();
    let mut net = three_nodes(trusted);
    net.run_until(30_000);
    let command = |name: &str| Request::Command {
        name: name.into(),
        args: vec![],
        seal: None,
    };
    let qid = net.nodes[0]
        .request(now(net.t), ZonePath::root(), command("collect"), 2_000)
        .unwrap();
    net.drain(0);
    net.run_until(net.t + 3_000);
    assert!(net.other_work.is_empty(), "{:?}", net.other_work);
    let last = net.final_answer(qid);
    let Outcome::Command(tally) = &last.reply.outcome else {
        panic!("{:?}", last.reply.outcome);
    };
    assert_eq!((tally.ok, tally.refused), (0, 3), "{tally:?}");
}

#[test]
fn built_in_commands_become_host_work_and_malformed_ones_are_answered_here() {
    let mut net = three_nodes(TrustedKeys::default());
    net.run_until(30_000);
    let command = |name: &str, args: &[&str]| Request::Command {
        name: name.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
        seal: None,
    };
    for request in [
        command("collect", &[]),
        command("set-log-level", &["debug"]),
        command("restart-nginx", &[]),
        command("set-log-level", &[]),
    ] {
        net.nodes[0]
            .request(
                now(net.t),
                ZonePath::parse("/a/h0").unwrap(),
                request,
                2_000,
            )
            .unwrap();
        net.drain(0);
    }
    net.run_until(net.t + 100);
    let kinds: Vec<String> = net
        .other_work
        .iter()
        .map(|w| match w {
            LocalWork::Collect => "collect".to_string(),
            LocalWork::SetLogLevel { level } => format!("level {level}"),
            LocalWork::Action { name } => format!("action {name}"),
            LocalWork::Query { .. } => "query".to_string(),
        })
        .collect();
    assert_eq!(kinds, ["collect", "level debug", "action restart-nginx"]);
    let failed = net.answers.iter().any(|(_, a)| {
        matches!(&a.reply.outcome, Outcome::Command(t) if t.failed == 1
            && t.outputs.iter().any(|o| o.output.contains("takes one level")))
    });
    assert!(failed, "{:?}", net.answers);
}
