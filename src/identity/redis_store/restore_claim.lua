-- migrate-store: puts one claim as the embedded store kept it, unless
-- trusted knowledge already overrules it. ARGV: prefix, scope, number,
-- bsuid, phone, claim JSON.
local number, b, phone, json = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if overruled(b, phone) then
  return 'overruled'
end
redis.call('HSET', P .. 'c:' .. b, number, json)
redis.call('HSET', P .. 'cp:' .. phone, number, b)
publish({}, {{number, b}})
return 'kept'
