-- One page of a channel's history after an id (mt-stream). KEYS[1]: stream key;
-- ARGV[1]: the id to read after (exclusive); ARGV[2]: page size.
-- Returns nil when the stream does not exist, else {last-generated-id, max-deleted-entry-id,
-- entries}; the three come from one atomic view of the stream.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return nil
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
return {last, deleted, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])}
