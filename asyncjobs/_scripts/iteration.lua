-- iteration: save an iterable job's state and renew its TTL, in one command (#14).
-- KEYS[1] the state hash ({ns}:iter:<jid>)
-- ARGV[1] TTL in milliseconds, then field, value pairs (cursor, items, runs,
-- started_at, saved_at).
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
