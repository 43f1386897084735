-- limit_concurrent: a distributed semaphore whose slots are leases.
-- KEYS[1] the limiter's sorted set (token -> lease end, ms of Redis's clock).
-- ARGV[1] 'acquire' | 'renew' | 'release', ARGV[2] token, ARGV[3] limit, ARGV[4] lease ms.
-- Expired leases (a holder that died and stopped renewing) are dropped first, so a
-- killed holder's slot frees itself. Returns {1, 0, now} when the token holds a slot,
-- {0, ms until the first lease ends, now} when all are taken; release returns 1 if the
-- token held one.
if ARGV[1] == 'release' then
  return redis.call('ZREM', KEYS[1], ARGV[2])
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZSCORE', KEYS[1], ARGV[2])
if ARGV[1] == 'renew' and not held then
  return {0, 0, now}
end
if held or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], lease)
  return {1, 0, now}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(first[2]) - now, now}
