-- move: move entries of one sorted set to another (retry → dead, scheduled → dead).
-- KEYS[1] source zset, KEYS[2] target zset
-- ARGV[1] the score to add them with, then pairs: ARGV[2j] member in the source,
-- ARGV[2j+1] member to add in its place.
-- Returns one flag per pair: 1 if moved, 0 if the member was no longer in the source
-- (another process moved or deleted it first).
local moved = {}
for j = 2, #ARGV, 2 do
  if redis.call('ZREM', KEYS[1], ARGV[j]) == 1 then
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[j + 1])
    moved[#moved + 1] = 1
  else
    moved[#moved + 1] = 0
  end
end
return moved
