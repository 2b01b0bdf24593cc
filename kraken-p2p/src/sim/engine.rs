//! The event loop: many [`Swarm`]s, a tracker and a network over a virtual clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kraken_core::{Bitfield, InfoHash, MetaInfo, PeerId, PeerInfo};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::fast_hash::FastMap;
use super::flows::{Check, Completion, Flow, FlowId, Flows};
use super::links::{LinkId, LinkTable};
use super::queue::EventQueue;
use super::{HandoutPolicy, HostId, HostSpec};
use crate::swarm::{Action, ConnClosed, ConnId, Event, PieceWriteError, Swarm, TorrentStats};
use crate::tracker::MemoryPeerStore;
use crate::wire::Message;

/// How long a lost control message is late: one TCP retransmission timeout.
const RETRANSMIT: Duration = Duration::from_millis(200);

struct Host {
    swarm: Swarm,
    addr: SocketAddr,
    corrupt: bool,
    online: bool,
    /// What this host holds, as its blob store would.
    store: FastMap<InfoHash, (Arc<MetaInfo>, Bitfield)>,
    completed: FastMap<InfoHash, Instant>,
    /// The other end of each of this host's links, by this end's connection.
    links: FastMap<ConnId, FarEnd>,
    /// When the host's swarm wants `handle_timeout`, as last scheduled.
    timer: Option<Instant>,
    events: Vec<Event>,
    /// Payload bytes this host finished sending.
    sent: u64,
}

/// The other end of a link, and the link.
#[derive(Clone, Copy, Debug)]
struct FarEnd {
    host: HostId,
    conn: ConnId,
    link: LinkId,
}

enum Delivery {
    Incoming {
        to: HostId,
        from: HostId,
        from_conn: ConnId,
    },
    Connected {
        to: HostId,
        conn: ConnId,
        link: LinkId,
    },
    DialFailed {
        to: HostId,
        conn: ConnId,
    },
    Message {
        to: HostId,
        conn: ConnId,
        link: LinkId,
        message: Compact,
    },
    Piece {
        to: HostId,
        conn: ConnId,
        link: LinkId,
        index: u32,
        length: u64,
        corrupt: bool,
    },
    Closed {
        to: HostId,
        conn: ConnId,
    },
    AnnounceReply {
        to: HostId,
        reply: Box<(InfoHash, Vec<PeerInfo>)>,
    },
    FlowCheck(FlowId),
    Timer {
        host: HostId,
    },
    /// A host starts fetching a blob (arrivals spread over time).
    Fetch {
        host: HostId,
        meta: Arc<MetaInfo>,
    },
    /// A host leaves the network (churn, a failing origin).
    Kill {
        host: HostId,
    },
}

/// A message on its way, kept small because every pending delivery takes the largest one's
/// size in the queue: the frequent messages inline, the rest boxed (a handshake is large, and
/// moving deliveries of that size in and out of the queue showed in profiles).
enum Compact {
    PieceRequest(u32),
    AnnouncePiece(u32),
    CancelPiece(u32),
    Complete,
    Other(Box<Message>),
}

impl From<Message> for Compact {
    fn from(message: Message) -> Self {
        match message {
            Message::PieceRequest { index } => Self::PieceRequest(index),
            Message::AnnouncePiece { index } => Self::AnnouncePiece(index),
            Message::CancelPiece { index } => Self::CancelPiece(index),
            Message::Complete => Self::Complete,
            other => Self::Other(Box::new(other)),
        }
    }
}

impl From<Compact> for Message {
    fn from(compact: Compact) -> Self {
        match compact {
            Compact::PieceRequest(index) => Self::PieceRequest { index },
            Compact::AnnouncePiece(index) => Self::AnnouncePiece { index },
            Compact::CancelPiece(index) => Self::CancelPiece { index },
            Compact::Complete => Self::Complete,
            Compact::Other(message) => *message,
        }
    }
}

/// A deterministic network of swarm cores over virtual time.
///
/// Hosts are added with [`add_host`](Self::add_host), given blobs with [`seed`](Self::seed),
/// [`fetch`](Self::fetch) or [`start`](Self::start) (now) or
/// [`fetch_at`](Self::fetch_at) (later), and the whole runs with
/// [`run_until`](Self::run_until). Every random choice comes from the seed, so a run is
/// reproduced exactly by the same calls with the same seed.
pub struct Sim {
    now: Instant,
    start: Instant,
    rng: StdRng,
    hosts: Vec<Host>,
    by_addr: FastMap<SocketAddr, HostId>,
    tracker: MemoryPeerStore,
    handout_limit: usize,
    handout_policy: HandoutPolicy,
    tracker_interval: Duration,
    latency: Duration,
    loss: f64,
    queue: EventQueue<Delivery>,
    flows: Flows,
    link_table: LinkTable,
    record_events: bool,
    completions: usize,
    events_handled: u64,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("hosts", &self.hosts.len())
            .field("elapsed", &self.elapsed())
            .field(
                "links",
                &(self.hosts.iter().map(|h| h.links.len()).sum::<usize>() / 2),
            )
            .field("flows", &self.flows.len())
            .field("pending", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// An empty network: one-way `latency` on every message, and `loss`, the probability that
    /// a control message is lost once and retransmitted.
    pub fn new(seed: u64, latency: Duration, loss: f64) -> Self {
        let start = Instant::now();
        Self {
            now: start,
            start,
            rng: StdRng::seed_from_u64(seed),
            hosts: Vec::new(),
            by_addr: FastMap::default(),
            tracker: MemoryPeerStore::default(),
            handout_limit: crate::tracker::DEFAULT_HANDOUT_LIMIT,
            handout_policy: HandoutPolicy::Random,
            tracker_interval: Duration::from_secs(3),
            latency,
            loss,
            queue: EventQueue::default(),
            flows: Flows::default(),
            link_table: LinkTable::default(),
            record_events: true,
            completions: 0,
            events_handled: 0,
        }
    }

    /// Sets the tracker's handout: how many peers, chosen how, and the announce interval it
    /// tells leechers. Defaults: 50, [`HandoutPolicy::Random`], 3 s.
    pub fn set_tracker(&mut self, limit: usize, policy: HandoutPolicy, interval: Duration) {
        self.handout_limit = limit;
        self.handout_policy = policy;
        self.tracker_interval = interval;
    }

    /// How links are shared among the flows through them. Default: [`Sharing::EqualSplit`](super::Sharing::EqualSplit).
    pub fn set_sharing(&mut self, sharing: super::Sharing) {
        self.flows.set_sharing(sharing);
    }

    /// Whether every swarm event is kept for [`events`](Self::events) (default: yes). Large
    /// simulations turn it off: a progress event per piece per host adds up.
    pub fn set_record_events(&mut self, record: bool) {
        self.record_events = record;
    }

    /// Adds a host; it does nothing until given a blob.
    pub fn add_host(&mut self, mut spec: HostSpec) -> HostId {
        let id = self.hosts.len();
        spec.config.rng_seed = Some(self.rng.random());
        let peer_id = PeerId::random(&mut self.rng);
        let addr = host_addr(id);
        self.by_addr.insert(addr, id);
        self.flows.add_host(spec.up, spec.down);
        self.hosts.push(Host {
            swarm: Swarm::new(spec.config, peer_id),
            addr,
            corrupt: spec.corrupt,
            online: true,
            store: FastMap::default(),
            completed: FastMap::default(),
            links: FastMap::default(),
            timer: None,
            events: Vec::new(),
            sent: 0,
        });
        id
    }

    /// Gives `host` the pieces in `have` of `meta` and starts its torrent now.
    pub fn start(&mut self, host: HostId, meta: &Arc<MetaInfo>, have: Bitfield) {
        let now = self.now;
        let h = &mut self.hosts[host];
        if !h.online {
            return;
        }
        h.store
            .insert(meta.info_hash(), (Arc::clone(meta), have.clone()));
        h.swarm
            .add_torrent(now, Arc::clone(meta), have, String::new())
            .expect("a fresh torrent with a matching bitfield");
        self.drain(host);
    }

    /// `host` holds all of `meta` and seeds it.
    pub fn seed(&mut self, host: HostId, meta: &Arc<MetaInfo>) {
        self.start(host, meta, Bitfield::full(meta.piece_count()));
    }

    /// `host` starts fetching `meta` now.
    pub fn fetch(&mut self, host: HostId, meta: &Arc<MetaInfo>) {
        self.start(host, meta, Bitfield::new(meta.piece_count()));
    }

    /// `host` starts fetching `meta` at `after` from the start of the simulation.
    pub fn fetch_at(&mut self, after: Duration, host: HostId, meta: &Arc<MetaInfo>) {
        let at = self.start + after;
        self.schedule_at(
            at.max(self.now),
            Delivery::Fetch {
                host,
                meta: Arc::clone(meta),
            },
        );
    }

    /// Adds `count` hosts of `rate` bytes/s each way, all fetching `meta` now.
    pub fn add_fetchers(&mut self, count: usize, rate: f64, meta: &Arc<MetaInfo>) -> Vec<HostId> {
        (0..count)
            .map(|_| {
                let host = self.add_host(HostSpec::symmetric(rate));
                self.fetch(host, meta);
                host
            })
            .collect()
    }

    /// Takes `host` off the network at `after` from the start.
    pub fn kill_at(&mut self, after: Duration, host: HostId) {
        let at = (self.start + after).max(self.now);
        self.schedule_at(at, Delivery::Kill { host });
    }

    /// Takes a host off the network now: its links drop, its transfers stop and the tracker
    /// forgets it.
    pub fn kill(&mut self, host: HostId) {
        if !self.hosts[host].online {
            return;
        }
        self.hosts[host].online = false;
        let peer_id = self.hosts[host].swarm.local_peer();
        let hashes: Vec<InfoHash> = self.hosts[host].store.keys().copied().collect();
        for h in hashes {
            self.tracker.remove(&h, &peer_id);
        }
        let mut ends: Vec<(ConnId, FarEnd)> = self.hosts[host].links.drain().collect();
        // Deliveries go out in connection order, whatever the map's.
        ends.sort_unstable_by_key(|&(conn, _)| conn);
        for (_, far) in ends {
            self.hosts[far.host].links.remove(&far.conn);
            self.link_table.close(far.link);
            self.schedule(
                self.latency,
                Delivery::Closed {
                    to: far.host,
                    conn: far.conn,
                },
            );
        }
        let checks = self.flows.cut_host(self.now, host);
        self.schedule_checks(checks);
    }

    /// When `host` completed `info_hash`, from the start of the simulation.
    pub fn completed_at(&self, host: HostId, info_hash: &InfoHash) -> Option<Duration> {
        self.hosts[host]
            .completed
            .get(info_hash)
            .map(|t| *t - self.start)
    }

    /// Blobs completed by all hosts together so far.
    pub fn completions(&self) -> usize {
        self.completions
    }

    /// The pieces `host` holds of `info_hash`.
    pub fn have(&self, host: HostId, info_hash: &InfoHash) -> Bitfield {
        self.hosts[host].store[info_hash].1.clone()
    }

    /// The swarm's statistics of `host` for `info_hash`.
    pub fn stats(&self, host: HostId, info_hash: &InfoHash) -> TorrentStats {
        self.hosts[host]
            .swarm
            .torrent_stats(info_hash)
            .unwrap_or_default()
    }

    /// Every swarm event of `host` (if recorded).
    pub fn events(&self, host: HostId) -> &[Event] {
        &self.hosts[host].events
    }

    /// The peer id of `host`.
    pub fn peer_id(&self, host: HostId) -> PeerId {
        self.hosts[host].swarm.local_peer()
    }

    /// The swarm core of `host`.
    pub fn swarm(&self, host: HostId) -> &Swarm {
        &self.hosts[host].swarm
    }

    /// Whether `host` is still on the network.
    pub fn is_online(&self, host: HostId) -> bool {
        self.hosts[host].online
    }

    /// Payload bytes `host` has finished sending, over all its torrents.
    pub fn bytes_sent(&self, host: HostId) -> u64 {
        self.hosts[host].sent
    }

    /// Number of hosts.
    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Events handled so far (a measure of the simulation's own work).
    pub fn events_handled(&self) -> u64 {
        self.events_handled
    }

    /// Established links (both ends past the handshake), each once, as pairs of hosts (two
    /// hosts may share several links, one per torrent).
    pub fn links(&self) -> impl Iterator<Item = (HostId, HostId)> + '_ {
        self.hosts
            .iter()
            .enumerate()
            .flat_map(|(a, host)| {
                host.links
                    .iter()
                    .map(move |(ca, far)| ((a, *ca), (far.host, far.conn)))
            })
            .filter(|((a, ca), (b, cb))| {
                (a, ca) < (b, cb)
                    && self.hosts[*a].swarm.is_established(*ca)
                    && self.hosts[*b].swarm.is_established(*cb)
            })
            .map(|((a, _), (b, _))| (a, b))
    }

    /// Runs until `done` holds or `limit` of virtual time from the start has passed; returns
    /// whether `done` held. `done` is asked after every event.
    pub fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = self.start + limit;
        loop {
            if done(self) {
                return true;
            }
            // Bounded: the queue only grows by reactions to deliveries, and virtual time
            // advances to `deadline` at the latest.
            let Some(next) = self.queue.next_at() else {
                return false;
            };
            let at = self.start + Duration::from_nanos(next);
            if at > deadline {
                self.now = deadline;
                return done(self);
            }
            let (_, what) = self.queue.pop().expect("an entry is due");
            self.now = self.now.max(at);
            self.events_handled += 1;
            self.deliver(what);
        }
    }

    /// Runs until every host in `hosts` has completed `info_hash`, or `limit`.
    pub fn run_until_complete(
        &mut self,
        hosts: &[HostId],
        info_hash: InfoHash,
        limit: Duration,
    ) -> bool {
        self.run_until(limit, |sim| {
            hosts
                .iter()
                .all(|&n| sim.hosts[n].completed.contains_key(&info_hash))
        })
    }

    fn schedule(&mut self, delay: Duration, delivery: Delivery) {
        let at = self.nanos(self.now + delay);
        // Deliveries one latency ahead are scheduled in time order, as virtual time only grows.
        if delay == self.latency {
            self.queue.push_in_order(at, delivery);
        } else {
            self.queue.push(at, delivery);
        }
    }

    fn schedule_at(&mut self, at: Instant, what: Delivery) {
        let at = self.nanos(at);
        self.queue.push(at, what);
    }

    /// `at` as nanoseconds from the start of the simulation.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from((at - self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    fn schedule_checks(&mut self, checks: Vec<Completion>) {
        for check in checks {
            self.schedule(check.after, Delivery::FlowCheck(check.flow));
        }
    }

    /// Schedules `host`'s next timeout if it moved.
    fn arm_timer(&mut self, host: HostId) {
        let h = &mut self.hosts[host];
        let next = h.swarm.poll_timeout();
        if next != h.timer {
            h.timer = next;
            if let Some(at) = next {
                let at = at.max(self.now);
                self.schedule_at(at, Delivery::Timer { host });
            }
        }
    }

    fn message_delay(&mut self) -> Duration {
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.latency + RETRANSMIT
        } else {
            self.latency
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        match delivery {
            Delivery::Incoming {
                to,
                from,
                from_conn,
            } => {
                if !self.hosts[to].online || !self.hosts[from].online {
                    self.schedule(
                        self.latency,
                        Delivery::DialFailed {
                            to: from,
                            conn: from_conn,
                        },
                    );
                    return;
                }
                let from_addr = self.hosts[from].addr;
                let conn = self.hosts[to].swarm.handle_incoming(now, from_addr);
                let link = self.link_table.open();
                let far = |host, conn| FarEnd { host, conn, link };
                self.hosts[to].links.insert(conn, far(from, from_conn));
                self.hosts[from].links.insert(from_conn, far(to, conn));
                self.schedule(
                    self.latency,
                    Delivery::Connected {
                        to: from,
                        conn: from_conn,
                        link,
                    },
                );
                self.drain(to);
            }
            Delivery::Connected { to, conn, link } => {
                if self.link_table.is_open(link) {
                    self.hosts[to].swarm.handle_connected(now, conn);
                    self.drain(to);
                }
            }
            Delivery::DialFailed { to, conn } => {
                if self.hosts[to].online {
                    self.hosts[to]
                        .swarm
                        .handle_closed(now, conn, ConnClosed::DialFailed);
                    self.drain(to);
                }
            }
            Delivery::Message {
                to,
                conn,
                link,
                message,
            } => {
                if self.link_table.is_open(link) && self.hosts[to].online {
                    self.hosts[to]
                        .swarm
                        .handle_message(now, conn, message.into());
                    self.drain(to);
                }
            }
            Delivery::Piece {
                to,
                conn,
                link,
                index,
                length,
                corrupt,
            } => {
                if !self.link_table.is_open(link) || !self.hosts[to].online {
                    return;
                }
                let host = &mut self.hosts[to];
                if let Some((info_hash, piece)) =
                    host.swarm.handle_piece_received(now, conn, index, length)
                {
                    let result = if corrupt {
                        Err(PieceWriteError::Corrupt)
                    } else {
                        let (_, have) = host.store.get_mut(&info_hash).expect("torrent in store");
                        have.set(index).expect("the swarm checked the index");
                        Ok(())
                    };
                    host.swarm
                        .handle_piece_written(now, conn, info_hash, piece, result);
                }
                self.drain(to);
            }
            Delivery::Closed { to, conn } => {
                if self.hosts[to].online {
                    self.hosts[to].links.remove(&conn);
                    self.hosts[to]
                        .swarm
                        .handle_closed(now, conn, ConnClosed::Normal);
                    self.drain(to);
                }
            }
            Delivery::FlowCheck(id) => {
                let (flow, checks) = match self.flows.check(now, id) {
                    Check::Done(flow, checks) => (flow, checks),
                    Check::NotYet(check) => {
                        self.schedule_checks(vec![check]);
                        return;
                    }
                    Check::Superseded => return,
                };
                self.schedule_checks(checks);
                self.hosts[flow.from].sent += flow.length;
                if self.hosts[flow.from].online {
                    self.hosts[flow.from]
                        .swarm
                        .handle_piece_sent(now, flow.from_conn, flow.length);
                    self.drain(flow.from);
                }
                self.schedule(
                    self.latency,
                    Delivery::Piece {
                        to: flow.to,
                        conn: flow.to_conn,
                        link: flow.link,
                        index: flow.index,
                        length: flow.length,
                        corrupt: flow.corrupt,
                    },
                );
            }
            Delivery::AnnounceReply { to, reply } => {
                if self.hosts[to].online {
                    let (info_hash, peers) = *reply;
                    let interval = Some(self.tracker_interval);
                    self.hosts[to]
                        .swarm
                        .handle_announce_response(now, info_hash, peers, interval);
                    self.drain(to);
                }
            }
            Delivery::Timer { host } => {
                let h = &mut self.hosts[host];
                if h.online && h.timer.is_some_and(|t| t <= now) {
                    h.timer = None;
                    h.swarm.handle_timeout(now);
                    self.drain(host);
                }
            }
            Delivery::Fetch { host, meta } => self.fetch(host, &meta),
            Delivery::Kill { host } => self.kill(host),
        }
    }

    /// Carries out everything `id` asked for.
    fn drain(&mut self, id: HostId) {
        let now = self.now;
        while let Some(action) = self.hosts[id].swarm.poll_action() {
            match action {
                Action::Dial { conn, peer, .. } => match self.by_addr.get(&peer.addr()) {
                    Some(&target) => self.schedule(
                        self.latency,
                        Delivery::Incoming {
                            to: target,
                            from: id,
                            from_conn: conn,
                        },
                    ),
                    None => self.schedule(self.latency, Delivery::DialFailed { to: id, conn }),
                },
                Action::Send { conn, message } => {
                    if let Some(&far) = self.hosts[id].links.get(&conn) {
                        let delay = self.message_delay();
                        self.schedule(
                            delay,
                            Delivery::Message {
                                to: far.host,
                                conn: far.conn,
                                link: far.link,
                                message: message.into(),
                            },
                        );
                    }
                }
                Action::SendPiece {
                    conn,
                    info_hash,
                    index,
                } => {
                    let Some(&far) = self.hosts[id].links.get(&conn) else {
                        continue;
                    };
                    let host = &self.hosts[id];
                    let length = host.store[&info_hash].0.piece_len(index);
                    let flow = Flow::new(
                        (id, conn),
                        (far.host, far.conn),
                        far.link,
                        index.get(),
                        length,
                        host.corrupt,
                    );
                    let checks = self.flows.start(now, flow);
                    self.schedule_checks(checks);
                }
                Action::Close { conn } => {
                    if let Some(far) = self.hosts[id].links.remove(&conn) {
                        let (to, peer_conn) = (far.host, far.conn);
                        self.hosts[to].links.remove(&peer_conn);
                        self.link_table.close(far.link);
                        let checks = self.flows.cut_link(now, (id, conn), (to, peer_conn));
                        self.schedule_checks(checks);
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
                    let host = &self.hosts[id];
                    let me = PeerInfo::new(
                        host.swarm.local_peer(),
                        host.addr,
                        host.swarm.config().origin,
                        complete,
                    );
                    // The default caps are far above any simulated cluster.
                    if let Err(e) = self.tracker.announce(now, info_hash, me.clone()) {
                        tracing::warn!(error = %e, "simulated tracker refused an announce");
                    }
                    let peers = match self.handout_policy {
                        HandoutPolicy::Random => self.tracker.handout(
                            now,
                            &info_hash,
                            &me,
                            self.handout_limit,
                            &mut self.rng,
                        ),
                        HandoutPolicy::OriginsOnly => self
                            .tracker
                            .handout(now, &info_hash, &me, self.handout_limit, &mut self.rng)
                            .into_iter()
                            .filter(|p| p.origin)
                            .collect(),
                    };
                    self.schedule(
                        self.latency,
                        Delivery::AnnounceReply {
                            to: id,
                            reply: Box::new((info_hash, peers)),
                        },
                    );
                }
                Action::Resolve {
                    conn, info_hash, ..
                } => {
                    let host = &mut self.hosts[id];
                    if let Some((meta, have)) = host.store.get(&info_hash).cloned() {
                        host.swarm
                            .add_torrent(now, meta, have, String::new())
                            .expect("a stored torrent with its own bitfield");
                    }
                    host.swarm.handle_resolved(now, conn);
                }
                Action::Finish { info_hash } => {
                    self.hosts[id].swarm.handle_finished(now, info_hash, Ok(()));
                }
            }
        }
        while let Some(event) = self.hosts[id].swarm.poll_event() {
            if let Event::Completed { info_hash } = &event {
                self.hosts[id].completed.insert(*info_hash, now);
                self.completions += 1;
            }
            if self.record_events {
                self.hosts[id].events.push(event);
            }
        }
        self.arm_timer(id);
    }
}

/// A distinct address per host: 10.x.y.z, port 7000.
fn host_addr(id: HostId) -> SocketAddr {
    let n = id as u32 + 1;
    SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 7000))
}
