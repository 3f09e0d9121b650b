-- Publish one event with history, atomically (mt-stream, docs/history.md).
--   KEYS[1]  the channel's stream key and pub/sub channel: <prefix><channel>, e.g. mt:builds
--   ARGV[1]  the payload
--   ARGV[2]  events kept per channel (MT_HISTORY_MAX_EVENTS)
--   ARGV[3]  age limit in milliseconds (MT_HISTORY_MAX_AGE_SECONDS * 1000)
-- Returns the event id. Live subscribers receive "\30<id>\30<payload>". Needs Redis >= 7.0.
local new = redis.call('EXISTS', KEYS[1]) == 0
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'd', ARGV[1])
if new then
  -- A new stream knows nothing of what came before its first event (an expired stream's
  -- events, say): mark them deleted, so a resume from an older id reports truncation.
  redis.call('XSETID', KEYS[1], id, 'MAXDELETEDID', id)
end
local ms = tonumber(string.match(id, '^(%d+)'))
local cutoff = ms - tonumber(ARGV[3])
if cutoff > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', cutoff)
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', KEYS[1], '\30' .. id .. '\30' .. ARGV[1])
return id
