-- GCRA in one round trip: takes `cost` tokens from the bucket of KEYS[1], if they are there.
-- ARGV: the emission interval in microseconds (one token's worth of time, may be fractional),
-- the burst, the cost, and 1 to charge the cost even when it does not fit (what a gateway
-- counting approximately, `sync_ms`, already let through), the bucket then left empty.
-- The bucket is the key's theoretical arrival time (TAT), in microseconds of Redis's own
-- clock, so every gateway shares one clock; it expires once the bucket is full again.
-- Returns {allowed (1 or 0), remaining, reset_after_ms, retry_after_ms}.
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local force = ARGV[4] == '1'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tau = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then
  tat = now
end
-- Tokens in the bucket now; the small epsilon keeps float rounding from losing one.
local function tokens(at)
  return math.floor((tau - (at - now)) / interval + 1e-6)
end
if cost == 0 then
  return {1, tokens(tat), math.ceil((tat - now) / 1000), 0}
end
local function store(at)
  redis.call('SET', KEYS[1], string.format('%.3f', at), 'PX', math.max(1, math.ceil((at - now) / 1000)))
end
if force and tat + interval * cost - tau > now then
  local at = math.min(tat + interval * cost, now + tau)
  store(at)
  return {0, tokens(at), math.ceil((at - now) / 1000), 0}
end
if cost > burst then
  -- More than the whole burst at once can never pass.
  return {0, tokens(tat), math.ceil((tat - now) / 1000), math.ceil(tau / 1000)}
end
local new_tat = tat + interval * cost
local allow_at = new_tat - tau
if now < allow_at then
  return {0, tokens(tat), math.ceil((tat - now) / 1000), math.max(1, math.ceil((allow_at - now) / 1000))}
end
store(new_tat)
return {1, tokens(new_tat), math.ceil((new_tat - now) / 1000), 0}
