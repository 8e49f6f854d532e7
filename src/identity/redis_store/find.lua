-- Every record and claim an identifier names in this scope; with ARGV[5]
-- = "erase", removes them too (and a BSUID's tombstone: personal data).
-- ARGV: prefix, scope, id, kind ("bsuid" | "parent" | "phone"), mode.
local id, kind, erase = ARGV[3], ARGV[4], ARGV[5] == 'erase'
local holder
if kind == 'bsuid' then
  holder = id
elseif kind == 'parent' then
  holder = redis.call('GET', P .. 'e:' .. id)
else
  holder = redis.call('GET', P .. 'p:' .. id)
end
local records, claims, stale, dropped = {}, {}, {}, {}
if holder then
  local fields
  if erase then
    local parent = redis.call('HGET', P .. 'r:' .. holder, 'parent')
    if parent then table.insert(stale, parent) end
    fields = remove_record(holder)
    table.insert(stale, holder)
  else
    fields = redis.call('HGETALL', P .. 'r:' .. holder)
    if #fields == 0 then fields = false end
  end
  if fields then table.insert(records, fields) end
end
if erase then
  if kind == 'phone' then
    drop_claims_of_phone(id, dropped, claims)
  else
    drop_claims_of_bsuid(id, dropped, claims)
    if kind == 'bsuid' then redis.call('DEL', P .. 'x:' .. id) end
  end
  publish(stale, dropped)
else
  if kind == 'phone' then
    local entries = redis.call('HGETALL', P .. 'cp:' .. id)
    for i = 1, #entries, 2 do
      local json = redis.call('HGET', P .. 'c:' .. entries[i + 1], entries[i])
      if json then table.insert(claims, json) end
    end
  else
    for _, json in ipairs(redis.call('HVALS', P .. 'c:' .. id)) do
      table.insert(claims, json)
    end
  end
end
return cjson.encode({records = list(records), claims = list(claims)})
