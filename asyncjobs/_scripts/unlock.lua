-- unlock: release a unique job's lock, only if this job holds it (its jid is the token:
-- a lock taken over by a later job, after a TTL ran out or a replace, stays).
-- KEYS[1] the lock; ARGV[1] jid. Returns 1 if released.
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  return redis.call('DEL', KEYS[1])
end
return 0
