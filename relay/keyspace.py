"""Every Redis key the relay uses, and its Lua scripts: the one place they are named.

Per-device keys carry the device id as a Redis Cluster hash tag (``dev:{front-door}:…``)
so one message's writes stay in one slot; the audit log's keys share the ``{audit}``
tag so its append transaction does too.  Nothing outside this module spells a key, or a
hash field made of ids.
"""

from __future__ import annotations

# ---------------------------------------------------------------- the index

DEVICES = "devices"
"""Set of registered device ids."""
GEO = "devices:geo"
"""GEO set: where each doorbell is, for request matching."""
DEAD_LETTERS = "deadletter"
"""Stream of messages that could not be indexed, with the reason."""
STATS = "stats"
"""Hash of relay-wide counters (dead letters by reason)."""
WORKERS = "workers"
"""Hash: ingestion worker name → its last heartbeat and counters (JSON)."""


def dkey(device: str, what: str) -> str:
    """A per-device key; ``{device}`` is the Redis Cluster hash tag.

    ``what`` is one of: ``info`` (hash), ``stats`` (hash), ``clips`` (zset by start),
    ``clip:<id>`` (JSON), ``events`` (zset), ``released`` (hash), ``seen:<message id>``.
    """
    return f"dev:{{{device}}}:{what}"


def live_channel(device: str) -> str:
    """Pub/sub channel on which indexing publishes a device's events (rings, motion) and
    ring snapshots, once each (the owners' web app streams it to the owner's open page)."""
    return f"live:{{{device}}}"


SNAPSHOT_TTL_S = 7 * 86400
"""How long the relay keeps a ring's sealed snapshot (``dkey(device, "snap:<ring id>")``)."""


# ---------------------------------------------------------------- web sessions


def web_session(session_hash: str) -> str:
    """An owner's web-app session, by the SHA-256 of its cookie (JSON: owner, csrf)."""
    return f"websession:{session_hash}"


def web_push_subs(owner: str) -> str:
    """Hash: SHA-256 of a push endpoint → the owner's browser's subscription (JSON)."""
    return f"webpush:subs:{owner}"


def web_push_sent(ring_id: str) -> str:
    """Claimed (SET NX, 1 h) by the API process that pushes this ring, so it goes once."""
    return f"webpush:sent:{ring_id}"


def device_info(device: str) -> str:
    """Hash: owner, place, online state, last seen, firmware, warnings."""
    return dkey(device, "info")


def device_stats(device: str) -> str:
    """Hash of the device's counters (indexed, duplicates, ...)."""
    return dkey(device, "stats")


def device_clips(device: str) -> str:
    """Zset of the device's clip ids by start time."""
    return dkey(device, "clips")


def device_clip(device: str, clip_id: str) -> str:
    """One clip's metadata (JSON)."""
    return dkey(device, f"clip:{clip_id}")


def device_events(device: str) -> str:
    """Zset of the device's events by time."""
    return dkey(device, "events")


def device_released(device: str) -> str:
    """Hash: :func:`released_field` → what the doorbell released (JSON)."""
    return dkey(device, "released")


def released_field(request_id: str, clip_id: str) -> str:
    return f"{request_id}:{clip_id}"


def released_clip_match(clip_id: str) -> str:
    """The HSCAN pattern of every field of :func:`released_field` for one clip."""
    return f"*:{clip_id}"


def released_request(field: str) -> str:
    """The request id in a :func:`released_field`."""
    return field.rsplit(":", 1)[0]


def released_match(request_id: str) -> str:
    """The HSCAN pattern of every field of :func:`released_field` for one request."""
    return f"{request_id}:*"


def seen(device: str, message_id: str) -> str:
    """Marks a message id as indexed (holds its content hash), for idempotence."""
    return dkey(device, f"seen:{message_id}")


def device_snapshot(device: str, ring_id: str) -> str:
    """A ring's snapshot, sealed to the owner (JSON, expires)."""
    return dkey(device, f"snap:{ring_id}")


def device_masks(device: str) -> str:
    """JSON ``{"at", "hash", "update"}``: the owner's signed mask set the doorbell last
    announced in force (``masks_applied``), served back to the owner's clients; written
    only by :data:`MASKS_KEEP_LUA`."""
    return dkey(device, "masks")


def device_unused(device: str) -> str:
    """A key the index script is given where a message kind needs none (same slot)."""
    return dkey(device, "_")


# ---------------------------------------------------------------- consent

OWNERS = "owners"
"""Hash: owner name → their public keys (JSON)."""
REQUESTERS = "requesters"
"""Hash: requester name → kind and public key (JSON)."""
TOKENS = "tokens"
"""Hash: SHA-256 of an API token → role and name (JSON); tokens are never stored."""
POLICY = "policy"
"""Hash of the published request bounds."""
REQUESTS = "requests"
"""Zset of request ids by creation time."""
ASKS_PENDING = "asks_pending"
"""Zset of pending ask ids by expiry time."""
FANOUT_PENDING = "fanout_pending"
"""Zset of accepted request ids whose owners are not asked yet, by acceptance time."""


def request(request_id: str) -> str:
    return f"request:{request_id}"


def request_asks(request_id: str) -> str:
    return f"request_asks:{request_id}"


def request_approved(request_id: str) -> str:
    """List of the ids of a request's approved asks: what its status reads, so that the
    status's work does not grow with the asks still pending (which would count homes)."""
    return f"request_approved:{request_id}"


def ask(ask_id: str) -> str:
    return f"ask:{ask_id}"


def owner_asks(owner: str) -> str:
    return f"owner_asks:{owner}"


def requests_today(org: str, day: str) -> str:
    """Requests a requester *organisation* made on ``day`` (all its accounts share it)."""
    return f"requests_today:{org}:{day}"


def credential(role: str, name: str) -> str:
    """Set of the token hashes that are valid for ``role`` ``name`` (for revoke/rotate)."""
    return f"credential:{role}:{name}"


# ---------------------------------------------------------------- bystanders' requests


def bystander_challenge(challenge: str) -> str:
    """An issued proof-of-work challenge (its difficulty; expires); GETDEL uses it once."""
    return f"bystander:challenge:{challenge}"


def bystander_rate(what: str, source: str, window: int) -> str:
    """How many ``what`` (``challenge`` or ``request``) one client address made in the
    rate window numbered ``window``; counted by :data:`LIMIT_LUA`."""
    return f"bystander:rate:{what}:{source}:{window}"


BYSTANDER_REMINDERS = "bystander:reminders"
"""Zset of pending bystander ask ids by the time their owner is to be reminded (on the
owner's live channel; the public log's reminder is per request, below)."""


def bystander_owner_day(owner: str, day: str) -> str:
    """How many bystanders' asks ``owner`` got on UTC ``day`` (YYYY-MM-DD); counted by
    :data:`LIMIT_LUA` against ``[bystander] asks_per_owner_per_day``."""
    return f"bystander:owner_day:{owner}:{day}"


BYSTANDER_REQUESTS_REMIND = "bystander:requests:remind"
"""Zset of accepted bystander request ids by the time their reminder goes on the record:
every request, asked a home or not, so that the log does not say which did."""
BYSTANDER_REQUESTS_DUE = "bystander:requests:due"
"""Zset of accepted bystander request ids by their deadline (the expiry on the record,
for every request alike)."""


def bystander_answers(request_id: str) -> str:
    """List of the ids of a bystander request's asks that were answered, in order: the
    status reads only these, so its work does not grow with the asks still pending."""
    return f"bystander:answers:{request_id}"


BYSTANDER_REFUSED = "bystander:refused"
"""Hash: why → how many bystander requests were refused before the policy check
(``rate_limited``, ``bad_work``, ``bad_challenge``); they reach no owner and no log.
``owner_capped``: asks not made because the owner had their day's bystanders' asks."""


LEGAL_DEMANDS = "legal_demands"
"""Hash: docket → a legal demand on file (JSON: authority, organisation, when)."""


# ---------------------------------------------------------------- commands to doorbells

COMMANDS_PENDING = "commands:pending"
"""Hash: command key (release:DEVICE:REQUEST, delete:DEVICE:CLIP, masks:DEVICE:-) → the
command, until answered."""
COMMANDS_LOG = "commands:log"
"""Stream: queued / answered / failed, per command key."""


# ---------------------------------------------------------------- blobs


def blob_token(token_hash: str) -> str:
    """A single-use download or upload link, by the SHA-256 of its token."""
    return f"blobtoken:{token_hash}"


# ---------------------------------------------------------------- audit log

AUDIT_ENTRIES = "{audit}:entries"
AUDIT_HEADS = "{audit}:heads"
AUDIT_STATE = "{audit}:state"
AUDIT_SEALED = "{audit}:sealed"
"""Hash: entry index → the opening of its sealed part (salt, actor, private fields).

The public entries carry only a salted SHA-256 commitment to it; only the operator holds
this, and ``relay audit verify`` checks every opening against its commitment."""
AUDIT_NODES = "{audit}:nodes"
"""Hash: ``level:i`` → the hash of perfect subtree ``i`` of height ``level`` (32 bytes), so a
proof reads O(log² n) nodes instead of every entry."""
AUDIT_LEAF_INDEX = "{audit}:leafidx"
"""Hash: leaf hash (32 bytes) → entry index, for inclusion proofs by leaf hash."""


def audit_once(key: str) -> str:
    """Marks an entry appended at most once for ``key`` (e.g. a message id); holds its index."""
    return f"{{audit}}:once:{key}"


# ---------------------------------------------------------------- scripts

SETTLE_IF_ANSWERED_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local answers = cjson.decode(raw)['answers']
if type(answers) ~= 'table' then return 0 end
for _, a in ipairs(answers) do
  if a == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return 0
"""
"""Drop a pending command only if ``ARGV[2]`` is one of the answers it waits for (a
newer mask update may have replaced the one a doorbell just answered).  KEYS: the
pending hash.  ARGV: command key, answer token.  Returns 1 if dropped."""

LIMIT_LUA = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return 0 end
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""Count one request if under the limit, atomically.  KEYS: the day's counter.
ARGV: limit, TTL seconds.  Returns 1 if counted, 0 if the limit is reached."""

PUSH_SUBSCRIBE_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
"""Add or renew one push subscription if the owner has room, atomically (two pages
subscribing at once cannot both take the last place).  KEYS: :func:`web_push_subs`.
ARGV: endpoint hash, subscription JSON, the most an owner may have.  Returns 1 if
stored, 0 if the owner has the most already."""

INDEX_LUA = """
if not redis.call('SET', KEYS[1], ARGV[8], 'NX', 'EX', ARGV[2]) then
  local before = redis.call('GET', KEYS[1])
  if before ~= ARGV[8] and before ~= '1' then
    redis.call('HINCRBY', KEYS[2], 'conflicts', 1)
    return 2
  end
  redis.call('HINCRBY', KEYS[2], 'duplicates', 1)
  return 0
end
local kind = ARGV[1]
local score = tonumber(ARGV[3])
if kind == 'clip' then
  redis.call('SET', KEYS[5], ARGV[4])
  redis.call('ZADD', KEYS[4], score, ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'clips_indexed', 1)
elseif kind == 'event' then
  redis.call('ZADD', KEYS[4], score, ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'events_indexed', 1)
  if ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[10], ARGV[4]) end
elseif kind == 'snapshot' then
  redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[6])
  redis.call('HINCRBY', KEYS[2], 'snapshots', 1)
  redis.call('PUBLISH', ARGV[10], ARGV[4])
elseif kind == 'status' then
  local prev = tonumber(redis.call('HGET', KEYS[3], 'status_ts') or '0')
  if score >= prev then
    redis.call('HSET', KEYS[3], 'status_ts', ARGV[3], 'online', ARGV[6], 'firmware', ARGV[7],
      'warning', ARGV[9] or '')
  end
  redis.call('HINCRBY', KEYS[2], 'status', 1)
elseif kind == 'deleted' then
  redis.call('DEL', KEYS[5])
  redis.call('ZREM', KEYS[4], ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'deleted', 1)
elseif kind == 'released' then
  redis.call('HSET', KEYS[4], ARGV[5], ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'released', 1)
end
local seen = tonumber(redis.call('HGET', KEYS[3], 'last_seen') or '0')
if score > seen then redis.call('HSET', KEYS[3], 'last_seen', ARGV[3]) end
return 1
"""
"""Index one message, idempotent on its id.  KEYS: seen, stats, info, target, item.
ARGV: kind, seen TTL, score, value, member, online flag (or snapshot TTL), firmware,
content hash, status warning (e.g. ``low_space``; empty for none), live channel (events
and snapshots are published there once, when first indexed).
Returns 1 (new), 0 (seen before, same content) or 2 (seen before, *different*
content: a conflict, changes nothing).  The seen-marker holds the content hash;
a marker of ``'1'`` (written before hashes were kept) counts as the same content."""


MASKS_KEEP_LUA = """
-- KEYS[1] device_masks; ARGV[1] the announcement's time, ARGV[2] its JSON.
-- Only a later announcement replaces the kept one: a redelivered older masks_applied
-- must not make the relay serve a set the doorbell no longer holds.
local cur = redis.call('GET', KEYS[1])
if cur then
  local at = tonumber(cjson.decode(cur)['at'])
  if at and at > tonumber(ARGV[1]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
