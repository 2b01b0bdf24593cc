//! The peer store on a Redis server shared by several trackers (Go Kraken keeps its peers in
//! Redis too): any tracker answers for any torrent, and a restarted tracker forgets nobody.
//!
//! The rules are the in-memory store's: an entry is keyed by (announcer address, peer id) so
//! nobody replaces another host's entry; a new entry is refused beyond the same caps; an
//! entry expires `ttl` after its last announce; a handout samples at most its limit per
//! class. Each announce and each handout is one Lua script, so it is atomic on the server
//! and costs one round trip. The keys, under [`PeerStoreConfig::key_prefix`] `P`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P t:{info hash}:{class}` | sorted set | the torrent's entries of a handout class (`ip\|peer id`), scored by expiry (ms) |
//! | `P e:{info hash}\|{ip}\|{peer id}` | string, `PX ttl` | the entry: its address, a newline, the peer as JSON |
//! | `P a:{info hash}` | hash | address → the entry that last named it (for a restarted host's replacement) |
//! | `P torrents`, `P entries`, `P n:{ip}` | sorted sets | torrents, all entries, an announcer's entries, by expiry: the caps |
//!
//! Every call has [`PeerStoreConfig::timeout`]. When Redis cannot be asked, the tracker does
//! not fail: every announce is also kept in its own memory, which answers until Redis is back
//! (asked again after [`PeerStoreConfig::retry_interval`]), and `/readiness` answers `503`
//! naming the failure. The scripts name keys they compute, so the server must be one Redis
//! (a primary, with replicas or Sentinel), not a Redis Cluster.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kraken_core::{InfoHash, PeerInfo};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Announcer, CapReached, PeerStoreConfig, PeerStoreLimits, class_of};
use crate::error::{Error, Result};
use crate::tracker::{PeerStore, SharedPeerStore};

/// Records an announce (see the module's table); answers `ok` or the cap reached.
const ANNOUNCE: &str = r#"
local p, ih, ip, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local class, value, addr = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local trusted, ttl = ARGV[8] == '1', tonumber(ARGV[9])
local max_torrents, max_peers = tonumber(ARGV[10]), tonumber(ARGV[11])
local max_torrent_peers, max_announcer = tonumber(ARGV[12]), tonumber(ARGV[13])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local expires = now + ttl
local torrents, entries, mine = p .. 'torrents', p .. 'entries', p .. 'n:' .. ip
local addrs = p .. 'a:' .. ih
local classes = {}
for i = 0, 2 do classes[i + 1] = p .. 't:' .. ih .. ':' .. i end
local function entry_key(m) return p .. 'e:' .. ih .. '|' .. m end
local function live(m)
  local s = redis.call('ZSCORE', entries, ih .. '|' .. m)
  return s and tonumber(s) > now
end
local function forget(m)
  for i = 1, 3 do redis.call('ZREM', classes[i], m) end
  redis.call('DEL', entry_key(m))
  redis.call('ZREM', entries, ih .. '|' .. m)
  local owner = string.match(m, '^([^|]*)|')
  redis.call('ZREM', p .. 'n:' .. owner, ih .. '|' .. m)
end
if not live(member) then
  redis.call('ZREMRANGEBYSCORE', torrents, '-inf', now)
  redis.call('ZREMRANGEBYSCORE', entries, '-inf', now)
  local held = 0
  for i = 1, 3 do
    redis.call('ZREMRANGEBYSCORE', classes[i], '-inf', now)
    held = held + redis.call('ZCARD', classes[i])
  end
  if held == 0 and not redis.call('ZSCORE', torrents, ih)
      and redis.call('ZCARD', torrents) >= max_torrents then
    return 'torrents'
  end
  if held >= max_torrent_peers then return 'torrent_peers' end
  if redis.call('ZCARD', entries) >= max_peers then return 'peers' end
  if not trusted then
    redis.call('ZREMRANGEBYSCORE', mine, '-inf', now)
    if redis.call('ZCARD', mine) >= max_announcer then return 'announcer' end
  end
end
-- A peer of the same announcer that named this address before (a restarted host with a new
-- id) is gone: only one process listens at an address. An entry of another announcer at the
-- address (where declared addresses are believed) keeps the address and both stay.
local previous = redis.call('HGET', addrs, addr)
local take_addr = true
if previous and previous ~= member then
  local held = redis.call('GET', entry_key(previous))
  local there = held and string.sub(held, 1, #addr + 1) == addr .. '\n'
  if there and string.sub(previous, 1, #ip + 1) == ip .. '|' then
    forget(previous)
  elseif there and live(previous) then
    take_addr = false
  end
end
for i = 1, 3 do
  if i ~= class + 1 then redis.call('ZREM', classes[i], member) end
end
redis.call('ZADD', classes[class + 1], expires, member)
redis.call('SET', entry_key(member), addr .. '\n' .. value, 'PX', ttl)
redis.call('ZADD', entries, expires, ih .. '|' .. member)
redis.call('ZADD', mine, expires, ih .. '|' .. member)
redis.call('ZADD', torrents, expires, ih)
if redis.call('HLEN', addrs) > 2 * max_torrent_peers + 16 then redis.call('DEL', addrs) end
if take_addr then redis.call('HSET', addrs, addr, member) end
for i = 1, 3 do redis.call('PEXPIRE', classes[i], ttl) end
redis.call('PEXPIRE', addrs, ttl)
redis.call('PEXPIRE', mine, ttl)
return 'ok'
"#;

/// Up to `limit` live entries of a torrent, complete peers first, then origins, then
/// leechers, each class a uniform sample (`ZRANDMEMBER`), never the announcer's peer id.
const HANDOUT: &str = r#"
local p, ih, id, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local out = {}
for i = 0, 2 do
  local want = limit - #out
  if want <= 0 then break end
  local key = p .. 't:' .. ih .. ':' .. i
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  for _, m in ipairs(redis.call('ZRANDMEMBER', key, want + 1)) do
    if #out < limit and string.sub(m, -#id) ~= id then
      local value = redis.call('GET', p .. 'e:' .. ih .. '|' .. m)
      if value then out[#out + 1] = value end
    end
  end
end
return out
"#;

/// A [`PeerStore`] on a Redis server, with this tracker's memory as its fallback.
pub struct RedisPeerStore {
    connection: ConnectionManager,
    /// Where the server is, without credentials, for messages.
    server: String,
    config: PeerStoreConfig,
    ttl: Duration,
    limits: PeerStoreLimits,
    announce: redis::Script,
    handout: redis::Script,
    /// Every announce is also recorded here; it answers while Redis cannot.
    memory: SharedPeerStore,
    /// Until when Redis is not asked, after a failure, and the failure.
    down: Mutex<Option<(Instant, String)>>,
}

impl std::fmt::Debug for RedisPeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPeerStore")
            .field("server", &self.server)
            .field("key_prefix", &self.config.key_prefix)
            .finish_non_exhaustive()
    }
}

impl RedisPeerStore {
    /// A store on the server of `config.redis`, forgetting peers `ttl` after their last
    /// announce and holding at most `limits`. Connects lazily: a server that is down at
    /// start-up leaves the tracker answering from memory until it is up.
    pub fn new(config: &PeerStoreConfig, ttl: Duration, limits: PeerStoreLimits) -> Result<Self> {
        config.validate().map_err(Error::Redis)?;
        let url = config
            .redis
            .as_deref()
            .ok_or(Error::Config("peer_store.redis is not set"))?;
        let client = redis::Client::open(url).map_err(|e| Error::Redis(e.to_string()))?;
        let server = client.get_connection_info().addr().to_string();
        // One attempt per call: the tracker's own timeout and `retry_interval` pace retries.
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, manager)
            .map_err(|e| Error::Redis(e.to_string()))?;
        Ok(Self {
            connection,
            server,
            config: config.clone(),
            ttl,
            limits,
            announce: redis::Script::new(ANNOUNCE),
            handout: redis::Script::new(HANDOUT),
            memory: SharedPeerStore::new(ttl, limits),
            down: Mutex::new(None),
        })
    }

    /// The server's address (`host:port`), without credentials.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether Redis is to be asked now (not within `retry_interval` of a failure).
    fn asking(&self) -> bool {
        let down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        down.as_ref()
            .is_none_or(|(until, _)| Instant::now() >= *until)
    }

    /// Notes how a call to Redis went: a failure is logged once per outage and keeps Redis
    /// unasked for `retry_interval`.
    fn note<T>(&self, outcome: &Result<T>) {
        let mut down = self.down.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(_) => {
                if down.take().is_some() {
                    tracing::info!(server = %self.server, "redis peer store is back");
                }
            }
            Err(e) => {
                if down.is_none() {
                    tracing::warn!(server = %self.server, error = %e,
                        "redis peer store failed; answering from this tracker's memory");
                }
                let until = Instant::now() + self.config.retry_interval;
                *down = Some((until, e.to_string()));
            }
        }
    }

    /// Runs one script invocation with the store's timeout.
    async fn call<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut connection = self.connection.clone();
        let run = invocation.invoke_async(&mut connection);
        let outcome = match tokio::time::timeout(self.config.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Redis(format!("{}: {e}", self.server))),
            Err(_) => Err(Error::Redis(format!(
                "{}: no answer within {:?}",
                self.server, self.config.timeout
            ))),
        };
        self.note(&outcome);
        outcome
    }
}

/// An entry's member name: its announcer and peer id, as the in-memory store keys it.
fn member(announcer: &Announcer, peer: &PeerInfo) -> String {
    format!("{}|{}", announcer.ip, peer.peer_id)
}

/// A stored entry back as a peer: its address line, then the JSON.
fn decode(value: &[u8]) -> Option<PeerInfo> {
    let newline = value.iter().position(|&b| b == b'\n')?;
    serde_json::from_slice(&value[newline + 1..]).ok()
}

#[async_trait]
impl PeerStore for RedisPeerStore {
    async fn announce(
        &self,
        info_hash: InfoHash,
        announcer: Announcer,
        peer: PeerInfo,
    ) -> Result<()> {
        let local = self
            .memory
            .announce(info_hash, announcer, peer.clone())
            .await;
        if !self.asking() {
            return local;
        }
        let value = serde_json::to_string(&peer).map_err(|_| Error::Internal("peer as JSON"))?;
        let limits = &self.limits;
        let mut invocation = self.announce.prepare_invoke();
        invocation
            .arg(&self.config.key_prefix)
            .arg(info_hash.to_string())
            .arg(announcer.ip.to_string())
            .arg(member(&announcer, &peer))
            .arg(class_of(&peer))
            .arg(value)
            .arg(peer.addr().to_string())
            .arg(if announcer.trusted { "1" } else { "0" })
            .arg(self.ttl.as_millis().max(1) as u64)
            .arg(limits.max_torrents)
            .arg(limits.max_peers)
            .arg(limits.max_peers_per_torrent)
            .arg(limits.max_entries_per_announcer);
        let answer: String = match self.call(&invocation).await {
            Ok(answer) => answer,
            Err(_) => return local,
        };
        match answer.as_str() {
            "ok" => Ok(()),
            "torrents" => Err(CapReached::Torrents.into()),
            "peers" => Err(CapReached::Peers.into()),
            "torrent_peers" => Err(CapReached::TorrentPeers.into()),
            "announcer" => Err(CapReached::Announcer.into()),
            _ => Err(Error::Redis(format!("unexpected answer {answer:?}"))),
        }
    }

    async fn handout(
        &self,
        info_hash: &InfoHash,
        peer: &PeerInfo,
        limit: usize,
    ) -> Result<Vec<PeerInfo>> {
        if peer.complete || limit == 0 {
            return Ok(Vec::new());
        }
        if !self.asking() {
            return self.memory.handout(info_hash, peer, limit).await;
        }
        let mut invocation = self.handout.prepare_invoke();
        invocation
            .arg(&self.config.key_prefix)
            .arg(info_hash.to_string())
            .arg(peer.peer_id.to_string())
            .arg(limit);
        match self.call::<Vec<Vec<u8>>>(&invocation).await {
            Ok(values) => Ok(values
                .iter()
                .filter_map(|value| decode(value))
                .filter(|p| p.peer_id != peer.peer_id)
                .take(limit)
                .collect()),
            Err(_) => self.memory.handout(info_hash, peer, limit).await,
        }
    }

    /// Asks the server (`PING`) within the timeout; a failure names the server and says the
    /// tracker answers from its memory meanwhile.
    async fn ready(&self) -> Result<()> {
        let mut connection = self.connection.clone();
        let command = redis::cmd("PING");
        let ping = command.query_async::<String>(&mut connection);
        let outcome = match tokio::time::timeout(self.config.timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.config.timeout)),
        };
        let outcome = outcome.map_err(|e| {
            Error::Redis(format!(
                "{}: {e} (answering from this tracker's memory)",
                self.server
            ))
        });
        self.note(&outcome);
        outcome
    }
}
