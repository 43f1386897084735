-- pickup: land the job an idle fetcher took with BLMOVE, and fetch more from its queue,
-- in one exchange. A trickling queue is then one round trip cheaper per job: the reply
-- says the queue is empty, and the fetcher blocks in BLMOVE again at once instead of
-- sending a fetch that finds nothing.
-- KEYS[1] the process's landing list, KEYS[2] its in-flight hash, KEYS[3] the queue,
-- KEYS[4] the queue's wake list
-- ARGV[1] field, ARGV[2] payload of the job to land, ARGV[3] how many more to take
-- Returns {landed (0 or 1), field, payload, field, payload, ...} of the jobs taken. As in
-- land.lua and fetch.lua each job is in exactly one of the queue, the landing list and
-- the in-flight hash at every instant (invariant 1).
local out = {0}
if redis.call('LREM', KEYS[1], 1, ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  out[1] = 1
end
local n = tonumber(ARGV[3])
if n > 0 then
  local got = redis.call('RPOP', KEYS[3], n)
  if got then
    local fields = {}
    for _, p in ipairs(got) do
      local f = string.match(p, '^{"jid":"([^"]+)"') or p
      fields[#fields + 1] = f
      fields[#fields + 1] = p
      out[#out + 1] = f
      out[#out + 1] = p
    end
    for i = 1, #fields, 1000 do
      redis.call('HSET', KEYS[2], unpack(fields, i, math.min(i + 999, #fields)))
    end
    -- Pass a hint on if jobs are left, so other idle fetchers wake (as fetch.lua does).
    if redis.call('LLEN', KEYS[3]) > 0 and redis.call('LLEN', KEYS[4]) == 0 then
      redis.call('LPUSH', KEYS[4], '1')
    end
  end
end
return out
