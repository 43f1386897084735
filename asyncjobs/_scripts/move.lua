-- move: move one entry between sorted sets (retry → dead, scheduled → dead, ...).
-- KEYS[1] source zset, KEYS[2] target zset
-- ARGV[1] member in the source, ARGV[2] member to add, ARGV[3] its score
-- Returns 1 if moved, 0 if the member was no longer in the source.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
  return 1
end
return 0
