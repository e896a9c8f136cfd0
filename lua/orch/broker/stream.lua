--- The broker's stream protocol: how a task travels through Redis Streams
-- to a node and how its outcome comes back. Pure functions: messages and
-- the argv of each command; no connection, no waiting.
--
-- Keys of queue Q:
--   orch:Q:tasks         the tasks (a stream; consumer group "nodes")
--   orch:Q:dead          the dead letters (a stream)
--   orch:Q:results:C     the results for client C (a stream that expires
--                        `ttl` seconds after its last result)
--   orch:Q:control       stop requests for delivered tasks (entry, stop),
--                        and leases newly in use (lease: ms), which every
--                        node reads (a stream, capped)
--   orch:Q:stops         entry id -> the stop asked for it ("cancelled" |
--                        "killed"), for a node that takes the entry over
--   orch:Q:leases_used   the leases (ms) clients sent tasks with, scored
--                        by when they last did (unix s): how often a node
--                        looks for stale entries
-- A task entry's fields: id (the client's task id), reply (its results
-- key), max (deliveries allowed), timeout (seconds, "" for none), lua (the
-- bytecode format of the client's Lua), p (core.encode(fn, args...):
-- orch's own wire format, functions as bytecode), grace (seconds between
-- a stop request and SIGKILL, "" for the node's default), lease (seconds
-- the holder may go without renewing it; absent from older clients'
-- tasks: the node's default), sig (HMAC-SHA256 of id, reply, max, timeout,
-- lua, p, grace and, when present, lease under the shared secret; ""
-- without).
-- A result entry: node, then one or more results, each id, status
-- ("done" | "failed"), p (encode_strict of the values table with n, or of
-- the TaskError's fields), or id, status "started" (the node has started
-- the task): a node writes the results of one batch for one client in one
-- entry.
-- Delivery is at least once: a node holds an entry in the group's pending
-- list; renew() resets its idle time while the task runs (every third of
-- the task's lease); claim_stale() takes the entries idle longer than
-- their own lease (the entry's lease field), with their delivery counts;
-- finish() writes the result, acknowledges and deletes the entry in one
-- transaction, so an entry is acknowledged only with its result written.
-- stop() is the client's cancel or kill: an entry no node has read is
-- deleted (it never runs); a delivered one gets its stop recorded and
-- announced on the control stream, which the node running it acts on.
local core = require "orch.core"

local stream = {}

stream.GROUP = "nodes"
stream.RESULT_TTL = 3600
stream.MAX_DELIVERIES = 3
stream.CONTROL_LEN = 10000  -- control messages kept (about)

--- The format of this Lua's bytecode: the version and the sizes and
-- layout a dump's header records. A node refuses other formats.
stream.LUA_FORMAT = _VERSION .. " " .. string.dump(function() end, true):sub(1, 31)
  :gsub(".", function(c) return ("%02x"):format(c:byte()) end)

function stream.keys(queue)
  local base = "orch:" .. queue .. ":"
  return { tasks = base .. "tasks", dead = base .. "dead", results_prefix = base .. "results:",
           control = base .. "control", stops = base .. "stops", leases_used = base .. "leases_used" }
end

--- A flat list of fields (XREADGROUP's) as a table field -> value.
function stream.fields(list)
  local t = {}
  for i = 1, #list, 2 do t[list[i]] = list[i + 1] end
  return t
end

local SIGNED = { "id", "reply", "max", "timeout", "lua", "p", "grace" }

-- The signature covers the lease when the task has one (an older
-- client's has none): stripping it from a signed task breaks the match.
local function signature(secret, f)
  local parts = {}
  for i, k in ipairs(SIGNED) do parts[i] = #f[k] .. ":" .. f[k] end
  if f.lease then parts[#parts + 1] = #f.lease .. ":" .. f.lease end
  return core.hmac_sha256(secret, table.concat(parts, ","))
end

-- Equal strings, compared in a time that does not tell where they differ.
local function same(a, b)
  if #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do diff = diff | (a:byte(i) ~ b:byte(i)) end
  return diff == 0
end

--- task_fields{ id, reply, fn, args (with n), max, timeout, grace, lease, secret } ->
-- field list for XADD. What cannot cross is refused here, naming its place.
function stream.task_fields(t)
  local args = t.args or { n = 0 }
  local list = {
    "id", tostring(t.id), "reply", t.reply, "max", tostring(t.max or stream.MAX_DELIVERIES),
    "timeout", t.timeout and tostring(t.timeout) or "", "lua", stream.LUA_FORMAT,
    "p", core.encode(t.fn, table.unpack(args, 1, args.n or #args)),
    "grace", t.grace and tostring(t.grace) or "",
  }
  local lease = t.lease and tostring(t.lease)
  if lease then list[15], list[16] = "lease", lease end
  local sig = ""
  if t.secret then
    sig = signature(t.secret, { id = list[2], reply = list[4], max = list[6], timeout = list[8],
                                lua = list[10], p = list[12], grace = list[14], lease = lease })
  end
  list[#list + 1] = "sig"
  list[#list + 1] = sig
  return list
end

--- The lease of a task's fields in ms, default_ms when it has none; nil
-- for one that is not a positive number.
function stream.lease_ms(f, default_ms)
  if f.lease == nil then return default_ms end
  local s = tonumber(f.lease)
  if not s or s ~= s or s <= 0 or s == math.huge then return nil end
  return math.max(1, math.floor(s * 1000))
end

--- decode_task(fields, secret, default_lease_ms) -> task | nil, why
-- task = { id, reply, max, timeout, grace, lease_ms, fn, args (with n) }.
-- Refused: a missing field, another bytecode format, an unsigned or
-- mis-signed task when a secret is set, a bad lease, a payload that does
-- not decode.
function stream.decode_task(f, secret, default_lease_ms)
  for _, k in ipairs(SIGNED) do
    if type(f[k]) ~= "string" then return nil, ("task without field '%s'"):format(k) end
  end
  if f.lua ~= stream.LUA_FORMAT then
    return nil, ("task encoded by another Lua build (its bytecode: %s; this node's: %s)")
      :format(f.lua, stream.LUA_FORMAT)
  end
  if secret then
    if (f.sig or "") == "" then return nil, "unsigned task refused (this node has a secret)" end
    if not same(f.sig, signature(secret, f)) then return nil, "task with a bad signature refused" end
  end
  local lease_ms = stream.lease_ms(f, default_lease_ms)
  if not lease_ms then return nil, ("task with a bad lease %q"):format(tostring(f.lease)) end
  local packed = table.pack(pcall(core.decode, f.p, true))
  if not packed[1] then return nil, "task payload does not decode: " .. tostring(packed[2]) end
  local fn = packed[2]
  if type(fn) ~= "function" and type(fn) ~= "string" then
    return nil, ("task function is a %s"):format(type(fn))
  end
  return {
    id = f.id, reply = f.reply, max = tonumber(f.max) or stream.MAX_DELIVERIES,
    timeout = tonumber(f.timeout), grace = tonumber(f.grace), lease_ms = lease_ms, fn = fn,
    args = table.move(packed, 3, packed.n, 1, { n = packed.n - 2 }),
  }
end

local ERROR_FIELDS = { "kind", "message", "traceback", "value", "exit_code", "signal", "deliveries" }

--- result_fields(id, values) or result_fields(id, nil, err) -> the fields
-- of one result (results_entry puts several in one entry). values: {n =
-- count, ...} (Future.list). err: a TaskError or a table of its fields; a
-- `value` that cannot cross is left out.
function stream.result_fields(id, values, err)
  local status, p = "done"
  if err then
    status = "failed"
    local e = {}
    for _, k in ipairs(ERROR_FIELDS) do e[k] = err[k] end
    local ok, s = pcall(core.encode_strict, e)
    if not ok then e.value = nil; s = core.encode_strict(e) end
    p = s
  else
    local ok, s = pcall(core.encode_strict, values)
    if not ok then
      status = "failed"
      p = core.encode_strict{ kind = "error", message = "result cannot cross: " .. tostring(s) }
    else
      p = s
    end
  end
  return { "id", tostring(id), "status", status, "p", p }
end

--- XADD of one entry on a client's results stream: node, then the
-- results (lists of result_fields) in order.
function stream.add_results(reply, node, results)
  local argv = { "XADD", reply, "*", "node", node }
  for _, r in ipairs(results) do table.move(r, 1, #r, #argv + 1, argv) end
  return argv
end

--- The note on a client's results stream that a node has started the
-- tasks ids (one entry).
function stream.add_started(reply, ids, node)
  local argv = { "XADD", reply, "*", "node", node }
  for _, id in ipairs(ids) do
    argv[#argv + 1], argv[#argv + 2] = "id", tostring(id)
    argv[#argv + 1], argv[#argv + 2] = "status", "started"
  end
  return argv
end

--- The results of a result entry's field list, in order: { id, status,
-- p, node }, ... (a field before the first id, node included, applies to
-- all; each id starts the next result).
function stream.results(list)
  local out, common, cur = {}, {}, nil
  for i = 1, #list, 2 do
    local k, v = list[i], list[i + 1]
    if k == "id" then
      cur = { id = v }
      out[#out + 1] = cur
    elseif k == "node" or not cur then
      common[k] = v
    else
      cur[k] = v
    end
  end
  for _, r in ipairs(out) do
    for k, v in pairs(common) do r[k] = r[k] or v end
  end
  return out
end

--- decode_result(result) -> id, "done", values (with n) | id, "failed", error fields
-- (the fields of a TaskError). Functions never decode here.
function stream.decode_result(f)
  local ok, v = pcall(core.decode, f.p or "")
  if not ok or type(v) ~= "table" then
    return f.id, "failed", { kind = "error", message = "bad result from node "
      .. tostring(f.node) .. ": " .. tostring(v) }
  end
  return f.id, f.status, v
end

---------------------------------------------------------------------------
-- commands

function stream.create_group(keys)
  return { "XGROUP", "CREATE", keys.tasks, stream.GROUP, "0", "MKSTREAM" }
end

function stream.add_task(keys, fields)
  local argv = { "XADD", keys.tasks, "*" }
  table.move(fields, 1, #fields, 4, argv)
  return argv
end

-- Marks the lease ARGV[1] (ms) used now in KEYS[1], announced on KEYS[2]
-- when it was not in use.
local LEASE_SCRIPT = [[
if redis.call('ZADD', KEYS[1], redis.call('TIME')[1], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ]] .. stream.CONTROL_LEN .. [[, '*', 'lease', ARGV[1])
end
]]

--- Several tasks (field lists of task_fields), all with the lease
-- lease_ms, as the commands of one MULTI ... EXEC: an XADD each, in
-- order (the first replies of EXEC are their entry ids), and the lease
-- marked used.
function stream.add_tasks(keys, field_lists, lease_ms)
  local cmds = {}
  for i, fields in ipairs(field_lists) do cmds[i] = stream.add_task(keys, fields) end
  cmds[#cmds + 1] = { "EVAL", LEASE_SCRIPT, 2, keys.leases_used, keys.control, lease_ms }
  return cmds
end

--- New entries for this consumer, at most count, waiting block_ms at most.
function stream.read_new(keys, consumer, count, block_ms)
  return { "XREADGROUP", "GROUP", stream.GROUP, consumer, "COUNT", count, "BLOCK", block_ms,
           "STREAMS", keys.tasks, ">" }
end

-- The entries of KEYS[1] not delivered yet (entries minus those pending).
local UNDELIVERED_SCRIPT = [[
return redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
]]

--- How many entries of the stream no node has read yet (an integer).
function stream.undelivered(keys)
  return { "EVAL", UNDELIVERED_SCRIPT, 1, keys.tasks, stream.GROUP }
end

--- Up to count new entries for this consumer, without waiting (a read
-- ahead of the free workers, once undelivered() said the stream holds
-- more than that: what is left keeps the other nodes busy).
function stream.read_ahead(keys, consumer, count)
  return { "XREADGROUP", "GROUP", stream.GROUP, consumer, "COUNT", count,
           "STREAMS", keys.tasks, ">" }
end

--- Results for a client, after the entry id `after` ("0" at first).
function stream.read_results(results_key, after, count, block_ms)
  return { "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", results_key, after }
end

-- Looks at up to ARGV[5] pending entries after ARGV[4] ("-": from the
-- start) and takes, for consumer ARGV[2], up to ARGV[3] of those idle for
-- at least their own lease (the entry's lease field in s, else ARGV[6]
-- ms): an XCLAIM with that lease as its min-idle-time. Returns { taken, wait, next, shortest } with taken =
-- { {entry id, fields, deliveries, stop or false, lease ms}, ... }
-- (deleted entries left out, their lease dropped), wait = ms until the
-- first entry it looked at and left runs out of lease (0: one has; -1:
-- it looked at none), next =
-- where the next call looks ("-" once the end was reached), shortest =
-- the shortest lease clients sent tasks with in the last LEASES_USED_FOR
-- seconds (-1: none).
local CLAIM_SCRIPT = [[
local group, free, scan = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
local function lease_of(id)
  local e = redis.call('XRANGE', KEYS[1], id, id)[1]
  local f = e and e[2] or {}
  for i = 1, #f, 2 do
    if f[i] == 'lease' then
      local s = tonumber(f[i + 1])
      if s and s > 0 and s < 1e12 then return math.max(1, math.floor(s * 1000)) end
    end
  end
  return tonumber(ARGV[6])
end
local pending = redis.call('XPENDING', KEYS[1], group, ARGV[4], '+', scan)
local taken, wait = {}, -1
for _, p in ipairs(pending) do
  local id, idle = p[1], p[3]
  local lease = lease_of(id)
  if idle < lease then
    if wait < 0 or lease - idle < wait then wait = lease - idle end
  elseif #taken >= free then
    wait = 0
  else
    local e = redis.call('XCLAIM', KEYS[1], group, ARGV[2], lease, id)[1]
    if e and e[2] then
      taken[#taken + 1] = { id, e[2], p[4] + 1, redis.call('HGET', KEYS[2], id), lease }
    end
  end
end
local next = '-'
if #pending == scan then next = '(' .. pending[#pending][1] end
local shortest = -1
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', redis.call('TIME')[1] - ARGV[7])
for _, ms in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  if shortest < 0 or tonumber(ms) < shortest then shortest = tonumber(ms) end
end
return { taken, wait, next, shortest }
]]

stream.LEASES_USED_FOR = 3600

stream.CLAIM_SCAN = 1000  -- pending entries one claim_stale looks at

--- claim_stale(keys, consumer, count, after, default_lease_ms): see CLAIM_SCRIPT.
function stream.claim_stale(keys, consumer, count, after, default_lease_ms)
  return { "EVAL", CLAIM_SCRIPT, 3, keys.tasks, keys.stops, keys.leases_used,
           stream.GROUP, consumer, count, after or "-", stream.CLAIM_SCAN, default_lease_ms,
           stream.LEASES_USED_FOR }
end

-- A client's stop (ARGV[2]: "cancelled" | "killed") for the entries
-- ARGV[3..]: each one a node holds gets it recorded (KEYS[2]) and announced
-- (KEYS[3]); one nobody read is deleted. Returns, for each, "running" (a
-- node holds it: its answer will come), "removed" (it will never run) or
-- "gone" (it has ended: its result is on its way).
local STOP_SCRIPT = [[
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  if redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)[1] then
    redis.call('HSET', KEYS[2], id, ARGV[2])
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ]] .. stream.CONTROL_LEN .. [[, '*',
      'entry', id, 'stop', ARGV[2])
    out[#out + 1] = 'running'
  elseif redis.call('XDEL', KEYS[1], id) == 1 then
    out[#out + 1] = 'removed'
  else
    out[#out + 1] = 'gone'
  end
end
if #out > 0 then redis.call('EXPIRE', KEYS[2], ]] .. stream.RESULT_TTL .. [[) end
return out
]]

function stream.stop(keys, kind, entry_ids)
  local argv = { "EVAL", STOP_SCRIPT, 3, keys.tasks, keys.stops, keys.control,
                 stream.GROUP, kind }
  table.move(entry_ids, 1, #entry_ids, #argv + 1, argv)
  return argv
end

--- Control entries (stops, leases newly in use) after the entry `after`.
function stream.read_control(keys, after, block_ms)
  return { "XREAD", "COUNT", 1000, "BLOCK", block_ms, "STREAMS", keys.control, after }
end

--- The last control entry (where a node starts reading).
function stream.control_tail(keys)
  return { "XREVRANGE", keys.control, "+", "-", "COUNT", 1 }
end

-- Resets the idle time of the entries ARGV[3..] still held by consumer
-- ARGV[1]; returns the ids it no longer holds (another node took them).
local RENEW_SCRIPT = [[
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XCLAIM', KEYS[1], ARGV[2], ARGV[1], 0, ARGV[i], 'JUSTID')
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
]]

function stream.renew(keys, consumer, entry_ids)
  local argv = { "EVAL", RENEW_SCRIPT, 1, keys.tasks, consumer, stream.GROUP }
  table.move(entry_ids, 1, #entry_ids, 7, argv)
  return argv
end

-- The idle time (ms) a handed back entry gets: past any lease.
stream.HANDED_BACK_IDLE = 10000000000  -- about 115 days

--- Gives an entry back for another node at once: idle past any lease,
-- its delivery count as before this delivery.
function stream.hand_back(keys, consumer, entry_id, deliveries)
  return { "XCLAIM", keys.tasks, stream.GROUP, consumer, 0, entry_id, "IDLE",
           stream.HANDED_BACK_IDLE, "RETRYCOUNT", math.max(deliveries - 1, 0), "JUSTID" }
end

-- The entries consumer ARGV[2] holds, up to ARGV[3]: { {entry id,
-- fields, deliveries}, ... } (deleted ones left out), each one's lease
-- renewed. Read with XRANGE, not with XREADGROUP's history (id 0): that
-- would count one more delivery of each, and an entry whose read was lost
-- with a restart would look delivered twice, its node lost once.
local OWN_SCRIPT = [[
local out = {}
for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', ARGV[3], ARGV[2])) do
  local e = redis.call('XRANGE', KEYS[1], p[1], p[1])[1]
  if e then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, p[1], 'JUSTID')
    out[#out + 1] = { p[1], e[2], p[4] }
  end
end
return out
]]

function stream.read_own(keys, consumer, count)
  return { "EVAL", OWN_SCRIPT, 1, keys.tasks, stream.GROUP, consumer, count }
end

--- The entries this consumer holds: { {id, consumer, idle, deliveries}, ... }.
function stream.held(keys, consumer, count)
  return { "XPENDING", keys.tasks, stream.GROUP, "-", "+", count, consumer }
end

--- The commands that finish deliveries, for one MULTI ... EXEC. done:
-- { {entry id, reply key, result fields}, ... }. For each client, one
-- entry of its results and its expiry; then the ack and the delete, each
-- one command for all.
function stream.finish(keys, node, done, ttl)
  local cmds, by_reply, order, ids = {}, {}, {}, {}
  for i, d in ipairs(done) do
    ids[i] = d[1]
    local reply = d[2]
    if reply and reply ~= "" then
      if not by_reply[reply] then by_reply[reply] = {}; order[#order + 1] = reply end
      local list = by_reply[reply]
      list[#list + 1] = d[3]
    end
  end
  for _, reply in ipairs(order) do
    cmds[#cmds + 1] = stream.add_results(reply, node, by_reply[reply])
    cmds[#cmds + 1] = { "EXPIRE", reply, ttl or stream.RESULT_TTL }
  end
  local ack, del = { "XACK", keys.tasks, stream.GROUP }, { "XDEL", keys.tasks }
  table.move(ids, 1, #ids, 4, ack)
  table.move(ids, 1, #ids, 3, del)
  cmds[#cmds + 1], cmds[#cmds + 2] = ack, del
  return cmds
end

--- A dead letter: the task's own fields, why it died, and which node.
function stream.dead_letter(keys, fields_list, why, node)
  local argv = { "XADD", keys.dead, "*", "reason", why, "node", node }
  table.move(fields_list, 1, #fields_list, #argv + 1, argv)
  return argv
end

return stream
