-- migrate-store: puts one claim as the embedded store kept it, unless
-- trusted knowledge already overrules it. ARGV: prefix, scope, number,
-- bsuid, phone, claim JSON.
local number, b, phone, json = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', P .. 'x:' .. b) == 1
  or redis.call('HEXISTS', P .. 'r:' .. b, 'phone') == 1
  or redis.call('EXISTS', P .. 'p:' .. phone) == 1 then
  return 'overruled'
end
redis.call('HSET', P .. 'c:' .. b, number, json)
redis.call('HSET', P .. 'cp:' .. phone, number, b)
publish({}, {{number, b}})
return 'kept'
