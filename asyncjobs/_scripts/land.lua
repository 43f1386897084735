-- land: record jobs that an idle fetcher took with BLMOVE (queue -> landing list) in
-- the in-flight hash, where acks, shutdown and the reaper look for them.
-- KEYS[1] the process's landing list, KEYS[2] its in-flight hash
-- ARGV: pairs of field, payload to move; none: move everything in the landing list.
-- Either way each job is in the landing list or the hash at every instant (invariant 1).
local n = 0
if #ARGV == 0 then
  local all = redis.call('LRANGE', KEYS[1], 0, -1)
  for _, p in ipairs(all) do
    redis.call('HSET', KEYS[2], string.match(p, '^{"jid":"([^"]+)"') or p, p)
    n = n + 1
  end
  redis.call('DEL', KEYS[1])
  return n
end
for i = 1, #ARGV, 2 do
  if redis.call('LREM', KEYS[1], 1, ARGV[i + 1]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    n = n + 1
  end
end
return n
