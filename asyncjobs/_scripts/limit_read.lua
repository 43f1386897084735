-- limit_read: a rate limiter's state, read only, with Redis's time (api.limiter_state).
-- KEYS[1] the limiter's key; ARGV[1] 'zset' (concurrent, sliding window) or 'hash'.
-- Returns {now ms, flat list: members and scores, or fields and values}. A script, not
-- a pipeline with TIME: redis-py's cluster pipeline refuses keyless commands.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'zset' then
  return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')}
end
return {now, redis.call('HGETALL', KEYS[1])}
