-- A BSUID is dead: tombstone it (it can never come back), remove its
-- record and its claims. ARGV: prefix, scope, bsuid, at.
local b, at = ARGV[3], ARGV[4]
redis.call('SET', P .. 'x:' .. b, at)
local stale, dropped = {b}, {}
local parent = redis.call('HGET', P .. 'r:' .. b, 'parent')
if parent then table.insert(stale, parent) end
local removed = remove_record(b)
drop_claims_of_bsuid(b, dropped)
publish(stale, dropped)
return cjson.encode({st = removed and 'retired' or 'unchanged', t = list(stale), d = list(dropped)})
