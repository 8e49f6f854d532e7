-- migrate-store: puts one record exactly as the embedded store kept it
-- (times, source, attestation), keeping the indexes true. A tombstoned
-- BSUID stays dead. ARGV: prefix, scope, then the record's fields as
-- name, value pairs (bsuid first).
local b = ARGV[4]
if redis.call('EXISTS', P .. 'x:' .. b) == 1 then return 'retired' end
local rk = P .. 'r:' .. b
local exists = redis.call('EXISTS', rk) == 1
local old = redis.call('HMGET', rk, 'phone', 'parent')
local fields, new = {}, {}
for i = 3, #ARGV, 2 do
  table.insert(fields, ARGV[i])
  table.insert(fields, ARGV[i + 1])
  new[ARGV[i]] = ARGV[i + 1]
end
local stale = {b}
reindex('p:', 'phone', b, old[1], new.phone or false, stale)
reindex('e:', 'parent', b, old[2], new.parent or false, stale)
redis.call('DEL', rk)
redis.call('HSET', rk, unpack(fields))
if not exists then redis.call('INCR', P .. 'n') end
publish(stale, {})
if exists then return 'merged' end
return 'inserted'
