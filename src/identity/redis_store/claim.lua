-- A successful send from a business number named a pair: keep it for that
-- number alone, unless trusted knowledge already says otherwise.
-- ARGV: prefix, scope, number, bsuid, phone, at.
local number, b, phone, at = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
if overruled(b, phone) then
  return cjson.encode({st = 'overruled'})
end
local ck = P .. 'c:' .. b
local old = redis.call('HGET', ck, number)
local first, old_phone = at, false
if old then
  local o = cjson.decode(old)
  first, old_phone = o.first_seen, o.phone
end
redis.call('HSET', ck, number, cjson.encode({
  scope = scope, number = number, bsuid = b, phone = phone,
  first_seen = first, last_seen = at, source = 'send'}))
if old_phone and old_phone ~= phone then
  local k = P .. 'cp:' .. old_phone
  if redis.call('HGET', k, number) == b then redis.call('HDEL', k, number) end
end
local pk = P .. 'cp:' .. phone
local displaced = redis.call('HGET', pk, number)
redis.call('HSET', pk, number, b)
local changed = {{number, b}}
if displaced and displaced ~= b then
  redis.call('HDEL', P .. 'c:' .. displaced, number)
  table.insert(changed, {number, displaced})
else
  displaced = nil
end
publish({}, changed)
return cjson.encode({st = 'kept', displaced = displaced})
