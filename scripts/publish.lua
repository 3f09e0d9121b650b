-- Publish one event with history, atomically (mt-stream, docs/history.md).
--   KEYS[1]  the channel's stream key and pub/sub channel: <prefix><channel>, e.g. mt:builds
--   ARGV[1]  the payload
--   ARGV[2]  events kept per channel (MT_HISTORY_MAX_EVENTS)
--   ARGV[3]  age limit in milliseconds (MT_HISTORY_MAX_AGE_SECONDS * 1000)
-- Returns the event id. Live subscribers receive "\30<id>\30<payload>". Needs Redis >= 7.0.
local key, max_events, max_age = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local new = redis.call('EXISTS', key) == 0
local id = redis.call('XADD', key, '*', 'd', ARGV[1])
-- The newest trimmed id is recorded as the stream's max-deleted-entry-id (trimming alone does
-- not set it), so a resume from an older id knows events are missing. A new stream knows
-- nothing of what came before its first event (an expired stream's, say): the same applies.
local deleted = new and id or nil
local length = redis.call('XLEN', key)
if length > max_events then
  local doomed = redis.call('XRANGE', key, '-', '+', 'COUNT', length - max_events)
  deleted = doomed[#doomed][1]
  redis.call('XTRIM', key, 'MAXLEN', max_events)
end
local cutoff = tonumber(string.match(id, '^(%d+)')) - max_age
if cutoff > 0 then
  local old = redis.call('XREVRANGE', key, '(' .. cutoff .. '-0', '-', 'COUNT', 1)
  if old[1] then
    -- Still in the stream after the count trim, so newer than anything it removed.
    deleted = old[1][1]
    redis.call('XTRIM', key, 'MINID', cutoff)
  end
end
if deleted then
  redis.call('XSETID', key, id, 'MAXDELETEDID', deleted)
end
redis.call('PEXPIRE', key, max_age)
redis.call('PUBLISH', key, '\30' .. id .. '\30' .. ARGV[1])
return id
