//! A deterministic multi-node network for swarm tests: many [`Swarm`]s, a tracker, a virtual
//! clock, per-node uplink and downlink rates, latency and loss.
//!
//! Piece bytes are not modelled: a transfer is a flow that shares the sender's uplink and the
//! receiver's downlink equally with their other flows (its rate is the smaller of the two
//! shares, recomputed whenever a flow starts or ends), and arrives after the latency. Loss delays a control message by a retransmission timeout, as TCP
//! would. A node marked corrupt sends pieces that fail verification at the receiver.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, Digest, InfoHash, MetaInfo, PeerId, PeerInfo};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::swarm::{
    Action, ConnClosed, ConnId, Event, PieceWriteError, Swarm, SwarmConfig, TorrentStats,
};
use crate::tracker::{MemoryPeerStore, handout};
use crate::wire::Message;

const RETRANSMIT: Duration = Duration::from_millis(200);

pub(super) type NodeId = usize;

/// A test blob: metainfo only, with made-up piece hashes (nothing is hashed here).
pub(super) fn blob(seed: u8, length: u64, piece_length: u64) -> Arc<MetaInfo> {
    let count = length.div_ceil(piece_length) as usize;
    Arc::new(
        MetaInfo::from_parts(
            Digest::sha256_of(&[seed]),
            length,
            piece_length,
            vec![[seed; 32]; count],
        )
        .unwrap(),
    )
}

pub(super) struct NodeSpec {
    pub(super) up: f64,
    pub(super) down: f64,
    pub(super) corrupt: bool,
    pub(super) config: SwarmConfig,
}

impl NodeSpec {
    /// A node with `rate` bytes/s each way.
    pub(super) fn symmetric(rate: f64) -> Self {
        Self {
            up: rate,
            down: rate,
            corrupt: false,
            config: SwarmConfig::default(),
        }
    }
}

struct Node {
    swarm: Swarm,
    addr: SocketAddr,
    up: f64,
    down: f64,
    corrupt: bool,
    online: bool,
    /// What this node holds, as its blob store would.
    store: HashMap<InfoHash, (Arc<MetaInfo>, Bitfield)>,
    completed: HashMap<InfoHash, Instant>,
    events: Vec<Event>,
}

enum Delivery {
    Incoming {
        to: NodeId,
        from: NodeId,
        from_conn: ConnId,
    },
    Connected {
        to: NodeId,
        conn: ConnId,
    },
    DialFailed {
        to: NodeId,
        conn: ConnId,
    },
    Message {
        to: NodeId,
        conn: ConnId,
        message: Message,
    },
    Piece {
        to: NodeId,
        conn: ConnId,
        index: u32,
        length: u64,
        corrupt: bool,
    },
    PieceSent {
        to: NodeId,
        conn: ConnId,
        length: u64,
    },
    Closed {
        to: NodeId,
        conn: ConnId,
    },
    AnnounceReply {
        to: NodeId,
        info_hash: InfoHash,
        peers: Vec<PeerInfo>,
    },
    /// The earliest flow completion as of the flow generation it was computed for.
    FlowCheck {
        generation: u64,
    },
}

struct Flow {
    from: NodeId,
    from_conn: ConnId,
    to: NodeId,
    to_conn: ConnId,
    index: u32,
    length: u64,
    remaining: f64,
    rate: f64,
    corrupt: bool,
}

pub(super) struct Net {
    pub(super) now: Instant,
    start: Instant,
    rng: StdRng,
    nodes: Vec<Node>,
    tracker: MemoryPeerStore,
    latency: Duration,
    loss: f64,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    deliveries: HashMap<u64, Delivery>,
    seq: u64,
    /// Each end of a link, keyed by the other.
    links: HashMap<(NodeId, ConnId), (NodeId, ConnId)>,
    tracker_interval: Duration,
    flows: BTreeMap<u64, Flow>,
    flows_updated: Instant,
    flow_generation: u64,
}

impl Net {
    pub(super) fn new(seed: u64, latency: Duration, loss: f64) -> Self {
        let start = Instant::now();
        Self {
            now: start,
            start,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            tracker: MemoryPeerStore::default(),
            latency,
            loss,
            queue: BinaryHeap::new(),
            deliveries: HashMap::new(),
            seq: 0,
            links: HashMap::new(),
            tracker_interval: Duration::from_secs(1),
            flows: BTreeMap::new(),
            flows_updated: start,
            flow_generation: 0,
        }
    }

    pub(super) fn add_node(&mut self, mut spec: NodeSpec) -> NodeId {
        let id = self.nodes.len();
        spec.config.rng_seed = Some(self.rng.random());
        let peer_id = PeerId::random(&mut self.rng);
        let addr = SocketAddr::from(([127, 0, (id / 250) as u8, (id % 250) as u8 + 1], 7000));
        self.nodes.push(Node {
            swarm: Swarm::new(spec.config, peer_id),
            addr,
            up: spec.up,
            down: spec.down,
            corrupt: spec.corrupt,
            online: true,
            store: HashMap::new(),
            completed: HashMap::new(),
            events: Vec::new(),
        });
        id
    }

    /// Gives `node` the pieces in `have` of `meta` and starts its torrent.
    pub(super) fn start(&mut self, node: NodeId, meta: &Arc<MetaInfo>, have: Bitfield) {
        let now = self.now;
        let n = &mut self.nodes[node];
        n.store
            .insert(meta.info_hash(), (Arc::clone(meta), have.clone()));
        n.swarm
            .add_torrent(now, Arc::clone(meta), have, String::new())
            .unwrap();
        self.drain(node);
    }

    pub(super) fn seed(&mut self, node: NodeId, meta: &Arc<MetaInfo>) {
        self.start(node, meta, Bitfield::full(meta.piece_count()));
    }

    pub(super) fn fetch(&mut self, node: NodeId, meta: &Arc<MetaInfo>) {
        self.start(node, meta, Bitfield::new(meta.piece_count()));
    }

    /// Adds `count` nodes of `rate` bytes/s each way, all fetching `meta`.
    pub(super) fn add_fetchers(
        &mut self,
        count: usize,
        rate: f64,
        meta: &Arc<MetaInfo>,
    ) -> Vec<NodeId> {
        (0..count)
            .map(|_| {
                let node = self.add_node(NodeSpec::symmetric(rate));
                self.fetch(node, meta);
                node
            })
            .collect()
    }

    /// Takes a node off the network: its links drop and the tracker forgets it.
    pub(super) fn kill(&mut self, node: NodeId) {
        self.nodes[node].online = false;
        let peer_id = self.nodes[node].swarm.local_peer();
        let hashes: Vec<InfoHash> = self.nodes[node].store.keys().copied().collect();
        for h in hashes {
            self.tracker.remove(&h, &peer_id);
        }
        let ends: Vec<((NodeId, ConnId), (NodeId, ConnId))> = self
            .links
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(a, b)| (*a, *b))
            .collect();
        for (a, (other, other_conn)) in ends {
            self.links.remove(&a);
            self.links.remove(&(other, other_conn));
            self.schedule(
                self.latency,
                Delivery::Closed {
                    to: other,
                    conn: other_conn,
                },
            );
        }
        self.advance_flows();
        self.flows.retain(|_, f| f.from != node && f.to != node);
        self.reschedule_flows();
    }

    /// Moves every flow forward to `now` at its current rate.
    fn advance_flows(&mut self) {
        let dt = (self.now - self.flows_updated).as_secs_f64();
        for flow in self.flows.values_mut() {
            flow.remaining -= flow.rate * dt;
        }
        self.flows_updated = self.now;
    }

    /// Recomputes every flow's rate and schedules a check at the earliest completion.
    fn reschedule_flows(&mut self) {
        let mut up_count = vec![0usize; self.nodes.len()];
        let mut down_count = vec![0usize; self.nodes.len()];
        for flow in self.flows.values() {
            up_count[flow.from] += 1;
            down_count[flow.to] += 1;
        }
        let mut earliest: Option<f64> = None;
        for flow in self.flows.values_mut() {
            let up = self.nodes[flow.from].up / up_count[flow.from] as f64;
            let down = self.nodes[flow.to].down / down_count[flow.to] as f64;
            flow.rate = up.min(down);
            let eta = flow.remaining.max(0.0) / flow.rate;
            earliest = Some(earliest.map_or(eta, |e: f64| e.min(eta)));
        }
        self.flow_generation += 1;
        if let Some(eta) = earliest {
            let generation = self.flow_generation;
            // Round up to whole nanoseconds so the flow has surely finished by then.
            let delay = Duration::from_nanos((eta * 1e9).ceil() as u64 + 1);
            self.schedule(delay, Delivery::FlowCheck { generation });
        }
    }

    fn finish_flows(&mut self) {
        self.advance_flows();
        let done: Vec<u64> = self
            .flows
            .iter()
            .filter(|(_, f)| f.remaining <= 1e-6)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let f = self.flows.remove(&id).expect("listed");
            self.schedule(
                Duration::ZERO,
                Delivery::PieceSent {
                    to: f.from,
                    conn: f.from_conn,
                    length: f.length,
                },
            );
            self.schedule(
                self.latency,
                Delivery::Piece {
                    to: f.to,
                    conn: f.to_conn,
                    index: f.index,
                    length: f.length,
                    corrupt: f.corrupt,
                },
            );
        }
        self.reschedule_flows();
    }

    pub(super) fn completed_at(&self, node: NodeId, info_hash: &InfoHash) -> Option<Duration> {
        self.nodes[node]
            .completed
            .get(info_hash)
            .map(|t| *t - self.start)
    }

    pub(super) fn have(&self, node: NodeId, info_hash: &InfoHash) -> Bitfield {
        self.nodes[node].store[info_hash].1.clone()
    }

    pub(super) fn stats(&self, node: NodeId, info_hash: &InfoHash) -> TorrentStats {
        self.nodes[node]
            .swarm
            .torrent_stats(info_hash)
            .unwrap_or_default()
    }

    pub(super) fn events(&self, node: NodeId) -> &[Event] {
        &self.nodes[node].events
    }

    pub(super) fn peer_id(&self, node: NodeId) -> PeerId {
        self.nodes[node].swarm.local_peer()
    }

    pub(super) fn swarm(&self, node: NodeId) -> &Swarm {
        &self.nodes[node].swarm
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Runs until `done` holds or `limit` of virtual time passes; returns whether `done` held.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Self) -> bool,
    ) -> bool {
        let deadline = self.start + limit;
        // Bounded: every iteration advances time or consumes a delivery.
        for _ in 0..50_000_000u64 {
            if done(self) {
                return true;
            }
            let next_delivery = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter(|n| n.online)
                .filter_map(|n| n.swarm.poll_timeout())
                .min();
            let next = match (next_delivery, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => return done(self),
                },
            };
            if next > deadline {
                return done(self);
            }
            self.now = self.now.max(next);
            if next_delivery.is_some_and(|d| d <= next) {
                let Reverse((_, seq)) = self.queue.pop().expect("peeked");
                let delivery = self.deliveries.remove(&seq).expect("scheduled");
                self.deliver(delivery);
            } else {
                for id in 0..self.nodes.len() {
                    if self.nodes[id].online
                        && self.nodes[id]
                            .swarm
                            .poll_timeout()
                            .is_some_and(|t| t <= self.now)
                    {
                        self.nodes[id].swarm.handle_timeout(self.now);
                        self.drain(id);
                    }
                }
            }
        }
        panic!("harness did not converge");
    }

    /// Runs until every node has completed `info_hash`, or `limit`.
    pub(super) fn run_until_complete(
        &mut self,
        nodes: &[NodeId],
        info_hash: InfoHash,
        limit: Duration,
    ) -> bool {
        self.run_until(limit, |net| {
            nodes
                .iter()
                .all(|&n| net.nodes[n].completed.contains_key(&info_hash))
        })
    }

    fn schedule(&mut self, delay: Duration, delivery: Delivery) {
        self.schedule_at(self.now + delay, delivery);
    }

    fn schedule_at(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.deliveries.insert(self.seq, delivery);
    }

    fn message_delay(&mut self) -> Duration {
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.latency + RETRANSMIT
        } else {
            self.latency
        }
    }

    fn node_by_addr(&self, addr: SocketAddr) -> Option<NodeId> {
        self.nodes.iter().position(|n| n.addr == addr)
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::Incoming {
                to,
                from,
                from_conn,
            } => {
                if !self.nodes[to].online || !self.nodes[from].online {
                    self.schedule(
                        self.latency,
                        Delivery::DialFailed {
                            to: from,
                            conn: from_conn,
                        },
                    );
                    return;
                }
                let from_addr = self.nodes[from].addr;
                let conn = self.nodes[to].swarm.handle_incoming(now, from_addr);
                self.links.insert((to, conn), (from, from_conn));
                self.links.insert((from, from_conn), (to, conn));
                self.schedule(
                    self.latency,
                    Delivery::Connected {
                        to: from,
                        conn: from_conn,
                    },
                );
            }
            Delivery::Connected { to, conn } => {
                if self.links.contains_key(&(to, conn)) {
                    self.nodes[to].swarm.handle_connected(now, conn);
                    self.drain(to);
                }
            }
            Delivery::DialFailed { to, conn } => {
                self.nodes[to]
                    .swarm
                    .handle_closed(now, conn, ConnClosed::DialFailed);
                self.drain(to);
            }
            Delivery::Message { to, conn, message } => {
                if self.links.contains_key(&(to, conn)) && self.nodes[to].online {
                    self.nodes[to].swarm.handle_message(now, conn, message);
                    self.drain(to);
                }
            }
            Delivery::Piece {
                to,
                conn,
                index,
                length,
                corrupt,
            } => {
                if !self.links.contains_key(&(to, conn)) || !self.nodes[to].online {
                    return;
                }
                let node = &mut self.nodes[to];
                if let Some((info_hash, piece)) =
                    node.swarm.handle_piece_received(now, conn, index, length)
                {
                    let result = if corrupt {
                        Err(PieceWriteError::Corrupt)
                    } else {
                        node.store
                            .get_mut(&info_hash)
                            .map(|(_, have)| have.set(index))
                            .expect("torrent in store")
                            .unwrap();
                        Ok(())
                    };
                    node.swarm
                        .handle_piece_written(now, conn, info_hash, piece, result);
                }
                self.drain(to);
            }
            Delivery::PieceSent { to, conn, length } => {
                if self.nodes[to].online {
                    self.nodes[to].swarm.handle_piece_sent(now, conn, length);
                    self.drain(to);
                }
            }
            Delivery::Closed { to, conn } => {
                if self.nodes[to].online {
                    self.links.remove(&(to, conn));
                    self.nodes[to]
                        .swarm
                        .handle_closed(now, conn, ConnClosed::Normal);
                    self.drain(to);
                }
            }
            Delivery::FlowCheck { generation } => {
                if generation == self.flow_generation {
                    self.finish_flows();
                }
            }
            Delivery::AnnounceReply {
                to,
                info_hash,
                peers,
            } => {
                if self.nodes[to].online {
                    let interval = Some(self.tracker_interval);
                    self.nodes[to]
                        .swarm
                        .handle_announce_response(now, info_hash, peers, interval);
                    self.drain(to);
                }
            }
        }
    }

    /// Carries out everything node `id` asked for.
    fn drain(&mut self, id: NodeId) {
        let now = self.now;
        while let Some(action) = self.nodes[id].swarm.poll_action() {
            match action {
                Action::Dial { conn, peer, .. } => match self.node_by_addr(peer.addr()) {
                    Some(target) => {
                        self.schedule(
                            self.latency,
                            Delivery::Incoming {
                                to: target,
                                from: id,
                                from_conn: conn,
                            },
                        );
                    }
                    None => self.schedule(self.latency, Delivery::DialFailed { to: id, conn }),
                },
                Action::Send { conn, message } => {
                    if let Some(&(to, peer_conn)) = self.links.get(&(id, conn)) {
                        let delay = self.message_delay();
                        self.schedule(
                            delay,
                            Delivery::Message {
                                to,
                                conn: peer_conn,
                                message,
                            },
                        );
                    }
                }
                Action::SendPiece {
                    conn,
                    info_hash,
                    index,
                } => {
                    let Some(&(to, peer_conn)) = self.links.get(&(id, conn)) else {
                        continue;
                    };
                    let length = self.nodes[id].store[&info_hash].0.piece_len(index);
                    let corrupt = self.nodes[id].corrupt;
                    self.advance_flows();
                    self.seq += 1;
                    self.flows.insert(
                        self.seq,
                        Flow {
                            from: id,
                            from_conn: conn,
                            to,
                            to_conn: peer_conn,
                            index: index.get(),
                            length,
                            remaining: length as f64,
                            rate: 0.0,
                            corrupt,
                        },
                    );
                    self.reschedule_flows();
                }
                Action::Close { conn } => {
                    if let Some((to, peer_conn)) = self.links.remove(&(id, conn)) {
                        self.links.remove(&(to, peer_conn));
                        self.advance_flows();
                        self.flows.retain(|_, f| {
                            !(f.from == id && f.from_conn == conn
                                || f.to == id && f.to_conn == conn)
                        });
                        self.reschedule_flows();
                        self.schedule(
                            self.latency,
                            Delivery::Closed {
                                to,
                                conn: peer_conn,
                            },
                        );
                    }
                }
                Action::Announce {
                    info_hash,
                    complete,
                    ..
                } => {
                    let node = &self.nodes[id];
                    let me = PeerInfo::new(
                        node.swarm.local_peer(),
                        node.addr,
                        node.swarm.config().origin,
                        complete,
                    );
                    self.tracker.announce(now, info_hash, me.clone());
                    let peers =
                        handout(self.tracker.peers(now, &info_hash), &me, 50, &mut self.rng);
                    self.schedule(
                        self.latency,
                        Delivery::AnnounceReply {
                            to: id,
                            info_hash,
                            peers,
                        },
                    );
                }
                Action::Resolve {
                    conn, info_hash, ..
                } => {
                    let node = &mut self.nodes[id];
                    if let Some((meta, have)) = node.store.get(&info_hash).cloned() {
                        node.swarm
                            .add_torrent(now, meta, have, String::new())
                            .unwrap();
                    }
                    node.swarm.handle_resolved(now, conn);
                }
                Action::Finish { info_hash } => {
                    self.nodes[id].swarm.handle_finished(now, info_hash, Ok(()));
                }
            }
        }
        while let Some(event) = self.nodes[id].swarm.poll_event() {
            if let Event::Completed { info_hash } = &event {
                self.nodes[id].completed.insert(*info_hash, now);
            }
            self.nodes[id].events.push(event);
        }
    }
}

/// Sums received bytes by sender over some nodes.
pub(super) fn received_by_sender(
    net: &Net,
    nodes: &[NodeId],
    info_hash: &InfoHash,
) -> BTreeMap<PeerId, u64> {
    let mut total = BTreeMap::new();
    for &n in nodes {
        for (peer, bytes) in net.stats(n, info_hash).received_from {
            *total.entry(peer).or_default() += bytes;
        }
    }
    total
}
