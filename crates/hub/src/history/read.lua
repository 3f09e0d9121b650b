-- One page of a channel's history after an id (mt-stream). KEYS[1]: stream key;
-- ARGV[1]: the id to read after (exclusive); ARGV[2]: most events; ARGV[3]: most payload bytes
-- (the first event is always returned, however large).
-- Returns nil when the key does not exist; {'unreadable', why} when it exists but is not a
-- stream or cannot be read (final: reading again gives the same answer); else
-- {last-generated-id, max-deleted-entry-id, entries}, the three from one atomic view.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind == 'none' then
  return nil
end
if kind ~= 'stream' then
  return {'unreadable', 'the key is a ' .. kind .. ', not a stream'}
end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, deleted = '0-0', '0-0'
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'max-deleted-entry-id' then deleted = info[i + 1] end
end
-- Is stream id a before stream id b? Ids are "<ms>-<seq>" in decimal without leading zeros,
-- so a shorter number is smaller. (XRANGE refuses an exclusive start at the largest id, so
-- nothing is asked of it when there cannot be anything after the id.)
local function before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  if not a_ms or not b_ms then return true end
  if #a_ms ~= #b_ms then return #a_ms < #b_ms end
  if a_ms ~= b_ms then return a_ms < b_ms end
  if #a_seq ~= #b_seq then return #a_seq < #b_seq end
  return a_seq < b_seq
end
if not before(ARGV[1], last) then
  return {last, deleted, {}}
end
local rows = redis.pcall('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
if type(rows) == 'table' and rows['err'] then
  return {'unreadable', rows['err']}
end
local limit = tonumber(ARGV[3])
local page, bytes = {}, 0
for i = 1, #rows do
  local fields = rows[i][2]
  local size = 1
  for f = 2, #fields, 2 do size = size + #fields[f] end
  bytes = bytes + size
  if i > 1 and bytes > limit then break end
  page[i] = rows[i]
end
return {last, deleted, page}
