-- Shared by every identity script. ARGV[1] is the scope's key prefix,
-- "sg:id:{<scope>}:", ARGV[2] the scope itself; every key a script touches
-- begins with the prefix, so all of them live in the scope's hash slot.
local P, scope = ARGV[1], ARGV[2]

-- cjson writes an empty table as {}, which is no list: leave such fields out.
local function list(t)
  if #t == 0 then return nil end
  return t
end

local function nonempty(v)
  if v == nil or v == false or v == '' then return false end
  return v
end

-- Removes one claim (a business number's view of a BSUID) and its phone
-- entry; returns the claim's JSON.
local function remove_claim(bsuid, number, dropped)
  local ck = P .. 'c:' .. bsuid
  local json = redis.call('HGET', ck, number)
  if not json then return false end
  redis.call('HDEL', ck, number)
  local phone = cjson.decode(json).phone
  local pk = P .. 'cp:' .. phone
  if redis.call('HGET', pk, number) == bsuid then
    redis.call('HDEL', pk, number)
  end
  table.insert(dropped, {number, bsuid})
  return json
end

local function drop_claims_of_bsuid(bsuid, dropped, removed)
  for _, number in ipairs(redis.call('HKEYS', P .. 'c:' .. bsuid)) do
    local json = remove_claim(bsuid, number, dropped)
    if json and removed then table.insert(removed, json) end
  end
end

local function drop_claims_of_phone(phone, dropped, removed)
  local entries = redis.call('HGETALL', P .. 'cp:' .. phone)
  for i = 1, #entries, 2 do
    local json = remove_claim(entries[i + 1], entries[i], dropped)
    if json and removed then table.insert(removed, json) end
  end
end

-- Points index[new] at bsuid, drops index[old] if it pointed here, and
-- takes new away from another person who held it (a recycled number):
-- that person's record loses the field and their cached answer goes.
local function reindex(index, field, bsuid, old, new, stale)
  if old == new then return end
  if old then
    local k = P .. index .. old
    if redis.call('GET', k) == bsuid then redis.call('DEL', k) end
  end
  if not new then return end
  local k = P .. index .. new
  local holder = redis.call('GET', k)
  redis.call('SET', k, bsuid)
  if holder and holder ~= bsuid then
    redis.call('HDEL', P .. 'r:' .. holder, field)
    table.insert(stale, holder)
  end
end

-- Deletes a record and the index entries that point at it; returns its
-- fields (a flat list) or false.
local function remove_record(bsuid)
  local rk = P .. 'r:' .. bsuid
  local fields = redis.call('HGETALL', rk)
  if #fields == 0 then return false end
  redis.call('DEL', rk)
  redis.call('DECR', P .. 'n')
  for i = 1, #fields, 2 do
    local index = ({phone = 'p:', parent = 'e:'})[fields[i]]
    if index then
      local k = P .. index .. fields[i + 1]
      if redis.call('GET', k) == bsuid then redis.call('DEL', k) end
    end
  end
  return fields
end

-- Tells every replica which cached answers this write made stale.
local function publish(stale, dropped)
  redis.call('PUBLISH', 'sg:invalidate',
    cjson.encode({s = scope, r = list(stale), c = list(dropped)}))
end

-- A send's claim that trusted knowledge overrules (RedbStore::claim says
-- the same): the BSUID is retired, its person has a phone, or the phone is
-- someone's.
local function overruled(b, phone)
  return redis.call('EXISTS', P .. 'x:' .. b) == 1
    or redis.call('HEXISTS', P .. 'r:' .. b, 'phone') == 1
    or redis.call('EXISTS', P .. 'p:' .. phone) == 1
end
