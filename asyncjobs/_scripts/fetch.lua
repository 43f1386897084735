-- fetch: move up to N jobs from a capsule's queues into this process's in-flight hash.
-- KEYS[1] in-flight hash, KEYS[2..q+1] queue lists, KEYS[q+2..2q+1] their wake lists
-- ARGV[i] (i = 1..q) how many slots drew queue i first; short queues are made up from
--         the queues in KEYS order (the caller shuffles KEYS by weight, or keeps strict).
-- Returns field, payload, field, payload, ... of the jobs taken (the field is the jid,
-- or the whole payload when it has no jid prefix: garbage pushed by hand). The move is one atomic step: a job is in a queue or in
-- the in-flight hash, never only in a Python process (invariant 1).
local q = #ARGV
local out = {}
local fields = {}
local short = 0
local took = {}
for i = 1, q do
  local c = tonumber(ARGV[i])
  took[i] = 0
  if c > 0 then
    local got = redis.call('RPOP', KEYS[i + 1], c)
    if got then
      for _, p in ipairs(got) do out[#out + 1] = p end
      took[i] = #got
      short = short + c - #got
    else
      short = short + c
    end
  end
end
if short > 0 then
  for i = 1, q do
    local got = redis.call('RPOP', KEYS[i + 1], short)
    if got then
      for _, p in ipairs(got) do out[#out + 1] = p end
      took[i] = took[i] + #got
      short = short - #got
      if short == 0 then break end
    end
  end
end
if #out > 0 then
  for _, p in ipairs(out) do
    fields[#fields + 1] = string.match(p, '^{"jid":"([^"]+)"') or p
    fields[#fields + 1] = p
  end
  for i = 1, #fields, 1000 do
    redis.call('HSET', KEYS[1], unpack(fields, i, math.min(i + 999, #fields)))
  end
end
-- Pass a hint on for queues that may still hold jobs, so other idle fetchers wake.
for i = 1, q do
  if took[i] > 0 and redis.call('LLEN', KEYS[i + 1]) > 0 then
    if redis.call('LLEN', KEYS[q + i + 1]) == 0 then
      redis.call('LPUSH', KEYS[q + i + 1], '1')
    end
  end
end
return fields
