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
return 1
