-- Token bucket, refilled continuously, shared by every registry instance.
-- KEYS[1]  bucket hash {tokens, ts}
-- ARGV[1]  capacity (limit)
-- ARGV[2]  period in ms over which an empty bucket refills completely
-- ARGV[3]  tokens wanted (a lease; 0 only checks)
-- ARGV[4]  threshold: below it grant at most 1, so tokens leased near exhaustion are not stranded in
--          one instance's pool while the client's next requests land on another instance
-- Returns  {granted, tokens left (string: Redis truncates Lua numbers to integers), ms until next token}
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local threshold = tonumber(ARGV[4])

-- Server time, so instances with skewed clocks still agree on the refill.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000

local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = limit
  ts = now
end
-- A failover to a replica whose clock is behind must not drain the bucket: time only moves forward.
if now > ts then
  tokens = math.min(limit, tokens + (now - ts) * limit / period)
  ts = now
end

-- The epsilon absorbs float error in the refill, so exactly one period per token yields that token.
local whole = math.floor(tokens + 1e-9)
local granted = 0
if whole >= 1 then
  if tokens < threshold then
    granted = math.min(want, 1)
  else
    granted = math.min(want, whole)
  end
  tokens = math.max(0, tokens - granted)
end

-- %.17g keeps the ms timestamp and the fractional tokens exact; tostring would round to 14 digits.
redis.call('HSET', key, 'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
-- An untouched bucket is full again within one period, and a missing key reads as full.
redis.call('PEXPIRE', key, math.ceil(period))

local waitMs = 0
if tokens + 1e-9 < 1 then
  waitMs = math.ceil((1 - tokens) * period / limit)
end
return {granted, string.format('%.17g', tokens), waitMs}
