//! The actor that owns the swarm and carries out its actions.

mod drive;
mod messages;
mod prepare;
mod recheck;
mod seed;
mod writes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use kraken_core::{BlobStore, Digest, Download, InfoHash, MetaInfo, PeerId};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::messages::Waiter;
pub(crate) use self::messages::{ActorEvent, Command};
use self::seed::{seed_file, seed_stored};
use super::conn::{ConnHandle, ConnTask, PieceSource};
use super::counters::Counters;
use super::rate::RateLimiter;
use super::stream::PartialSource;
use super::transport::{BoxStream, Listener, Transport};
use super::{NodeConfig, Progress};
use crate::error::Error;
use crate::swarm::{ConnClosed, ConnId, PieceWriteError, Swarm};
use crate::tracker::Tracker;
use crate::wire::Message;

/// Messages queued for one connection's writer before the peer counts as not reading.
const OUTGOING_QUEUE: usize = 256;
/// Events from connection and I/O tasks waiting for the actor.
const EVENT_QUEUE: usize = 1024;

pub(crate) struct ActorParts {
    pub(crate) config: NodeConfig,
    pub(crate) store: BlobStore,
    pub(crate) tracker: Arc<dyn Tracker>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) listener: Box<dyn Listener>,
    pub(crate) peer_id: PeerId,
    pub(crate) advertise: SocketAddr,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) counters: Counters,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) span: tracing::Span,
}

/// A torrent the node is downloading or serving.
#[derive(Debug)]
struct Torrent {
    meta: Arc<MetaInfo>,
    /// The namespace it was asked for in: a restart with fresh metainfo asks in it again.
    namespace: String,
    source: PieceSource,
    waiters: Vec<Waiter>,
    progress: Vec<watch::Sender<Progress>>,
    /// Bytes written since the last write-back started.
    unsynced: u64,
    /// Whether a write-back is running.
    writing_back: bool,
    /// When the download started and the bytes it had then, for its rate.
    rate_from: (Instant, u64),
    /// When the download was asked for (`None`: seeded, not downloaded).
    started: Option<Instant>,
    /// Watch for a download that verifies nothing (its metainfo may match nobody's bytes).
    recheck: recheck::Recheck,
}

/// A download waiting for its metainfo: who waits, who watches, and when it was asked for.
pub(super) type Preparing = (Vec<Waiter>, Vec<watch::Sender<Progress>>, Instant);

struct Actor {
    swarm: Swarm,
    config: NodeConfig,
    store: BlobStore,
    tracker: Arc<dyn Tracker>,
    transport: Arc<dyn Transport>,
    peer_id: PeerId,
    advertise: SocketAddr,
    conns: HashMap<ConnId, ConnHandle>,
    torrents: HashMap<InfoHash, Torrent>,
    by_digest: HashMap<Digest, InfoHash>,
    /// Downloads waiting for metainfo.
    preparing: HashMap<Digest, Preparing>,
    events_tx: mpsc::Sender<ActorEvent>,
    ingress: Option<Arc<RateLimiter>>,
    egress: Option<Arc<RateLimiter>>,
    counters: Counters,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    span: tracing::Span,
}

pub(crate) fn spawn(parts: ActorParts) {
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let limiter =
        |rate: Option<kraken_core::ByteSize>| rate.map(|r| Arc::new(RateLimiter::new(r.bytes())));
    let mut swarm_config = parts.config.swarm.clone();
    if swarm_config.rng_seed.is_none() {
        swarm_config.rng_seed = Some(rand::random());
    }
    let actor = Actor {
        swarm: {
            let mut swarm = Swarm::new(swarm_config, parts.peer_id);
            swarm.set_local_addr(parts.advertise);
            swarm
        },
        ingress: limiter(parts.config.ingress_rate),
        egress: limiter(parts.config.egress_rate),
        config: parts.config,
        store: parts.store,
        tracker: parts.tracker,
        transport: parts.transport,
        peer_id: parts.peer_id,
        advertise: parts.advertise,
        conns: HashMap::new(),
        torrents: HashMap::new(),
        by_digest: HashMap::new(),
        preparing: HashMap::new(),
        events_tx: events_tx.clone(),
        counters: parts.counters,
        shutdown: parts.shutdown.clone(),
        tasks: parts.tasks.clone(),
        span: parts.span.clone(),
    };
    let span = parts.span.clone();
    parts.tasks.spawn(
        accept_loop(parts.listener, events_tx, parts.shutdown.clone()).instrument(span.clone()),
    );
    parts
        .tasks
        .spawn(actor.run(parts.commands, events_rx).instrument(span));
}

async fn accept_loop(
    mut listener: Box<dyn Listener>,
    events: mpsc::Sender<ActorEvent>,
    shutdown: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, addr)) => {
                if events
                    .send(ActorEvent::Incoming { stream, addr })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::Receiver<ActorEvent>,
    ) {
        tracing::info!(addr = %self.advertise, "node started");
        // Stalled downloads are looked for a few times per recheck period.
        let mut recheck = tokio::time::interval(
            (self.config.metainfo_recheck_after / 4).max(std::time::Duration::from_millis(100)),
        );
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let timeout = self.swarm.poll_timeout();
            let sleep = async {
                match timeout {
                    Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                Some(command) = commands.recv() => self.on_command(command),
                Some(event) = events.recv() => self.on_event(event),
                () = sleep => self.swarm.handle_timeout(Instant::now()),
                _ = recheck.tick() => self.recheck_stalled(Instant::now()),
            }
            self.drive();
        }
        self.stop();
    }

    fn stop(&mut self) {
        for (_, conn) in self.conns.drain() {
            conn.cancel.cancel();
        }
        for (_, torrent) in self.torrents.drain() {
            for waiter in torrent.waiters {
                let _ = waiter.send(Err(Error::Shutdown));
            }
        }
        for (_, (waiters, _, _)) in self.preparing.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(Error::Shutdown));
            }
        }
        tracing::info!("node stopped");
    }

    /// The store's download of a torrent still being fetched.
    fn partial_download(&self, info_hash: &InfoHash) -> Option<Download> {
        match &self.torrents.get(info_hash)?.source {
            PieceSource::Partial(download) => Some(download.clone()),
            PieceSource::Blob(_) => None,
        }
    }

    /// The span of work on one torrent, under the node's.
    fn torrent_span(&self, info_hash: &InfoHash) -> tracing::Span {
        tracing::debug_span!(parent: &self.span, "torrent", torrent = %info_hash.fmt_short())
    }

    fn spawn_task<F>(&self, future: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(future.instrument(self.span.clone()));
    }

    /// Runs blocking work on the pool, inside `span`, and reports its result as an event.
    fn spawn_blocking<T, F>(
        &self,
        span: tracing::Span,
        work: F,
        report: impl FnOnce(T) -> ActorEvent + Send + 'static,
    ) where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let events = self.events_tx.clone();
        self.tasks.spawn(async move {
            let result = tokio::task::spawn_blocking(move || span.in_scope(work)).await;
            match result {
                Ok(value) => {
                    let _ = events.send(report(value)).await;
                }
                Err(e) => tracing::error!(error = %e, "blocking job failed"),
            }
        });
    }

    // ---- commands ----------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Download {
                digest,
                namespace,
                dest,
                reply,
                progress,
            } => self.start_download(digest, namespace, dest, reply, progress),
            Command::OpenPartial { digest, reply } => {
                let source = match self
                    .by_digest
                    .get(&digest)
                    .and_then(|h| self.torrents.get(h))
                {
                    Some(torrent) => Ok(PartialSource::from_piece_source(
                        Arc::clone(&torrent.meta),
                        &torrent.source,
                    )),
                    None => self
                        .store
                        .open_blob(&digest)
                        .map(PartialSource::Complete)
                        .map_err(Error::from),
                };
                let _ = reply.send(source);
            }
            Command::SeedFile { path, store, reply } => {
                let policy = self.config.piece_lengths.clone();
                let tracker = Arc::clone(&self.tracker);
                let namespace = self.config.namespace.clone();
                self.spawn_seeding(namespace, true, reply, |namespace| async move {
                    seed_file(path, store, policy, tracker, &namespace).await
                });
            }
            Command::SeedStored {
                digest,
                namespace,
                pin,
                reply,
            } => {
                if let Some(torrent) = self
                    .by_digest
                    .get(&digest)
                    .and_then(|info_hash| self.torrents.get_mut(info_hash))
                    && matches!(torrent.source, PieceSource::Blob(_))
                {
                    // Already seeding: only make sure it stays in the swarm.
                    let meta = (*torrent.meta).clone();
                    if pin {
                        self.swarm.pin(&meta.info_hash());
                    } else {
                        self.swarm.keep_alive(Instant::now(), &meta.info_hash());
                    }
                    let _ = reply.send(Ok(meta));
                    return;
                }
                let store = self.store.clone();
                let tracker = Arc::clone(&self.tracker);
                self.spawn_seeding(namespace, pin, reply, move |namespace| async move {
                    seed_stored(store, tracker, &namespace, digest).await
                });
            }
            Command::Unseed { digest } => {
                let seeding = self.by_digest.get(&digest).and_then(|info_hash| {
                    let torrent = self.torrents.get(info_hash)?;
                    matches!(torrent.source, PieceSource::Blob(_)).then_some(*info_hash)
                });
                // Downloads in progress are left alone: their waiters expect a blob.
                if let Some(info_hash) = seeding {
                    self.by_digest.remove(&digest);
                    self.swarm.remove_torrent(&info_hash);
                    // Dropping the torrent closes its blob file, so an evicted blob's
                    // disk space is freed.
                    self.torrents.remove(&info_hash);
                }
            }
            Command::Retire { digest } => {
                let idle = self.by_digest.get(&digest).and_then(|info_hash| {
                    let torrent = self.torrents.get(info_hash)?;
                    (matches!(torrent.source, PieceSource::Blob(_))
                        && !self.swarm.is_pinned(info_hash)
                        && self.swarm.torrent_stats(info_hash)?.conns == 0)
                        .then_some(*info_hash)
                });
                if let Some(info_hash) = idle {
                    self.by_digest.remove(&digest);
                    self.swarm.remove_torrent(&info_hash);
                    self.torrents.remove(&info_hash);
                }
            }
            Command::Stats { digest, reply } => {
                let stats = self
                    .by_digest
                    .get(&digest)
                    .and_then(|h| self.swarm.torrent_stats(h));
                let _ = reply.send(stats);
            }
            Command::Evicted { digest } => {
                let idle_seed = self.by_digest.get(&digest).and_then(|info_hash| {
                    let torrent = self.torrents.get(info_hash)?;
                    (matches!(torrent.source, PieceSource::Blob(_))
                        && !self.swarm.is_pinned(info_hash))
                    .then_some(*info_hash)
                });
                if let Some(info_hash) = idle_seed {
                    self.by_digest.remove(&digest);
                    self.swarm.remove_torrent(&info_hash);
                    self.torrents.remove(&info_hash);
                }
            }
            Command::Cancel { digest } => self.cancel(&digest, false),
            Command::Release { digest } => {
                if self.config.cancel_on_drop {
                    self.cancel(&digest, true);
                }
            }
            Command::Ping { reply } => {
                let _ = reply.send(());
            }
            Command::Blacklist { reply } => {
                let digests: HashMap<InfoHash, Digest> =
                    self.by_digest.iter().map(|(d, h)| (*h, *d)).collect();
                let entries = self
                    .swarm
                    .blacklist(Instant::now())
                    .into_iter()
                    .map(|entry| {
                        let digest = digests.get(&entry.info_hash).copied();
                        (entry, digest)
                    })
                    .collect();
                let _ = reply.send(entries);
            }
        }
    }

    // ---- events ------------------------------------------------------------------------

    fn on_event(&mut self, event: ActorEvent) {
        let now = Instant::now();
        match event {
            ActorEvent::Incoming { stream, addr } => {
                let conn = self.swarm.handle_incoming(now, addr);
                if let Some(peer) = stream.peer_identity() {
                    self.swarm.handle_authenticated(conn, peer);
                }
                self.start_conn(conn, stream, addr, 0);
            }
            ActorEvent::Dialed { conn, addr, result } => match result {
                Ok(stream) => {
                    // The swarm may have given up on the dial meanwhile.
                    let Some(handle) = self.conns.get(&conn) else {
                        return;
                    };
                    let max = handle.max_payload.load(Ordering::Relaxed);
                    self.conns.remove(&conn);
                    if let Some(peer) = stream.peer_identity() {
                        self.swarm.handle_authenticated(conn, peer);
                    }
                    self.start_conn(conn, stream, addr, max);
                    self.swarm.handle_connected(now, conn);
                }
                Err(e) => {
                    tracing::debug!(%conn, %addr, error = %e, "dial failed");
                    self.conns.remove(&conn);
                    self.swarm.handle_closed(now, conn, ConnClosed::DialFailed);
                }
            },
            ActorEvent::Message { conn, message } => match message {
                Message::PiecePayload { index, data } => self.on_payload(now, conn, index, data),
                Message::Handshake(ref h) => {
                    // Inbound connections learn their torrent (and so the payload limit) here.
                    if let (Some(handle), Some(torrent)) =
                        (self.conns.get(&conn), self.torrents.get(&h.info_hash))
                    {
                        handle
                            .max_payload
                            .store(torrent.meta.piece_length() as u32, Ordering::Relaxed);
                    }
                    self.swarm.handle_message(now, conn, message);
                }
                message => self.swarm.handle_message(now, conn, message),
            },
            ActorEvent::PieceSent { conn, bytes } => {
                self.counters.sent(self.swarm.is_origin(conn), bytes);
                self.swarm.handle_piece_sent(now, conn, bytes);
            }
            ActorEvent::Closed { conn, how } => {
                if self.conns.remove(&conn).is_some() {
                    self.swarm.handle_closed(now, conn, how);
                }
            }
            ActorEvent::PieceWritten {
                conn,
                info_hash,
                index,
                result,
            } => {
                self.counters.piece(match result {
                    Ok(()) => None,
                    Err(PieceWriteError::Corrupt) => Some("corrupt"),
                    Err(PieceWriteError::Storage) => Some("storage"),
                });
                if result.is_ok() {
                    self.write_back_if_due(&info_hash, index);
                }
                self.swarm
                    .handle_piece_written(now, conn, info_hash, index, result);
            }
            ActorEvent::WrittenBack { info_hash } => {
                if let Some(torrent) = self.torrents.get_mut(&info_hash) {
                    torrent.writing_back = false;
                }
            }
            ActorEvent::Finished { info_hash, result } => {
                let result = result.map(|blob| {
                    if let Some(torrent) = self.torrents.get_mut(&info_hash) {
                        torrent.source = PieceSource::Blob(blob);
                    }
                });
                self.swarm.handle_finished(now, info_hash, result);
            }
            ActorEvent::Announced { info_hash, result } => match result {
                Ok(response) => {
                    let interval = std::time::Duration::from_millis(response.interval_ms);
                    self.swarm.handle_announce_response(
                        now,
                        info_hash,
                        response.peers,
                        Some(interval),
                    );
                }
                Err(e) => {
                    tracing::warn!(torrent = %info_hash.fmt_short(), error = %e, "announce failed");
                    if is_refusal(&e) {
                        self.swarm.handle_announce_refused(now, info_hash);
                    } else {
                        self.swarm.handle_announce_failed(now, info_hash);
                    }
                }
            },
            ActorEvent::Resolved { conn, found } => {
                if let Some((meta, blob)) = found {
                    if let Some(handle) = self.conns.get(&conn) {
                        handle
                            .max_payload
                            .store(meta.piece_length() as u32, Ordering::Relaxed);
                    }
                    self.add_seed(now, meta, blob, String::new(), false);
                }
                self.swarm.handle_resolved(now, conn);
            }
            ActorEvent::DownloadReady {
                digest,
                namespace,
                result,
            } => self.on_download_ready(now, digest, namespace, result),
            ActorEvent::Rechecked { info_hash, result } => {
                self.on_rechecked(now, info_hash, result);
            }
            ActorEvent::Seeded {
                result,
                namespace,
                pin,
                reply,
            } => {
                let reply_value = match result {
                    Ok((meta, blob)) => {
                        self.add_seed(now, Arc::new(meta.clone()), blob, namespace, pin);
                        Ok(meta)
                    }
                    Err(e) => Err(e),
                };
                let _ = reply.send(reply_value);
            }
        }
    }

    fn start_conn(&mut self, conn: ConnId, stream: BoxStream, addr: SocketAddr, max_payload: u32) {
        let (outgoing_tx, outgoing_rx) = mpsc::channel(OUTGOING_QUEUE);
        let cancel = self.shutdown.child_token();
        let closing = CancellationToken::new();
        let max_payload = Arc::new(AtomicU32::new(max_payload));
        self.conns.insert(
            conn,
            ConnHandle {
                outgoing: outgoing_tx,
                cancel: cancel.clone(),
                closing: closing.clone(),
                max_payload: Arc::clone(&max_payload),
            },
        );
        let task = ConnTask {
            conn,
            stream,
            events: self.events_tx.clone(),
            outgoing: outgoing_rx,
            cancel,
            closing,
            max_payload,
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            write_stall: self.config.write_stall_timeout,
        };
        let span = tracing::debug_span!(parent: &self.span, "peer", %conn, %addr);
        self.tasks.spawn(task.run(span));
    }
}

fn done_progress(meta: &MetaInfo) -> Progress {
    Progress {
        have: meta.piece_count(),
        total: meta.piece_count(),
        length: meta.length(),
        bytes: meta.length(),
        stage: super::Stage::Done,
        done: true,
        ..Progress::default()
    }
}

/// Bytes of `have` verified pieces of `meta`: exact when complete, else counting whole
/// pieces (off by less than one piece when the short last piece is among them).
fn verified_bytes(meta: &MetaInfo, have: u32) -> u64 {
    if have >= meta.piece_count() {
        meta.length()
    } else {
        (u64::from(have) * meta.piece_length()).min(meta.length())
    }
}

/// Publishes `progress` to a watcher, keeping its count of restarts (which only
/// [`recheck`] raises).
fn set_progress(watcher: &watch::Sender<Progress>, progress: Progress) {
    watcher.send_modify(|old| {
        *old = Progress {
            restarts: old.restarts,
            ..progress
        };
    });
}

/// Whether a tracker's answer refuses the announce for good: a client error other than a
/// timeout or rate limit, which a retry would get again.
fn is_refusal(error: &Error) -> bool {
    matches!(error, Error::Tracker { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
}
