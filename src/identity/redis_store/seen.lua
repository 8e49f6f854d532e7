-- A trusted source saw a person: merge into their record, keep the phone
-- and parent indexes true (one holder each per scope), drop the claims the
-- pair attests or contradicts. ARGV: prefix, scope, bsuid, phone, parent,
-- username, source, at (unix seconds), "1" when Meta attested the phone.
local b, source, at = ARGV[3], ARGV[7], ARGV[8]
local phone, parent, username = nonempty(ARGV[4]), nonempty(ARGV[5]), nonempty(ARGV[6])
local attests = ARGV[9] == '1'
if redis.call('EXISTS', P .. 'x:' .. b) == 1 then
  return cjson.encode({st = 'unchanged'})
end
local rk = P .. 'r:' .. b
local exists = redis.call('EXISTS', rk) == 1
local old = redis.call('HMGET', rk, 'phone', 'parent', 'username')
local old_phone, old_parent, old_username = old[1], old[2], old[3]
local new_phone = phone or old_phone
local new_parent = parent or old_parent
local new_username = username or old_username
local changed = (not exists) or new_phone ~= old_phone or new_parent ~= old_parent
  or new_username ~= old_username
local stale, dropped = {b}, {}
if old_parent then table.insert(stale, old_parent) end
if new_parent and new_parent ~= old_parent then table.insert(stale, new_parent) end
reindex('p:', 'phone', b, old_phone, new_phone, stale)
reindex('e:', 'parent', b, old_parent, new_parent, stale)
if new_phone then
  drop_claims_of_bsuid(b, dropped)
  drop_claims_of_phone(new_phone, dropped)
end
if not exists then
  redis.call('HSET', rk, 'bsuid', b, 'first', at)
  redis.call('INCR', P .. 'n')
end
redis.call('HSET', rk, 'last', at)
if changed then redis.call('HSET', rk, 'source', source) end
if new_phone then redis.call('HSET', rk, 'phone', new_phone) end
if new_parent then redis.call('HSET', rk, 'parent', new_parent) end
if new_username then redis.call('HSET', rk, 'username', new_username) end
if attests and phone then
  redis.call('HSET', rk, 'attested', at)
elseif new_phone ~= old_phone then
  -- An operator's new phone is not Meta's word.
  redis.call('HDEL', rk, 'attested')
end
local st = 'unchanged'
if not exists then st = 'inserted' elseif changed then st = 'updated' end
-- A sighting that changed nothing (a webhook per message sent repeats what
-- is known) leaves every replica's cache as it is.
if not changed and #dropped == 0 then
  return cjson.encode({st = st})
end
publish(stale, dropped)
return cjson.encode({st = st, t = list(stale), d = list(dropped)})
