-- The phone a trusted source gave a parent BSUID's person: one round trip
-- through the parent index. ARGV: prefix, scope, parent.
local b = redis.call('GET', P .. 'e:' .. ARGV[3])
if not b then return false end
return redis.call('HGET', P .. 'r:' .. b, 'phone')
