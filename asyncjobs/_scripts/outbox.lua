-- outbox: move rows of a transactional outbox into Redis, each row once.
-- KEYS[1] queues set, KEYS[2] schedule zset, KEYS[3] scheduler wake list; then three
-- keys per row: KEYS[3i+1] the row's mark, KEYS[3i+2] its queue list, KEYS[3i+3] that
-- queue's wake list (i = 1..n).
-- ARGV[1] the marks' TTL (seconds); then three per row: queue name, due time ('' for
-- now), payload.
-- A row whose mark exists was moved by an earlier call (a relay killed before its
-- delete committed): it is skipped. Otherwise the mark is set (SET NX, with the TTL)
-- and the payload pushed as push.lua does, or scheduled as schedule.lua does, in the
-- same atomic step. Returns how many rows were moved.
local ttl = ARGV[1]
local moved = 0
local earliest = false
local soonest = nil
for i = 1, (#KEYS - 3) / 3 do
  local k = 3 * i + 1
  local a = 3 * i - 1
  if redis.call('SET', KEYS[k], '1', 'NX', 'EX', ttl) then
    local queue, at, payload = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    if at == '' then
      if redis.call('LPUSH', KEYS[k + 1], payload) == 1 then
        redis.call('SADD', KEYS[1], queue)
        if redis.call('LLEN', KEYS[k + 2]) == 0 then
          redis.call('LPUSH', KEYS[k + 2], '1')
        end
      end
    else
      if earliest == false then
        local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
        earliest = first[2] and tonumber(first[2]) or nil
      end
      redis.call('ZADD', KEYS[2], at, payload)
      redis.call('SADD', KEYS[1], queue)
      local s = tonumber(at)
      if soonest == nil or s < soonest then soonest = s end
    end
    moved = moved + 1
  end
end
if soonest ~= nil and (earliest == nil or soonest < earliest) then
  if redis.call('LLEN', KEYS[3]) == 0 then
    redis.call('LPUSH', KEYS[3], '1')
  end
end
return moved
