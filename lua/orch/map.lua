--- map and imap: a function over a list of items, on a pool's group, in
-- chunks (opts.chunk items per task; "auto", map's default, sizes them from
-- the item count and the workers; imap's default is 1). A chunk runs run_chunk in a worker
-- and its results come back as one encoded list, decoded straight into
-- map's output (core.decode_into).
--
-- Uses the pool's internal interface (pool.lua's header): _submit and
-- _enqueue.
local core = require "orch.core"
local loop = require "orch.loop"

local map = {}

-- Runs in a worker: fn over one chunk of items. The results take the
-- items' places and go back as one encoded list, which the parent decodes
-- straight into map's output (core.decode_into).
local function run_chunk(fn, items, n)
  if type(fn) == "string" then
    local mod, name = fn:match("^(.*)%.([^.]+)$")
    fn = mod and require(mod)[name] or require(fn)
  end
  for i = 1, n do items[i] = fn(items[i]) end
  return core.encode_slice(items, 1, n)
end

-- Submits run_chunk(fn, {items[s..e]}, e - s + 1), the slice encoded
-- straight from items.
local function submit_chunk(group, fn, items, s, e)
  local pool = group.pool
  if pool.closed then error("orch.pool: submit on a closed pool", 4) end
  local fut = pool:_enqueue(group, core.pack_chunk(run_chunk, fn, items, s, e))
  fut.chunk = true
  if group.keeps_args then
    fut.fn, fut.args = run_chunk, table.pack(fn, table.move(items, s, e, 1, {}), e - s + 1)
  end
  return fut
end

-- chunk = "auto": about CHUNKS_PER_WORKER chunks for each worker, as
-- Python's Pool.map sizes its chunks: few enough that small items do not
-- cost a task each, enough that a slow chunk does not hold up the rest.
local CHUNKS_PER_WORKER = 4

local function auto_chunk(n, workers)
  local chunks = CHUNKS_PER_WORKER * workers
  return n > chunks and (n + chunks - 1) // chunks or 1
end

local function check_map_args(what, fn, items, opts, default, workers)
  local t = type(fn)
  if t ~= "function" and t ~= "string" then
    error(("%s: expects a function or a 'module.name' string, got %s"):format(what, t), 4)
  end
  if type(items) ~= "table" then
    error(("%s: items must be a table (an array), got %s"):format(what, type(items)), 4)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(what, type(opts)), 4)
  end
  local chunk = opts and opts.chunk or default
  if chunk == "auto" then chunk = auto_chunk(#items, workers) end
  if math.type(chunk) ~= "integer" or chunk < 1 then
    error(("%s: option 'chunk' must be a positive integer or \"auto\", got %s"):format(what, tostring(chunk)), 4)
  end
  for k in pairs(opts or {}) do
    if k ~= "chunk" and k ~= "ordered" then
      error(("%s: unknown option '%s' (valid: chunk, ordered)"):format(what, tostring(k)), 4)
    end
  end
  return chunk
end

-- Items packed between two turns of the loop while map submits, so that
-- workers start on the first chunks while the others are packed.
local POLL_ITEMS = 4096

--- A map chunk's results (one encoded list, see run_chunk) as a table,
-- and their count.
function map.chunk_results(fut)
  local list = {}
  return list, core.decode_into(fut.values[1], list, 1)
end

-- Submits items in chunks into futs; first[k]: the first index of futs[k].
local function submit_chunks(group, fn, items, chunk, futs, first)
  local n, packed = #items, 0
  for s = 1, n, chunk do
    local e = math.min(s + chunk - 1, n)
    if chunk == 1 then
      futs[#futs + 1] = group.pool:_submit(group, fn, items[s])
    else
      futs[#futs + 1] = submit_chunk(group, fn, items, s, e)
    end
    first[#first + 1] = s
    packed = packed + chunk
    if packed >= POLL_ITEMS then
      packed = 0
      loop.poll()
    end
  end
end

local function cancel_rest(futs)
  for _, f in ipairs(futs) do if not f:done() then f:cancel() end end
end

--- group:map and pool:map (what: which, for errors): the ordered results;
-- on the first failure the rest is cancelled and its error raised.
function map.map(group, fn, items, opts, what)
  local chunk = check_map_args(what, fn, items, opts, "auto", group.pool.size)
  local out = core.array(#items)
  local futs, first = {}, {}
  local remaining, failure
  -- a chunk's results go into out as soon as it ends
  local function collect(f, k)
    remaining = remaining - 1
    if failure ~= nil then return end
    if f.status ~= "done" then
      failure = f.err
    elseif chunk == 1 then
      out[first[k]] = f.values[1]
    else
      local ok, err = pcall(core.decode_into, f.values[1], out, first[k])
      if not ok then failure = err end
    end
  end
  local ok, err = pcall(function()
    submit_chunks(group, fn, items, chunk, futs, first)
    remaining = #futs
    for k, f in ipairs(futs) do f:on_done(function() collect(f, k) end) end
    loop.wait(function() return failure ~= nil or remaining == 0 end)
  end)
  if not ok then failure = err end  -- interrupted, or a chunk could not be packed
  if failure ~= nil then
    cancel_rest(futs)
    error(failure, 0)
  end
  return out
end

--- group:imap and pool:imap: an iterator yielding i, result, in order or
-- (opts.ordered == false) in completion order.
function map.imap(group, fn, items, opts, what)
  local chunk = check_map_args(what, fn, items, opts, 1, group.pool.size)
  local ordered = not (opts and opts.ordered == false)
  local futs, first = {}, {}
  local ok, err = pcall(submit_chunks, group, fn, items, chunk, futs, first)
  if not ok then cancel_rest(futs); error(err, 0) end
  local finished, fin_head = {}, 1  -- completion order
  for _, f in ipairs(futs) do f:on_done(function(x) finished[#finished + 1] = x end) end
  local index = {}
  for i, f in ipairs(futs) do index[f] = i end
  local next_fut, buf, buf_i = 1, nil, 0
  local function take(f)
    if f.status ~= "done" then cancel_rest(futs); error(f.err, 0) end
    local base = first[index[f]]
    if chunk == 1 then return { { base, f.values[1] } } end
    local list, n = map.chunk_results(f)
    local out = {}
    for j = 1, n do out[j] = { base + j - 1, list[j] } end
    return out
  end
  return function()
    while true do
      if buf and buf_i < #buf then
        buf_i = buf_i + 1
        return buf[buf_i][1], buf[buf_i][2]
      end
      local f
      if ordered then
        f = futs[next_fut]
        if not f then return nil end
        next_fut = next_fut + 1
        f:wait()
      else
        if fin_head > #futs then return nil end
        loop.wait(function() return finished[fin_head] ~= nil end)
        f = finished[fin_head]
        fin_head = fin_head + 1
      end
      buf, buf_i = take(f), 0
    end
  end
end

return map
