--- map and imap: a function over a list of items, on a pool's group, in
-- chunks (opts.chunk items per task; "auto", the default, sizes them from
-- the item count and the workers). A chunk runs in a worker (src/chunk.c;
-- run_chunk on a broker's node) and its results come back as one encoded
-- list, decoded straight into map's output (core.decode_into).
--
-- Long runs (opts.progress, opts.joblog, opts.resume): items are counted
-- and logged as their chunk ends (orch.progress, orch.joblog); a resumed
-- run takes from the log what had finished and runs the rest.
--
-- Uses the pool's internal interface (pool.lua's header): _submit and
-- _enqueue.
local core = require "orch.core"
local check = require "orch.check"
local loop = require "orch.loop"
local progress = require "orch.progress"
local joblog = require "orch.joblog"
local first_value = require("orch.future").first

local map = {}

-- chunk = "auto": about 4 chunks per worker, as Python's map, but never
-- more than AUTO_MAX items: each worker gets many chunks on a long list,
-- so progress moves and the last chunks are spread over the workers.
-- Items so quick that a chunk takes a worker under GROW_BELOW seconds go
-- in ever bigger chunks (doubled as such chunks end, up to a
-- GROW_PER_WORKER-th of each worker's share): what a chunk costs the
-- parent would otherwise outweigh its items, and such a chunk is still
-- short (progress and the job log hear of its items within milliseconds).
local AUTO_PER_WORKER = 4
local AUTO_MAX = 1000
local GROW_BELOW = 0.001
local GROW_PER_WORKER = 16

---------------------------------------------------------------------------
-- the worker's side

-- What a chunk raises when an item fails is a plain table (it must
-- cross as the error's value): the item's place in the chunk, its own
-- error value (when that can cross), message and traceback. The parent
-- makes the TaskError from it (item_error).

local function error_message(e)
  if type(e) == "string" then return e end
  local mt = getmetatable(e)
  if mt and mt.__tostring then return tostring(e) end
  return ("(error object is a %s value)"):format(type(e))
end

-- Runs in a worker: fn over one chunk of items. The results take the
-- items' places and go back as one encoded list, which the parent decodes
-- straight into map's output (core.decode_into), with the worker's pid and
-- the chunk's seconds. An item that fails is named.
local function run_chunk(fn, items, n)
  if type(fn) == "string" then fn = core.resolve(fn) end
  local started, i, traceback = core.now(), 0, nil
  local ok, err = xpcall(function()
    for j = 1, n do
      i = j
      items[j] = fn(items[j])
    end
  end, function(e)
    traceback = debug.traceback(error_message(e), 2)
    return e
  end)
  if not ok then
    traceback = traceback:match("^(.-)\n\t%[C%]: in function 'xpcall'") or traceback
    local crosses = pcall(core.encode, err)
    error({ item = i, value = crosses and err or nil, message = error_message(err),
      traceback = traceback }, 0)
  end
  return core.encode_slice(items, 1, n), core.getpid(), core.now() - started
end

---------------------------------------------------------------------------
-- the parent's side

-- Submits fn over items[s..e], the slice encoded straight from items: a
-- local worker runs it in C as run_chunk would (src/chunk.c); a broker's
-- node runs run_chunk(fn, {items[s..e]}, e - s + 1), kept on the future.
local function submit_chunk(group, fn, items, s, e)
  local pool = group.pool
  if pool.closed then check.fail("orch.pool", "submit on a closed pool") end
  local fut = pool:_enqueue(group, core.pack_chunk(fn, items, s, e))
  fut.chunk = true
  if group.keeps_args then
    fut.fn, fut.args = run_chunk, table.pack(fn, table.move(items, s, e, 1, {}), e - s + 1)
  end
  return fut
end

local OPTIONS = { chunk = true, ordered = true, progress = true, joblog = true, resume = true,
  resume_failed = true }
local VALID = "chunk, joblog, ordered, progress, resume, resume_failed"

local function check_opts(what, opts)
  for k in pairs(opts) do
    if not OPTIONS[k] then
      check.fail(what, "unknown option '%s' (valid: %s)", tostring(k), VALID)
    end
  end
  local p = opts.progress
  if p ~= nil and type(p) ~= "boolean" and type(p) ~= "function" then
    check.fail(what, "option 'progress' must be a boolean or a function (got %s)", check.show(p))
  end
  if opts.joblog ~= nil and type(opts.joblog) ~= "string" then
    check.fail(what, "option 'joblog' must be a file name (a string) (got %s)", check.show(opts.joblog))
  end
  if (opts.resume or opts.resume_failed) and not opts.joblog then
    check.fail(what, "option 'resume' needs option 'joblog' (the log to resume from)")
  end
end

-- The chunk size: opts.chunk, or "auto" from the item count and workers
-- (a pool on a broker may have none of its own: then as if it had one,
-- and AUTO_MAX keeps the chunks spread over the nodes); then the size it
-- may grow to (see GROW_BELOW; only "auto" grows).
local function chunk_size(what, group, n, chunk)
  if chunk == nil or chunk == "auto" then
    local workers = math.max(group.pool.size or 1, 1)
    local per = -(-n // (AUTO_PER_WORKER * workers))
    local size = math.max(1, math.min(per, AUTO_MAX))
    return size, math.max(size, math.min(per, n // (GROW_PER_WORKER * workers)))
  end
  if math.type(chunk) ~= "integer" or chunk < 1 then
    check.fail(what, "option 'chunk' must be a positive integer or \"auto\" (got %s)", check.show(chunk))
  end
  return chunk, chunk
end

local function check_map_args(what, group, fn, items, opts)
  local t = type(fn)
  if t ~= "function" and t ~= "string" then
    check.fail(what, "expects a function or a 'module.name' string (got %s)", check.show(fn))
  end
  if type(items) ~= "table" then
    check.fail(what, "items must be a table (an array) (got %s)", check.show(items))
  end
  if opts ~= nil and type(opts) ~= "table" then
    check.fail(what, "options must be a table (got %s)", check.show(opts))
  end
  opts = opts or {}
  check_opts(what, opts)
  local chunk, grow_to = chunk_size(what, group, #items, opts.chunk)
  return chunk, grow_to, opts
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

-- The size of the next chunks: doubled, up to run.grow_to, when the
-- latest chunk to end since the last look (run.heard) took its worker
-- under GROW_BELOW (of CPU time when the worker says: src/chunk.c; a
-- broker's node runs run_chunk, which says its seconds only). Whichever
-- chunk ended last counts: the packing may run any number of chunks ahead
-- of the workers, and they end out of order.
local function next_size(run, size)
  local seconds = run.heard
  run.heard = nil
  if math.type(seconds) == "float" and seconds < GROW_BELOW then
    return math.min(2 * size, run.grow_to)
  end
  return size
end

-- Submits the run's items in chunks into run.futs, within each of its
-- ranges (pairs of first and last index: the items to run); first[k],
-- last[k]: the items of futs[k].
local function submit_chunks(run)
  local group, fn, items, futs, first, last = run.group, run.fn, run.items, run.futs,
    run.first, run.last
  local size, packed, ranges = run.chunk, 0, run.ranges
  local function hear(f)
    if f.status == "done" then run.heard = f.values[4] or f.values[3] end
  end
  for r = 1, #ranges, 2 do
    local s, stop = ranges[r], ranges[r + 1]
    while s <= stop do
      local e = math.min(s + size - 1, stop)
      local fut
      if size == 1 then
        fut = group.pool:_submit(group, fn, items[s])
      else
        fut = submit_chunk(group, fn, items, s, e)
      end
      if size < run.grow_to then fut:on_done(hear) end
      futs[#futs + 1], first[#first + 1], last[#last + 1] = fut, s, e
      packed = packed + (e - s + 1)
      s = e + 1
      if packed >= POLL_ITEMS then
        packed = 0
        loop.poll()
        if size < run.grow_to then size = next_size(run, size) end
      end
    end
  end
end

local function cancel_rest(futs)
  for _, f in ipairs(futs) do if not f:done() then f:cancel() end end
end

-- The failed future f, whose items start at index s (n items), as the
-- error map raises: its TaskError with the item's index, and a message
-- that names the item.
local function item_error(f, s, n)
  local err = f.err
  if err.index then return err end
  local failed = type(err.value) == "table" and err.value.item and err.value.message and err.value
  local where
  if failed then
    err.index = s + failed.item - 1
    err.value, err.traceback = failed.value, failed.traceback
    err.message = failed.message
    where = ("item %d: "):format(err.index)
  else
    err.index = s
    where = n > 1 and ("item %d (in its chunk of items %d..%d): "):format(s, s, s + n - 1)
      or ("item %d: "):format(s)
  end
  err.message = where .. tostring(err.message or err.kind)
  if err.traceback then err.traceback = where .. err.traceback end
  return err
end

---------------------------------------------------------------------------
-- a run: the chunks, their outcomes counted and logged

local Run = {}
Run.__index = Run

-- Plans the run: what the log already holds (opts.resume), what is left
-- to run (ranges), the reporter and the log.
local function new_run(what, group, fn, items, opts)
  local chunk, grow_to
  chunk, grow_to, opts = check_map_args(what, group, fn, items, opts)
  local n = #items
  local run = setmetatable({ group = group, fn = fn, items = items, chunk = chunk,
    grow_to = grow_to, n = n, futs = {}, first = {}, last = {}, ranges = { 1, n }, prior = {},
    done_before = 0 }, Run)
  if n == 0 then run.ranges = {} end
  if opts.joblog then
    run.log, run.prior = joblog.open(opts.joblog, fn, items, opts.resume or opts.resume_failed)
    run.ranges, run.done_before, run.failed_before =
      joblog.pending(run.prior, n, opts.resume_failed)
  end
  run.progress = progress.new(opts.progress, n, run.done_before, what)
  return run
end

-- Items s .. s+n-1 ended with f: counted, logged, and their results (when
-- the caller has them: list[from..]) written to the log.
function Run:_ended(f, s, n, list, from)
  local log = self.log
  if f.status == "done" then
    self.progress:add(n)
    if log then
      if self.chunk == 1 then
        log:done_list(s, { first_value(f) }, 1, 1, f.attempts)
      else
        local v = f.values
        log:done_list(s, list, from, n, f.attempts, v[3], v[2])
      end
      log:flush()
    end
  elseif f.status == "failed" then
    local err = item_error(f, s, n)
    self.progress:add(0, 1)
    if log then log:failed(err.index, err); log:flush() end
  end
end

-- The run is over (all ended, or it failed): last report, log closed.
function Run:_close()
  self.progress:finish()
  if self.log then self.log:close() end
end

-- The error a resumed run raises at once: the log holds a failure and
-- failures are not run again.
function Run:_prior_failure()
  local index = self.failed_before
  return index and joblog.error(index, self.prior[index])
end

---------------------------------------------------------------------------
-- map

--- group:map and pool:map (what: which, for errors): the ordered results;
-- on the first failure the rest is cancelled and its error raised.
function map.map(group, fn, items, opts, what)
  local run = new_run(what, group, fn, items, opts)
  local out  -- made once the chunks are out (see below)
  local futs, first, chunk = run.futs, run.first, run.chunk
  local remaining, failure = nil, run:_prior_failure()
  -- a chunk's results go into out as soon as it ends (an error on the way,
  -- as a job log that cannot be written, is the map's failure)
  local function collect_chunk(f, k)
    local s = first[k]
    local n = run.last[k] - s + 1
    if f.status == "done" and chunk == 1 then
      out[s] = first_value(f)
    elseif f.status == "done" then
      n = core.decode_into(f.values[1], out, s)
    end
    run:_ended(f, s, n, out, s)
    if f.status ~= "done" then failure = f.err end
  end
  local function collect(f, k)
    remaining = remaining - 1
    if failure ~= nil then return end
    local ok, err = pcall(collect_chunk, f, k)
    if not ok then failure = err end
  end
  local ok, err = true, nil
  if failure == nil then
    ok, err = pcall(function()
      submit_chunks(run)
      -- the workers start on the chunks while the output is made: a big
      -- one costs a page fault per 256 items
      out = core.array(run.n)
      for i, entry in pairs(run.prior) do
        if entry.state == "done" then out[i] = joblog.value(entry) end
      end
      remaining = #futs
      for k, f in ipairs(futs) do f:on_done(function() collect(f, k) end) end
      loop.wait(function() return failure ~= nil or remaining == 0 end)
    end)
  end
  if not ok then failure = err end  -- interrupted, or a chunk could not be packed
  if failure ~= nil then cancel_rest(futs) end
  run:_close()
  if failure ~= nil then error(failure, 0) end
  return out
end

---------------------------------------------------------------------------
-- imap

--- group:imap and pool:imap: an iterator yielding i, result, in order or
-- (opts.ordered == false) in completion order. Items a resumed run took
-- from the log come in their place (ordered) or first.
function map.imap(group, fn, items, opts, what)
  local run = new_run(what, group, fn, items, opts)
  local ordered = not (opts and opts.ordered == false)
  local futs, first, chunk, n = run.futs, run.first, run.chunk, run.n
  local ok, err = pcall(submit_chunks, run)
  if not ok then cancel_rest(futs); run:_close(); error(err, 0) end
  local finished = {}  -- completion order
  local index = {}
  for k, f in ipairs(futs) do index[f] = k end
  local remaining = #futs
  -- as each chunk ends: counted, logged, its results decoded once (an
  -- error on the way, as a job log that cannot be written, is raised
  -- where the chunk's turn comes)
  local function chunk_ended(f)
    local s = first[index[f]]
    local count = 1
    if f.status == "done" and chunk == 1 then
      f.results, f.n_results = { first_value(f) }, 1
    elseif f.status == "done" then
      f.results, f.n_results = map.chunk_results(f)
      count = f.n_results
    end
    if not run.closed then
      run:_ended(f, s, count, f.results, 1)
      if remaining == 0 or f.status ~= "done" then run.closed = true; run:_close() end
    end
  end
  local function ended(f)
    finished[#finished + 1] = f
    remaining = remaining - 1
    local done, fault = pcall(chunk_ended, f)
    if not done then f.fault = fault end
  end
  for _, f in ipairs(futs) do f:on_done(ended) end
  if remaining == 0 then run.closed = true; run:_close() end
  local prior_failure = run:_prior_failure()
  local k, i, fin_head = 1, 1, 1   -- next future, next index, next finished
  local buf, base, bi, bn = nil, 0, 0, 0
  local function take(f)
    if f.fault or f.status ~= "done" then cancel_rest(futs); error(f.fault or f.err, 0) end
    buf, base, bi, bn = f.results, first[index[f]], 0, f.n_results
  end
  local function from_log()  -- the next item a resumed run took from the log
    while i <= n and not (run.prior[i] and run.prior[i].state == "done") do i = i + 1 end
    if i > n then return nil end
    i = i + 1
    return i - 1, joblog.value(run.prior[i - 1])
  end
  return function()
    if prior_failure then cancel_rest(futs); error(prior_failure, 0) end
    while true do
      if bi < bn then
        bi = bi + 1
        return base + bi - 1, buf[bi]
      end
      if ordered then
        if i > n then return nil end
        local f = futs[k]
        if f and first[k] == i then
          k = k + 1
          f:wait()
          take(f)
          i = i + bn
        else
          return from_log()
        end
      else
        if i <= n then
          local j, v = from_log()
          if j then return j, v end
        end
        if fin_head > #futs then return nil end
        loop.wait(function() return finished[fin_head] ~= nil end)
        take(finished[fin_head])
        fin_head = fin_head + 1
      end
    end
  end
end

return map
