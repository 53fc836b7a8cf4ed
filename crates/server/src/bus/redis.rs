//! The cluster bus on Redis (7.0 or later; one server, or Sentinel in front of one — not
//! Redis Cluster, since a session's end touches the keys of every room it was in).
//!
//! Keys (all under a prefix, `pw:` by default):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `s:{peer}` | hash | `node`, `epoch`: where the session is held |
//! | `leases` | sorted set | peer → lease deadline (ms) |
//! | `i:{peer}` | stream | the inbox: `f` (from), `d` (data) |
//! | `ro:{peer}` | set | the rooms the peer is in |
//! | `rz:{room}` | sorted set | members, scored in join order (`rc:{room}` counts) |
//! | `rm:{room}` | hash | member → metadata (`n`: none, `m…`: the JSON) |
//! | `rl:{room}` | stream | the room's log: `e` (`j`/`l`), `p` (peer), `m` (metadata) |
//! | `nodes`, `nodeinfo` | sorted set, hash | live nodes (deadline) and their descriptions |
//! | `seq` | string | the last entry id handed out |
//! | `rooms` | set | rooms with members (for the cluster's metrics) |
//!
//! Channels: `n:{node}` wakes a node (`i {peer}`: inbox; `e {peer} {epoch}`: evict) and
//! `r:{room}` a room's watchers. Entry ids are `0-{n}` with `n` from one counter (`seq`), so an
//! id is never used twice, not even by a room emptied, forgotten and made again — a reader
//! holding an old position sees a gap, never someone else's entry. Every change that must be
//! atomic is one Lua script. Session
//! keys also carry a Redis expiry well past any lease, so a cluster whose every node died
//! leaves nothing behind for long.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{
    Bus, BusError, Claim, Entry, EntryId, Joined, Members, Result, RoomEvent, Sent, Wake, Waker,
};

/// Entries a room's log keeps at least (Redis trims it approximately, in whole blocks).
pub const ROOM_LOG_ENTRIES: usize = 1000;
/// The expiry of session keys, renewed with the lease: a safety net, far past any lease.
const KEY_TTL_MS: u64 = 3_600_000;
/// How long one command may take before the bus counts as unreachable.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Lua shared by the scripts that take a peer out of a room.
const LEAVE_LUA: &str = r"
local function next_id(P)
  return '0-'..redis.call('INCR', P..'seq')
end
local function swarm_out(P, swarm, peer)
  local w = P..'w:'..swarm
  redis.call('HDEL', w, peer)
  redis.call('SREM', P..'ws:'..swarm, peer)
  if redis.call('HLEN', w) == 0 then redis.call('DEL', w, P..'ws:'..swarm) end
end
local function leave(P, room, peer)
  local z = P..'rz:'..room
  if redis.call('ZREM', z, peer) == 0 then return false end
  redis.call('HDEL', P..'rm:'..room, peer)
  redis.call('SREM', P..'ro:'..peer, room)
  local l = P..'rl:'..room
  local id = redis.call('XADD', l, 'MAXLEN', '~', __LOG__, next_id(P), 'e', 'l', 'p', peer)
  redis.call('PUBLISH', P..'r:'..room, 'l')
  if redis.call('ZCARD', z) == 0 then
    redis.call('DEL', z, P..'rm:'..room, l, P..'rc:'..room)
    redis.call('SREM', P..'rooms', room)
  end
  return id
end
local function snapshot(P, room)
  local out = {}
  local last = redis.call('XREVRANGE', P..'rl:'..room, '+', '-', 'COUNT', 1)
  if #last > 0 then out[1] = last[1][1] else out[1] = '0-0' end
  for _, p in ipairs(redis.call('ZRANGE', P..'rz:'..room, 0, -1)) do
    out[#out + 1] = p
    out[#out + 1] = redis.call('HGET', P..'rm:'..room, p) or 'n'
  end
  return out
end
";

fn script(body: &str) -> Script {
    let lua = format!("{LEAVE_LUA}\n{body}").replace("__LOG__", &ROOM_LOG_ENTRIES.to_string());
    Script::new(&lua)
}

// ARGV: prefix, peer, node, lease deadline, key ttl.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, peer = ARGV[1], ARGV[2]
local k = P..'s:'..peer
local prev = redis.call('HGET', k, 'node')
local epoch = redis.call('HINCRBY', k, 'epoch', 1)
redis.call('HSET', k, 'node', ARGV[3])
redis.call('PEXPIRE', k, ARGV[5])
redis.call('ZADD', P..'leases', ARGV[4], peer)
local rooms = redis.call('SMEMBERS', P..'ro:'..peer)
if prev then return {epoch, rooms, prev} end
return {epoch, rooms}
",
    )
});

// ARGV: prefix, lease deadline, key ttl, then peer and epoch pairs.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P = ARGV[1]
local out = {}
for i = 4, #ARGV, 2 do
  local peer = ARGV[i]
  local k = P..'s:'..peer
  if redis.call('HGET', k, 'epoch') == ARGV[i + 1] then
    redis.call('ZADD', P..'leases', ARGV[2], peer)
    redis.call('PEXPIRE', k, ARGV[3])
    redis.call('PEXPIRE', P..'i:'..peer, ARGV[3])
    redis.call('PEXPIRE', P..'ro:'..peer, ARGV[3])
    redis.call('PEXPIRE', P..'wo:'..peer, ARGV[3])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
",
    )
});

// ARGV: prefix, to, from, data, max inbox, key ttl, shared room ('1': required).
static SEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, to = ARGV[1], ARGV[2]
local node = redis.call('HGET', P..'s:'..to, 'node')
if not node then return {'nopeer'} end
if ARGV[7] == '1' and #redis.call('SINTER', P..'ro:'..ARGV[3], P..'ro:'..to) == 0 then
  return {'notshared'}
end
local ik = P..'i:'..to
if redis.call('XLEN', ik) >= tonumber(ARGV[5]) then return {'full'} end
local id = redis.call('XADD', ik, next_id(P), 'f', ARGV[3], 'd', ARGV[4])
redis.call('PEXPIRE', ik, ARGV[6])
redis.call('PUBLISH', P..'n:'..node, 'i '..to)
return {'ok', id}
",
    )
});

// ARGV: prefix, room, peer, stored metadata, max members, key ttl.
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, room, peer = ARGV[1], ARGV[2], ARGV[3]
local z = P..'rz:'..room
if redis.call('EXISTS', P..'s:'..peer) == 0 then return {'nosession'} end
if redis.call('ZSCORE', z, peer) then return {'already', snapshot(P, room)} end
if redis.call('ZCARD', z) >= tonumber(ARGV[5]) then return {'full'} end
redis.call('ZADD', z, redis.call('INCR', P..'rc:'..room), peer)
redis.call('SADD', P..'rooms', room)
redis.call('HSET', P..'rm:'..room, peer, ARGV[4])
redis.call('SADD', P..'ro:'..peer, room)
redis.call('PEXPIRE', P..'ro:'..peer, ARGV[6])
redis.call('XADD', P..'rl:'..room, 'MAXLEN', '~', __LOG__, next_id(P), 'e', 'j', 'p', peer, 'm', ARGV[4])
redis.call('PUBLISH', P..'r:'..room, 'j')
return {'joined', snapshot(P, room)}
",
    )
});

// ARGV: prefix, room, peer.
static LEAVE: LazyLock<Script> =
    LazyLock::new(|| script("return leave(ARGV[1], ARGV[2], ARGV[3])"));

// ARGV: prefix, room.
static MEMBERS: LazyLock<Script> = LazyLock::new(|| script("return snapshot(ARGV[1], ARGV[2])"));

// ARGV: prefix, room, after, count.
static ROOM_LOG: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local l = ARGV[1]..'rl:'..ARGV[2]
if ARGV[3] ~= '0-0' and #redis.call('XRANGE', l, ARGV[3], ARGV[3]) == 0 then return {'gap'} end
return {'ok', redis.call('XRANGE', l, '('..ARGV[3], '+', 'COUNT', ARGV[4])}
",
    )
});

// ARGV: prefix, peer, 'lapsed' and now, or 'epoch' and the epoch.
static END: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, peer = ARGV[1], ARGV[2]
if ARGV[3] == 'lapsed' then
  local d = redis.call('ZSCORE', P..'leases', peer)
  if not d or tonumber(d) >= tonumber(ARGV[4]) then return {} end
elseif redis.call('HGET', P..'s:'..peer, 'epoch') ~= ARGV[4] then
  return {}
end
local out = {}
for _, room in ipairs(redis.call('SMEMBERS', P..'ro:'..peer)) do
  local id = leave(P, room, peer)
  if id then
    out[#out + 1] = room
    out[#out + 1] = id
  end
end
for _, swarm in ipairs(redis.call('SMEMBERS', P..'wo:'..peer)) do swarm_out(P, swarm, peer) end
redis.call('DEL', P..'s:'..peer, P..'i:'..peer, P..'ro:'..peer, P..'wo:'..peer)
redis.call('ZREM', P..'leases', peer)
return out
",
    )
});

// ARGV: prefix, swarm, peer, seed ('1'), max members, key ttl. Swarm members live in
// `w:<swarm>` (peer → seed flag) and `ws:<swarm>` (the seeds); a session's swarms in `wo:<peer>`.
static SWARM_ENTER: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, swarm, peer = ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', P..'s:'..peer) == 0 then return 0 end
local w = P..'w:'..swarm
if redis.call('HEXISTS', w, peer) == 0 and redis.call('HLEN', w) >= tonumber(ARGV[5]) then
  return 0
end
if ARGV[4] == '1' then
  redis.call('HSET', w, peer, '1')
  redis.call('SADD', P..'ws:'..swarm, peer)
else
  redis.call('HSETNX', w, peer, '0')
end
redis.call('SADD', P..'wo:'..peer, swarm)
redis.call('PEXPIRE', P..'wo:'..peer, ARGV[6])
return 1
",
    )
});

// ARGV: prefix, swarm, peer.
static SWARM_EXIT: LazyLock<Script> = LazyLock::new(|| {
    script(
        "swarm_out(ARGV[1], ARGV[2], ARGV[3]) redis.call('SREM', ARGV[1]..'wo:'..ARGV[3], ARGV[2]) return 1",
    )
});

// ARGV: prefix, swarm, peer, count. Seeds drawn first, then anyone; a member whose session is
// gone (its key expired with no node left to end it) is dropped on the way.
static SWARM_PICK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P, swarm, peer, count = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local w = P..'w:'..swarm
local out, seen = {}, {[peer] = true}
local function add(p, seed)
  if #out >= 2 * count or seen[p] then return end
  seen[p] = true
  if redis.call('EXISTS', P..'s:'..p) == 0 then
    swarm_out(P, swarm, p)
    return
  end
  out[#out + 1] = p
  out[#out + 1] = seed
end
for _, p in ipairs(redis.call('SRANDMEMBER', P..'ws:'..swarm, count + 1)) do add(p, 1) end
for _, p in ipairs(redis.call('HRANDFIELD', w, count + 1)) do
  add(p, tonumber(redis.call('HGET', w, p) or '0'))
end
return out
",
    )
});

// ARGV: prefix, node, now, deadline, info.
static BEAT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P = ARGV[1]
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P..'nodes', '-inf', ARGV[3])) do
  redis.call('HDEL', P..'nodeinfo', n)
end
redis.call('ZREMRANGEBYSCORE', P..'nodes', '-inf', ARGV[3])
redis.call('ZADD', P..'nodes', ARGV[4], ARGV[2])
redis.call('HSET', P..'nodeinfo', ARGV[2], ARGV[5])
return 1
",
    )
});

// ARGV: prefix, now.
static NODES: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local P = ARGV[1]
local out = {}
for _, n in ipairs(redis.call('ZRANGEBYSCORE', P..'nodes', '('..ARGV[2], '+inf')) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('HGET', P..'nodeinfo', n) or ''
end
return out
",
    )
});

/// A node's connection to the cluster bus on Redis.
#[derive(Clone)]
pub struct RedisBus {
    conn: ConnectionManager,
    prefix: String,
    _keepalive: Arc<KeepAlive>,
}

/// How often an idle connection is checked: a lost one is re-established (and the node told
/// to resync) within about this long of Redis being back, traffic or not.
const KEEPALIVE: Duration = Duration::from_millis(500);

/// The task that pings Redis for a [`RedisBus`]; ends with the last clone of it.
struct KeepAlive(tokio::task::JoinHandle<()>);

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for RedisBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBus")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisBus {
    /// Connects node `node` to the Redis at `url` (`redis://host:port/db`, `rediss://…`,
    /// `redis+unix:///path`), with keys under `prefix`. The connection reconnects by itself;
    /// the node's wake-ups come on the receiver, with [`Wake::Resync`] after every reconnect.
    pub async fn connect(
        url: &str,
        prefix: &str,
        node: &str,
    ) -> Result<(RedisBus, mpsc::Receiver<Wake>)> {
        let info = url
            .into_connection_info()
            .map_err(|e| BusError::Unreachable(format!("bad Redis URL: {e}")))?;
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client = Client::open(info).map_err(error)?;
        let (waker, rx) = Waker::new();
        let pushes = Pushes {
            waker,
            prefix: prefix.to_owned(),
            node_channel: format!("{prefix}n:{node}"),
            lost: AtomicBool::new(false),
        };
        let pushes = Arc::new(pushes);
        let config = ConnectionManagerConfig::new()
            .set_push_sender(move |p: PushInfo| {
                pushes.push(p);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription()
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            // Fail fast while Redis is away (the next command tries again): a node answers
            // its clients "retry" rather than holding them.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(error)?;
        conn.subscribe(format!("{prefix}n:{node}"))
            .await
            .map_err(error)?;
        let mut pinger = conn.clone();
        let keepalive = tokio::spawn(async move {
            let mut every = tokio::time::interval(KEEPALIVE);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // A failure is the reconnect's business; this only makes sure one is tried.
                let _: redis::RedisResult<Value> =
                    redis::cmd("PING").query_async(&mut pinger).await;
            }
        });
        let bus = RedisBus {
            conn,
            prefix: prefix.to_owned(),
            _keepalive: Arc::new(KeepAlive(keepalive)),
        };
        Ok((bus, rx))
    }

    async fn run(&self, script: &Script, args: &[&(dyn Display + Sync)]) -> Result<Value> {
        let mut inv = script.prepare_invoke();
        inv.arg(&self.prefix);
        for a in args {
            inv.arg(a.to_string());
        }
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(error)
    }

    async fn cmd(&self, cmd: &redis::Cmd) -> Result<Value> {
        let mut conn = self.conn.clone();
        cmd.query_async(&mut conn).await.map_err(error)
    }
}

fn error(e: redis::RedisError) -> BusError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        BusError::Unreachable(e.to_string())
    } else {
        BusError::Failed(e.to_string())
    }
}

fn garbage(what: &str, v: &Value) -> BusError {
    let mut s = format!("{v:?}");
    s.truncate(200);
    BusError::Garbage(format!("{what}: {s}"))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        _ => text(v)?.parse().ok(),
    }
}

fn array(v: &Value) -> Option<&[Value]> {
    match v {
        Value::Array(a) | Value::Set(a) => Some(a),
        Value::Nil => Some(&[]),
        _ => None,
    }
}

fn entry_id(v: &Value) -> Option<EntryId> {
    EntryId::parse(&text(v)?)
}

/// Stored metadata: `n` (none) or `m` and the JSON.
fn store_meta(meta: Option<&str>) -> String {
    meta.map_or_else(|| "n".to_owned(), |m| format!("m{m}"))
}

fn load_meta(s: &str) -> Option<Option<String>> {
    match s.strip_prefix('m') {
        Some(m) => Some(Some(m.to_owned())),
        None if s == "n" => Some(None),
        None => None,
    }
}

fn members(v: &Value) -> Option<Members> {
    let a = array(v)?;
    let (at, rest) = a.split_first()?;
    if rest.len() % 2 != 0 {
        return None;
    }
    let members = rest
        .chunks(2)
        .map(|c| Some((text(&c[0])?, load_meta(&text(&c[1])?)?)))
        .collect::<Option<Vec<_>>>()?;
    Some(Members {
        at: entry_id(at)?,
        members,
    })
}

/// A stream entry `[id, [field, value, …]]` as its id and fields.
fn stream_entry(v: &Value) -> Option<(EntryId, Vec<(String, String)>)> {
    let [id, fields] = array(v)? else {
        return None;
    };
    let fields = array(fields)?;
    if fields.len() % 2 != 0 {
        return None;
    }
    let fields = fields
        .chunks(2)
        .map(|c| Some((text(&c[0])?, text(&c[1])?)))
        .collect::<Option<Vec<_>>>()?;
    Some((entry_id(id)?, fields))
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn room_event(fields: &[(String, String)]) -> Option<RoomEvent> {
    let peer = field(fields, "p")?.to_owned();
    match field(fields, "e")? {
        "j" => Some(RoomEvent::Joined {
            peer,
            meta: load_meta(field(fields, "m")?)?,
        }),
        "l" => Some(RoomEvent::Left { peer }),
        _ => None,
    }
}

fn left_rooms(v: &Value) -> Option<Vec<(String, EntryId)>> {
    let a = array(v)?;
    if a.len() % 2 != 0 {
        return None;
    }
    let mut out = a
        .chunks(2)
        .map(|c| Some((text(&c[0])?, entry_id(&c[1])?)))
        .collect::<Option<Vec<_>>>()?;
    out.sort();
    Some(out)
}

/// Turns Redis pushes into a node's wake-ups.
struct Pushes {
    waker: Waker,
    prefix: String,
    node_channel: String,
    /// The connection dropped: the next (re)subscription confirms the reconnect.
    lost: AtomicBool,
}

impl Pushes {
    fn push(&self, p: PushInfo) {
        match p.kind {
            PushKind::Disconnection if !self.lost.swap(true, Ordering::Relaxed) => {
                warn!("cluster bus: lost the connection to Redis; reconnecting");
            }
            PushKind::Subscribe if self.lost.swap(false, Ordering::Relaxed) => {
                warn!("cluster bus: reconnected to Redis; re-reading what this node holds");
                self.waker.wake(Wake::Resync);
            }
            PushKind::Message => {
                let (Some(channel), Some(payload)) =
                    (p.data.first().and_then(text), p.data.get(1).and_then(text))
                else {
                    return debug!("cluster bus: a push without channel or payload");
                };
                match self.wake_for(&channel, &payload) {
                    Some(w) => self.waker.wake(w),
                    None => debug!(channel, payload, "cluster bus: a message not understood"),
                }
            }
            _ => {}
        }
    }

    fn wake_for(&self, channel: &str, payload: &str) -> Option<Wake> {
        if channel == self.node_channel {
            let mut words = payload.split(' ');
            return match (words.next()?, words.next(), words.next(), words.next()) {
                ("i", Some(peer), None, None) => Some(Wake::Inbox {
                    peer: peer.to_owned(),
                }),
                ("e", Some(peer), Some(epoch), None) => Some(Wake::Evict {
                    peer: peer.to_owned(),
                    epoch: epoch.parse().ok()?,
                }),
                _ => None,
            };
        }
        let room = channel.strip_prefix(&self.prefix)?.strip_prefix("r:")?;
        Some(Wake::Room {
            room: room.to_owned(),
        })
    }
}

impl Bus for RedisBus {
    async fn beat(&self, node: &str, info: &str, now_ms: u64, ttl_ms: u64) -> Result<()> {
        let until = now_ms.saturating_add(ttl_ms);
        self.run(&BEAT, &[&node, &now_ms, &until, &info]).await?;
        Ok(())
    }

    async fn nodes(&self, now_ms: u64) -> Result<Vec<(String, String)>> {
        let v = self.run(&NODES, &[&now_ms]).await?;
        let parse = || {
            let a = array(&v)?;
            if a.len() % 2 != 0 {
                return None;
            }
            let mut out = a
                .chunks(2)
                .map(|c| Some((text(&c[0])?, text(&c[1])?)))
                .collect::<Option<Vec<_>>>()?;
            out.sort();
            Some(out)
        };
        parse().ok_or_else(|| garbage("nodes", &v))
    }

    async fn claim(&self, peer: &str, node: &str, lease_until_ms: u64) -> Result<Claim> {
        let v = self
            .run(&CLAIM, &[&peer, &node, &lease_until_ms, &KEY_TTL_MS])
            .await?;
        let parse = || {
            let a = array(&v)?;
            let epoch = int(a.first()?)?;
            let mut rooms = array(a.get(1)?)?
                .iter()
                .map(text)
                .collect::<Option<Vec<_>>>()?;
            rooms.sort();
            let previous = match a.get(2) {
                Some(p) => Some(text(p)?),
                None => None,
            };
            Some(Claim {
                epoch,
                previous,
                rooms,
            })
        };
        parse().ok_or_else(|| garbage("claim", &v))
    }

    async fn session(&self, peer: &str) -> Result<Option<(String, u64)>> {
        let key = format!("{}s:{peer}", self.prefix);
        let v = self
            .cmd(redis::cmd("HMGET").arg(key).arg("node").arg("epoch"))
            .await?;
        match array(&v) {
            Some([Value::Nil, Value::Nil]) => Ok(None),
            Some([node, epoch]) => match (text(node), int(epoch)) {
                (Some(n), Some(e)) => Ok(Some((n, e))),
                _ => Err(garbage("session", &v)),
            },
            _ => Err(garbage("session", &v)),
        }
    }

    async fn renew(&self, sessions: &[(String, u64)], lease_until_ms: u64) -> Result<Vec<bool>> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let mut inv = RENEW.prepare_invoke();
        inv.arg(&self.prefix).arg(lease_until_ms).arg(KEY_TTL_MS);
        for (peer, epoch) in sessions {
            inv.arg(peer).arg(epoch);
        }
        let mut conn = self.conn.clone();
        let v: Value = inv.invoke_async(&mut conn).await.map_err(error)?;
        let parse = || {
            let a = array(&v)?;
            (a.len() == sessions.len()).then_some(())?;
            a.iter()
                .map(|x| int(x).map(|i| i == 1))
                .collect::<Option<Vec<bool>>>()
        };
        parse().ok_or_else(|| garbage("renew", &v))
    }

    async fn send(
        &self,
        to: &str,
        from: &str,
        data: &str,
        max_inbox: usize,
        shared_room: bool,
    ) -> Result<Sent> {
        let shared = u8::from(shared_room);
        let v = self
            .run(
                &SEND,
                &[&to, &from, &data, &max_inbox, &KEY_TTL_MS, &shared],
            )
            .await?;
        let a = array(&v).ok_or_else(|| garbage("send", &v))?;
        match (a.first().and_then(text).as_deref(), a.get(1)) {
            (Some("ok"), Some(id)) => entry_id(id)
                .map(Sent::Queued)
                .ok_or_else(|| garbage("send", &v)),
            (Some("nopeer"), None) => Ok(Sent::NoSuchPeer),
            (Some("full"), None) => Ok(Sent::InboxFull),
            (Some("notshared"), None) => Ok(Sent::NotShared),
            _ => Err(garbage("send", &v)),
        }
    }

    async fn inbox(&self, peer: &str, after: EntryId, count: usize) -> Result<Vec<Entry>> {
        let key = format!("{}i:{peer}", self.prefix);
        let v = self
            .cmd(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(count),
            )
            .await?;
        let parse = || {
            array(&v)?
                .iter()
                .map(|e| {
                    let (id, fields) = stream_entry(e)?;
                    Some(Entry {
                        id,
                        from: field(&fields, "f")?.to_owned(),
                        data: field(&fields, "d")?.to_owned(),
                    })
                })
                .collect::<Option<Vec<_>>>()
        };
        parse().ok_or_else(|| garbage("inbox", &v))
    }

    async fn ack(&self, peer: &str, upto: EntryId) -> Result<()> {
        let key = format!("{}i:{peer}", self.prefix);
        self.cmd(
            redis::cmd("XTRIM")
                .arg(key)
                .arg("MINID")
                .arg(upto.next().to_string()),
        )
        .await?;
        Ok(())
    }

    async fn join(
        &self,
        room: &str,
        peer: &str,
        meta: Option<&str>,
        max_members: usize,
    ) -> Result<Joined> {
        let stored = store_meta(meta);
        let v = self
            .run(&JOIN, &[&room, &peer, &stored, &max_members, &KEY_TTL_MS])
            .await?;
        let a = array(&v).ok_or_else(|| garbage("join", &v))?;
        let snapshot = || {
            a.get(1)
                .and_then(members)
                .ok_or_else(|| garbage("join", &v))
        };
        match a.first().and_then(text).as_deref() {
            Some("joined") => Ok(Joined::Joined(snapshot()?)),
            Some("already") => Ok(Joined::Already(snapshot()?)),
            Some("full") => Ok(Joined::Full),
            Some("nosession") => Ok(Joined::NoSession),
            _ => Err(garbage("join", &v)),
        }
    }

    async fn leave(&self, room: &str, peer: &str) -> Result<Option<EntryId>> {
        let v = self.run(&LEAVE, &[&room, &peer]).await?;
        match &v {
            Value::Nil | Value::Boolean(false) => Ok(None),
            v => entry_id(v).map(Some).ok_or_else(|| garbage("leave", v)),
        }
    }

    async fn room_log(
        &self,
        room: &str,
        after: EntryId,
        count: usize,
    ) -> Result<Option<Vec<(EntryId, RoomEvent)>>> {
        let v = self.run(&ROOM_LOG, &[&room, &after, &count]).await?;
        let a = array(&v).ok_or_else(|| garbage("room log", &v))?;
        match (a.first().and_then(text).as_deref(), a.get(1)) {
            (Some("gap"), None) => Ok(None),
            (Some("ok"), Some(entries)) => {
                let parse = || {
                    array(entries)?
                        .iter()
                        .map(|e| {
                            let (id, fields) = stream_entry(e)?;
                            Some((id, room_event(&fields)?))
                        })
                        .collect::<Option<Vec<_>>>()
                };
                parse().map(Some).ok_or_else(|| garbage("room log", &v))
            }
            _ => Err(garbage("room log", &v)),
        }
    }

    async fn members(&self, room: &str) -> Result<Members> {
        let v = self.run(&MEMBERS, &[&room]).await?;
        members(&v).ok_or_else(|| garbage("members", &v))
    }

    async fn expired(&self, now_ms: u64, max: usize) -> Result<Vec<String>> {
        let key = format!("{}leases", self.prefix);
        let v = self
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(key)
                    .arg("-inf")
                    .arg(format!("({now_ms}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(max),
            )
            .await?;
        let parse = || array(&v)?.iter().map(text).collect::<Option<Vec<_>>>();
        parse().ok_or_else(|| garbage("expired", &v))
    }

    async fn reap(&self, peer: &str, now_ms: u64) -> Result<Vec<(String, EntryId)>> {
        let v = self.run(&END, &[&peer, &"lapsed", &now_ms]).await?;
        left_rooms(&v).ok_or_else(|| garbage("reap", &v))
    }

    async fn end(&self, peer: &str, epoch: u64) -> Result<Vec<(String, EntryId)>> {
        let v = self.run(&END, &[&peer, &"epoch", &epoch]).await?;
        left_rooms(&v).ok_or_else(|| garbage("end", &v))
    }

    async fn evict(&self, node: &str, peer: &str, epoch: u64) -> Result<()> {
        let channel = format!("{}n:{node}", self.prefix);
        self.cmd(
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(format!("e {peer} {epoch}")),
        )
        .await?;
        Ok(())
    }

    async fn totals(&self) -> Result<(usize, usize)> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD")
            .arg(format!("{}leases", self.prefix))
            .cmd("SCARD")
            .arg(format!("{}rooms", self.prefix));
        let mut conn = self.conn.clone();
        let v: Value = pipe.query_async(&mut conn).await.map_err(error)?;
        match array(&v) {
            Some([s, r]) => match (int(s), int(r)) {
                (Some(s), Some(r)) => Ok((s as usize, r as usize)),
                _ => Err(garbage("totals", &v)),
            },
            _ => Err(garbage("totals", &v)),
        }
    }

    async fn watch_room(&self, room: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.subscribe(format!("{}r:{room}", self.prefix))
            .await
            .map_err(error)
    }

    async fn unwatch_room(&self, room: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        conn.unsubscribe(format!("{}r:{room}", self.prefix))
            .await
            .map_err(error)
    }

    async fn swarm_enter(&self, swarm: &str, peer: &str, seed: bool, max: usize) -> Result<()> {
        let seed = u8::from(seed);
        let v = self
            .run(&SWARM_ENTER, &[&swarm, &peer, &seed, &max, &KEY_TTL_MS])
            .await?;
        int(&v).map(drop).ok_or_else(|| garbage("swarm enter", &v))
    }

    async fn swarm_exit(&self, swarm: &str, peer: &str) -> Result<()> {
        let v = self.run(&SWARM_EXIT, &[&swarm, &peer]).await?;
        int(&v).map(drop).ok_or_else(|| garbage("swarm exit", &v))
    }

    async fn swarm_pick(
        &self,
        swarm: &str,
        peer: &str,
        count: usize,
    ) -> Result<Vec<(String, bool)>> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let v = self.run(&SWARM_PICK, &[&swarm, &peer, &count]).await?;
        let parse = || {
            let a = array(&v)?;
            (a.len() % 2 == 0 && a.len() / 2 <= count).then_some(())?;
            a.chunks(2)
                .map(|p| Some((text(&p[0])?, int(&p[1])? == 1)))
                .collect::<Option<Vec<_>>>()
        };
        parse().ok_or_else(|| garbage("swarm pick", &v))
    }
}
