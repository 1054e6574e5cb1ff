"""The Lua scripts of the Redis session store.

``PIN_SCRIPT`` is ``core.pin.apply`` spelled in Lua, over the single key of
one session (so it is valid on Redis Cluster and behind Sentinel); the same
table of cases runs against both (``tests/test_pin_rule.py``). Redis's own
clock dates new pins and sets the version floor, so edges with skewed clocks
still agree on a session's age and on which of two writes is newer.

KEYS[1]: the session key. ARGV: [1] op (claim, repin, restore, forget),
[2] cluster, [3] cluster to replace ("" for none), [4] TTL in ms, [5] hard cap
on a session's age in ms (0: none), [6] the announcement channel, [7] the
announcement's prefix ("<origin> <session id>"), [8] and [9] the pinned-at
time and version of a pin to restore, [10] for a claim or repin made without
Redis, the version the edge knew then (0: none). Returns the value the key holds after
the call (false: none) and 1 if this call wrote it; a claim or repin that
wrote nothing renews the TTL of the live pin it answers. A write is announced on the
channel as "<origin> <session id> <value>".
"""

from __future__ import annotations

PIN_SCRIPT = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_v = tonumber(t[1]) * 1000000 + tonumber(t[2])
local op = ARGV[1]
local max_age = tonumber(ARGV[5])
local cur = redis.call('GET', KEYS[1])
local cluster, at, v = nil, nil, nil
if cur then
  local a, b, c = string.match(cur, '^([^|]+)|(%d+)|(%d+)$')
  if not a then
    a, b = string.match(cur, '^([^|]+)|(%d+)$')
    c = '0'
  end
  if a then
    cluster, at, v = a, tonumber(b), tonumber(c)
  end
end
local version = now_v
if v ~= nil and v + 1 > version then
  version = v + 1
end
local function write(value)
  redis.call('SET', KEYS[1], value, 'PX', ARGV[4])
  redis.call('PUBLISH', ARGV[6], ARGV[7] .. ' ' .. value)
  return {value, 1}
end
local function keep()
  return {cur or false, 0}
end
local function pin(c, since, ver)
  return c .. '|' .. string.format('%d', since) .. '|' .. string.format('%d', ver)
end
if op == 'forget' then
  return write(pin('!', now_ms, version))
end
if op == 'restore' then
  local r_at, r_v = tonumber(ARGV[8]), tonumber(ARGV[9])
  if max_age > 0 and now_ms - r_at > max_age then
    return keep()
  end
  if v ~= nil and v >= r_v then
    return keep()
  end
  return write(pin(ARGV[2], r_at, r_v))
end
local since = tonumber(ARGV[10])
if cluster == '!' and since > 0 and v > since then
  return keep()
end
local live = cluster ~= nil and cluster ~= '!' and not (max_age > 0 and now_ms - at > max_age)
if live then
  if op == 'claim' or cluster ~= ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    return keep()
  end
  return write(pin(ARGV[2], at, version))
end
return write(pin(ARGV[2], now_ms, version))
"""

# KEYS[1]: the epoch marker; ARGV[1]: a new epoch. The marker's value, set to the new
# epoch first if it is missing: an edge that sees the epoch change knows that Redis
# lost what edges wrote since it last looked (restarted empty, flushed).
EPOCH_SCRIPT = """
local v = redis.call('GET', KEYS[1])
if v then
  return v
end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""

# KEYS: session keys; ARGV[1]: TTL in ms. Every key's value (false: none), its TTL
# renewed: the near cache's background refresh of many sessions as one command.
# Only where the keys may live on one node (not on Redis Cluster).
READ_MANY_SCRIPT = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('GETEX', key, 'PX', ARGV[1])
end
return out
"""
