-- clear: the first step of clearing a queue or a sorted set (api.clear_queue, a
-- scheduled or retry set's clear): its entries are moved out of the way in one step, by
-- a RENAME to a temporary key of the same slot, which drain.lua then empties in chunks
-- (releasing the unique locks of the jobs it finds). So a job pushed after this call is
-- not deleted, and a job a worker already took is not touched. The temporary key
-- expires: a clear cut short leaves nothing forever.
-- KEYS[1] the queue list or sorted set, KEYS[2] the temporary key; a queue's also
-- KEYS[3] its wake list, KEYS[4] the queues set.
-- ARGV[1] 'list' | 'zset', ARGV[2] the temporary key's TTL (seconds), ARGV[3] the
-- queue's name (a list).
-- Returns how many entries were moved (0: nothing to drain, no temporary key).
local n
if ARGV[1] == 'list' then
  n = redis.call('LLEN', KEYS[1])
else
  n = redis.call('ZCARD', KEYS[1])
end
if n > 0 then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
if ARGV[1] == 'list' then
  redis.call('DEL', KEYS[3])
  redis.call('SREM', KEYS[4], ARGV[3])
end
return n
