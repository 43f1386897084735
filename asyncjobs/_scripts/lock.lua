-- lock: take a while-executing lock for a job about to run (Unique(until="executing")).
-- KEYS[1] the lock; ARGV[1] jid, ARGV[2] TTL in ms. Returns 1 if this job holds it now
-- (taken, or already its own: a retry of a run whose release was lost), else 0.
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) ~= ARGV[1] .. ' ' then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ', 'PX', ARGV[2])
return 1
