-- result: a tracked job's outcome, and the signal its waiters block on.
-- KEYS[1] result, KEYS[2] ready list, KEYS[3] status, KEYS[4] progress;
-- ARGV[1] the encoded outcome, ARGV[2] TTL in milliseconds.
-- The ready list holds one element: a waiter takes it with BLMOVE onto the same list
-- (a rotation, so it stays for the next waiter), and it expires with the result.
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('RPUSH', KEYS[2], '1')
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[4], ARGV[2])
-- >>> after (#14): KEYS[5] the set of gates (batches of configure(after=...)) waiting
-- for this job, ARGV[3] key prefix "{ns}:", ARGV[4] batch TTL. The set is deleted as
-- it is read, so each gate learns of this job once: a success counts, any other end
-- (dead, failed, cancelled) is a failure, and a dead one a death.
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then
  local BP, BTTL = ARGV[3], tonumber(ARGV[4])
  --#include batch_lib
  local gates = redis.call('SMEMBERS', KEYS[5])
  redis.call('DEL', KEYS[5])
  local state = string.match(ARGV[1], '"state":"(%a+)"')
  local jid = string.match(KEYS[1], ':result:(.+)$')
  for _, gate in ipairs(gates) do
    local key = bkey(gate)
    if redis.call('EXISTS', key) == 1 then
      if state == 'succeeded' then
        redis.call('HINCRBY', key, 'pending', -1)
      else
        redis.call('SADD', key .. ':failed', jid)
        if state == 'dead' then
          bdeath(gate)
        end
      end
      btouch(key)
      bcheck(gate)
    end
  end
end
-- <<< after
return 1
