-- drain: delete up to ARGV[2] entries of a temporary key made by clear.lua. Returns how
-- many entries are left, then the deleted payloads that contain '"unique":[' (a cheap
-- prefilter for the payloads that carry a unique lock: the client decodes those and
-- releases their locks), so a queue of plain jobs sends back one number per chunk.
-- KEYS[1] the temporary key; ARGV[1] 'list' | 'zset', ARGV[2] the chunk size.
local count = tonumber(ARGV[2])
local chunk, left
if ARGV[1] == 'list' then
  chunk = redis.call('RPOP', KEYS[1], count) -- false once the list is gone
  left = redis.call('LLEN', KEYS[1])
else
  chunk = redis.call('ZRANGE', KEYS[1], 0, count - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, count - 1)
  left = redis.call('ZCARD', KEYS[1])
end
local out = {left}
if chunk then
  for i = 1, #chunk do
    if string.find(chunk[i], '"unique":[', 1, true) then
      out[#out + 1] = chunk[i]
    end
  end
end
return out
