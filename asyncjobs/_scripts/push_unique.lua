-- push_unique: enqueue (or schedule) one unique job and take its lock, in one step.
-- KEYS[1] queues set, KEYS[2] queue list, KEYS[3] its wake list, KEYS[4] schedule zset,
-- KEYS[5] scheduler wake list, KEYS[6] the lock
-- ARGV[1] queue name, ARGV[2] jid, ARGV[3] lock TTL in ms, ARGV[4] on conflict
-- ('skip' | 'raise' | 'replace'), ARGV[5] due time ('' for now), ARGV[6] payload
-- The lock's value is "<jid> <payload>": the jid is the token that releases it
-- (unlock.lua), the payload what a later 'replace' removes from the queue or schedule.
-- Returns {1} enqueued; {0, holder} not enqueued, the lock is held by holder;
-- {2, holder, removed} enqueued in place of holder (removed: 1 if its job was dropped,
-- 0 if it had left the queue and schedule, started or promoted).
local cur = redis.call('GET', KEYS[6])
local result = {1}
if cur then
  local sp = string.find(cur, ' ', 1, true) or (#cur + 1)
  local holder = string.sub(cur, 1, sp - 1)
  if ARGV[4] ~= 'replace' then
    return {0, holder}
  end
  local old = string.sub(cur, sp + 1)
  local removed = redis.call('LREM', KEYS[2], 1, old)
  if removed == 0 then
    removed = redis.call('ZREM', KEYS[4], old)
  end
  result = {2, holder, removed}
end
redis.call('SET', KEYS[6], ARGV[2] .. ' ' .. ARGV[6], 'PX', ARGV[3])
if ARGV[5] == '' then
  if redis.call('LPUSH', KEYS[2], ARGV[6]) == 1 then
    redis.call('SADD', KEYS[1], ARGV[1])
    if redis.call('LLEN', KEYS[3]) == 0 then
      redis.call('LPUSH', KEYS[3], '1')
    end
  end
else
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[6])
  redis.call('SADD', KEYS[1], ARGV[1])
  if first[2] == nil or tonumber(ARGV[5]) < tonumber(first[2]) then
    if redis.call('LLEN', KEYS[5]) == 0 then
      redis.call('LPUSH', KEYS[5], '1')
    end
  end
end
return result
