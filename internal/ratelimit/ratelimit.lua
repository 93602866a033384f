-- One call of the Redis counter (see redis.go). Redis runs a script
-- atomically, so checking every limit and adding every amount is one step
-- for all gateways sharing the counters.
--
-- KEYS: the counters of the call.
-- ARGV[1]: mode: 'r' reserve, 'p' peek, 'a' adjust (one key).
-- ARGV[2]: the caller's now, in whole Unix seconds.
-- 'r', 'p': then per key five values: kind ('s' sliding, 'c' calendar),
--   window seconds, max, amount, ttl (calendar: seconds to keep the key).
--   Returns {refused (1-based, 0 when allowed), then per key used and newest,
--   then free}: usage after this call, the newest second holding usage
--   (sliding), and for a refused sliding limit the earliest second whose
--   expiry frees enough.
-- 'a': then kind, window seconds, stamp, delta, ttl. Returns 0.
--
-- A sliding counter is a hash: one field per second holding usage (the Unix
-- second in decimal), plus 's' the sum of those fields, 'o' the oldest second
-- not yet evicted (fields below it are gone) and 'n' the newest second
-- written. Each call (a peek too) evicts the seconds that left its window,
-- so the sum is read in O(1) and eviction costs one step per elapsed second
-- or per field, whichever is fewer. A caller whose clock runs behind the
-- eviction mark still counts every field left (erring towards refusing) and
-- writes at the mark, where a later eviction finds it. The key expires on
-- its own once its newest second has left every window (the TTL is relative,
-- so Redis's clock does not matter).
-- A calendar counter is a plain integer under a key naming its period.
--
-- Numbers are Lua doubles: counts are exact up to 2^53.

local mode = ARGV[1]
local sec = tonumber(ARGV[2])

local function f(t)
  return string.format('%d', t)
end

-- window evicts from key the seconds before sec-w and returns the usage
-- left, the eviction mark and the newest second.
local function window(key, w)
  local lo = sec - w
  local h = redis.call('HMGET', key, 's', 'o', 'n')
  if not h[1] then
    return 0, lo, 0
  end
  local s, o, n = tonumber(h[1]), tonumber(h[2]), tonumber(h[3])
  if n < lo then
    redis.call('DEL', key)
    return 0, lo, 0
  end
  if o < lo then
    -- Visit the elapsed seconds one by one, or all the fields when they are
    -- fewer (a long window with sparse traffic after a pause).
    if lo - o <= 64 or lo - o <= redis.call('HLEN', key) then
      for t = o, lo - 1 do
        local v = redis.call('HGET', key, f(t))
        if v then
          s = s - tonumber(v)
          redis.call('HDEL', key, f(t))
        end
      end
    else
      local all = redis.call('HGETALL', key)
      s = 0
      for i = 1, #all, 2 do
        local t = tonumber(all[i])
        if t then
          if t < lo then
            redis.call('HDEL', key, all[i])
          else
            s = s + tonumber(all[i + 1])
          end
        end
      end
    end
    o = lo
    redis.call('HSET', key, 's', f(s), 'o', f(o))
  end
  return s, o, n
end

-- slideAdd counts amt at second t (never below the eviction mark o, where
-- eviction would miss it) and keeps the key until t has left every window.
local function slideAdd(key, w, o, n, t, amt)
  if t < o then
    t = o
  end
  redis.call('HINCRBY', key, f(t), amt)
  redis.call('HINCRBY', key, 's', amt)
  redis.call('HSETNX', key, 'o', f(sec - w))
  if t > n then
    n = t
    redis.call('HSET', key, 'n', f(n))
  end
  redis.call('EXPIRE', key, n + w + 2 - sec)
  return n
end

if mode == 'a' then
  local key = KEYS[1]
  local kind, w, stamp, delta, ttl =
    ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
  if kind == 'c' then
    -- The caller picked the period's key and dropped stale refunds.
    if delta > 0 then
      redis.call('INCRBY', key, ARGV[6])
      redis.call('EXPIRE', key, ttl)
    else
      local v = tonumber(redis.call('GET', key) or '0')
      if v > 0 then
        redis.call('DECRBY', key, f(math.min(v, -delta)))
      end
    end
    return 0
  end
  local s, o, n = window(key, w)
  local t = sec
  if stamp >= o and stamp >= sec - w then
    t = stamp
  elseif delta < 0 then
    return 0
  end
  if delta > 0 then
    slideAdd(key, w, o, n, t, ARGV[6])
  else
    local v = tonumber(redis.call('HGET', key, f(t)) or '0')
    if v > 0 then
      local take = math.min(v, -delta)
      redis.call('HINCRBY', key, f(t), f(-take))
      redis.call('HINCRBY', key, 's', f(-take))
    end
  end
  return 0
end

local nk = #KEYS
local used, olds, news = {}, {}, {}
local refused = 0
for i = 1, nk do
  local b = 3 + (i - 1) * 5
  local max, amt = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if ARGV[b] == 's' then
    used[i], olds[i], news[i] = window(KEYS[i], tonumber(ARGV[b + 1]))
  else
    used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
    olds[i], news[i] = 0, 0
  end
  -- Room: usage+amount <= max, and usage < max even for amount 0.
  if refused == 0 and used[i] > max - math.max(amt, 1) then
    refused = i
  end
end

if mode == 'r' and refused == 0 then
  for i = 1, nk do
    local b = 3 + (i - 1) * 5
    local amt = tonumber(ARGV[b + 3])
    if amt > 0 then
      if ARGV[b] == 's' then
        news[i] = slideAdd(KEYS[i], tonumber(ARGV[b + 1]), olds[i], news[i], sec, ARGV[b + 3])
      else
        redis.call('INCRBY', KEYS[i], ARGV[b + 3])
        redis.call('EXPIRE', KEYS[i], ARGV[b + 4])
      end
      used[i] = used[i] + amt
    end
  end
end

-- For a refused sliding limit: the earliest second whose expiry frees
-- enough, walking the buckets from the oldest (by second, or sorted from all
-- the fields when they are fewer than the seconds).
local free = 0
if refused > 0 and ARGV[3 + (refused - 1) * 5] == 's' then
  local b = 3 + (refused - 1) * 5
  local key, max, amt = KEYS[refused], tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local excess = used[refused] - (max - math.max(amt, 1))
  local o, n = olds[refused], news[refused]
  free = n
  local secs = {}
  if n - o <= 64 or n - o <= redis.call('HLEN', key) then
    for t = o, n do
      secs[#secs + 1] = t
    end
  else
    local all = redis.call('HKEYS', key)
    for i = 1, #all do
      local t = tonumber(all[i])
      if t then
        secs[#secs + 1] = t
      end
    end
    table.sort(secs)
  end
  local cum = 0
  for i = 1, #secs do
    local v = redis.call('HGET', key, f(secs[i]))
    if v then
      cum = cum + tonumber(v)
      if cum >= excess then
        free = secs[i]
        break
      end
    end
  end
end

local out = {refused}
for i = 1, nk do
  out[#out + 1] = used[i]
  out[#out + 1] = news[i]
end
out[#out + 1] = free
return out
