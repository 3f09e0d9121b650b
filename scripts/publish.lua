-- Publish one event with history, atomically (mt-stream, docs/history.md).
--   KEYS[1]  the channel's stream key and pub/sub channel: <prefix><channel>, e.g. mt:builds
--   ARGV[1]  the payload
--   ARGV[2]  events kept per channel (MT_HISTORY_MAX_EVENTS)
--   ARGV[3]  age limit in milliseconds (MT_HISTORY_MAX_AGE_SECONDS * 1000)
--   ARGV[4]  optional: "spublish" on a Redis Cluster (sharded pub/sub: the event goes out on the
--            shard owning KEYS[1]'s slot only), else omitted or "publish"
-- Returns the event id. Live subscribers receive "\30<id>\30<payload>". Needs Redis >= 7.0.
--
-- The newest trimmed id is recorded as the stream's max-deleted-entry-id (trimming alone does
-- not set it), so a resume from an older id knows events are missing. A new stream knows
-- nothing of what came before its first event (an expired stream's, say): the same applies.
local key, max_events, max_age = KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function ms(entry_id) return tonumber(string.match(entry_id, '^(%d+)')) end
local length = redis.call('XLEN', key)
local id = redis.call('XADD', key, '*', 'd', ARGV[1])
local deleted = nil
if length == 0 then deleted = id end
length = length + 1
-- The entries the count limit removes, and the first one it keeps (for the age check).
local over = math.max(length - max_events, 0)
local head = redis.call('XRANGE', key, '-', '+', 'COUNT', over + 1)
if over > 0 then
  deleted = head[over][1]
  redis.call('XTRIM', key, 'MAXLEN', max_events)
end
local cutoff = ms(id) - max_age
local oldest = head[over + 1]
if oldest and ms(oldest[1]) < cutoff then
  -- Only when something is that old: a range ending before the cutoff is cheap forwards, while
  -- XREVRANGE from there would walk the whole stream.
  local old = redis.call('XRANGE', key, '-', '(' .. cutoff .. '-0')
  deleted = old[#old][1]
  redis.call('XTRIM', key, 'MINID', cutoff)
end
if deleted then
  redis.call('XSETID', key, id, 'MAXDELETEDID', deleted)
end
redis.call('PEXPIRE', key, max_age)
local command = 'PUBLISH'
if ARGV[4] == 'spublish' then command = 'SPUBLISH' end
redis.call(command, key, '\30' .. id .. '\30' .. ARGV[1])
return id
