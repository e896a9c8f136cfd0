--- Groups: a batch of tasks with its own options (timeout, retries,
-- retry_on, on_error, grace, backoff). Every task belongs to one group;
-- pool:submit uses the pool's default group. Cancelling or killing a group
-- touches only its own tasks. map and imap are in orch.map.
--
-- Internal interface, for the pool (pool.lua): Group.check_policy(opts,
-- who), group:_add(fut) and group:_settled(fut) (its count of
-- unsettled tasks), group:_decide(err, fut) -> "retry" | "continue" |
-- "fail_fast", group:_backoff(fut) -> seconds, group:_fail_fast(err).
local check = require "orch.check"
local loop = require "orch.loop"
local log = require "orch.log"
local map = require "orch.map"
local first_value = require("orch.future").first

--- A batch of tasks with its own options, made by pool:group(opts).
-- @type Group
local Group = {}
Group.__index = Group
Group.__name = "orch.group"

local OPTIONS = {
  timeout = "positive number", retries = "non-negative integer", retry_on = "table",
  on_error = "string or function", grace = "non-negative number",
  backoff = "non-negative number",
}
local KINDS = { error = true, timeout = true, crashed = true, killed = true, cancelled = true }
local ACTIONS = { continue = true, fail_fast = true, retry = true }

-- Checks the failure-policy options shared by pools and groups (the
-- kinds of the values are checked already): retry_on's kinds, on_error.
function Group.check_policy(opts, who)
  if opts.retry_on ~= nil then
    for i, kind in ipairs(opts.retry_on) do
      if not KINDS[kind] then
        check.fail(who, "option 'retry_on'[%d] must be a failure kind: error, timeout, "
          .. "crashed, killed (got %s)", i, check.show(kind))
      end
    end
  end
  local oe = opts.on_error
  if type(oe) == "string" and oe ~= "continue" and oe ~= "fail_fast" then
    check.fail(who, "option 'on_error' must be \"continue\", \"fail_fast\" or a function (got %s)",
      check.show(oe))
  end
end

local function check_options(opts)
  opts = check.options("pool:group", opts, OPTIONS)
  Group.check_policy(opts, "pool:group")
  return opts
end

function Group.new(pool, opts, is_default)
  local own = is_default and {} or check_options(opts)
  local merged = {}  -- the group's options over the pool's, resolved once
  for k in pairs(OPTIONS) do
    local v = own[k]
    if v == nil then v = pool.opts[k] end
    merged[k] = v
  end
  -- The pool's own group keeps no list of its futures (they would never be
  -- freed); under a policy that may fail fast it keeps the set of those not
  -- yet settled, which is what fail_fast stops.
  local oe = pool.opts.on_error
  local live = is_default and (oe == "fail_fast" or type(oe) == "function") and {} or nil
  return setmetatable({
    pool = pool, opts = merged, futures = {}, live = live, n_pending = 0,
    retry_sets = {}, is_default = is_default or false,
    keeps_args = type(merged.on_error) == "function",  -- a policy function sees fn and args
  }, Group)
end

function Group:_add(fut)
  if self.live then
    self.live[fut] = true
  elseif not self.is_default then
    self.futures[#self.futures + 1] = fut
  end
  self.n_pending = self.n_pending + 1
end

function Group:_settled(fut)
  if self.live then self.live[fut] = nil end
  self.n_pending = self.n_pending - 1
end

local function retry_set(self)
  local list = self.opts.retry_on or { "crashed" }
  local set = self.retry_sets[list]
  if not set then
    set = {}
    for _, k in ipairs(list) do set[k] = true end
    self.retry_sets[list] = set
  end
  return set
end

-- What to do about a failure: "retry", "continue" or "fail_fast".
function Group:_decide(err, fut)
  local on_error = self.opts.on_error or "continue"
  if type(on_error) == "function" then
    local ok, action = pcall(on_error, err, fut)
    if not ok then
      log.error("on_error handler failed: %s", tostring(action))
      return "continue"
    end
    if not ACTIONS[action] then
      log.error("on_error handler returned %s (expected \"retry\", \"continue\" or \"fail_fast\")",
        tostring(action))
      return "continue"
    end
    return action
  end
  if retry_set(self)[err.kind] and fut.attempts <= (self.opts.retries or 0) then
    return "retry"
  end
  return on_error
end

-- Seconds to wait before the next attempt (backoff doubles each time).
function Group:_backoff(fut)
  local b = self.opts.backoff
  if not b or b <= 0 then return 0 end
  return b * 2 ^ (fut.attempts - 1)
end

-- The group's futures not settled yet (a snapshot: stopping them may
-- settle others), in the order to stop them: those that have not started
-- first, then the running ones. A worker asked to stop its running task
-- may be quick to start the next one it holds; that one's stop request
-- must already be there.
local function unfinished(self)
  local waiting, running = {}, {}
  local function add(fut)
    if fut.status == "running" then
      running[#running + 1] = fut
    elseif not fut:done() then
      waiting[#waiting + 1] = fut
    end
  end
  if self.live then
    local list = {}
    for fut in pairs(self.live) do list[#list + 1] = fut end
    table.sort(list, function(a, b) return a.id < b.id end)
    for _, fut in ipairs(list) do add(fut) end
  else
    for _, fut in ipairs(self.futures) do add(fut) end
  end
  return table.move(running, 1, #running, #waiting + 1, waiting)
end

-- On the first failure: cancel the group's queued tasks (they never run)
-- and give the running ones the three-step stop. A group stays failed: its
-- wait returns nil, first_error, and tasks submitted later are cancelled at
-- once. The pool's own group (on_error = "fail_fast" on the pool) stops
-- what it holds at that moment and goes on taking new tasks.
function Group:_fail_fast(err)
  if self.failed_fast then return end
  if not self.is_default then
    self.failed_fast = true
    self.first_error = err
  end
  for _, fut in ipairs(unfinished(self)) do self.pool:_stop_task(fut, "cancelled") end
end

--- Runs fn(...) in a worker, as a task of this group.
-- @param fn a function or "module.name"
-- @param ... its arguments
-- @treturn Future
function Group:submit(fn, ...)
  if getmetatable(self) ~= Group then check.dot_call(Group, "submit") end
  return self.pool:_submit(self, fn, ...)
end

--- Waits until every task of the group has ended. Under fail_fast, returns
-- nil, first_error; else an array whose i-th entry is the first value of
-- the i-th task (for a map's chunk, the list of its results), or its
-- TaskError (n: the count).
-- @tparam[opt] number timeout seconds (nil: no limit)
-- @return results, or nil, "timeout" | first_error
function Group:wait(timeout)
  check.method(self, Group, "wait")
  check.timeout("orch.group", "wait", timeout)
  if not loop.wait(function() return self.n_pending == 0 end, timeout) then
    return nil, "timeout"
  end
  if self.failed_fast then return nil, self.first_error end
  local out = { n = #self.futures }
  for i, fut in ipairs(self.futures) do
    if fut.status ~= "done" then
      out[i] = fut.err
    elseif fut.chunk then
      out[i] = map.chunk_results(fut)
    else
      out[i] = first_value(fut)
    end
  end
  return out
end

--- Cancels the group's tasks that have not ended (see Future:cancel).
function Group:cancel()
  check.method(self, Group, "cancel")
  for _, fut in ipairs(unfinished(self)) do fut:cancel() end
end

--- SIGKILLs the workers running the group's tasks; its queued tasks
-- fail "killed" without running.
function Group:kill()
  check.method(self, Group, "kill")
  for _, fut in ipairs(unfinished(self)) do fut:kill() end
end

--- Like Pool:map, as tasks of this group.
-- @param fn a function or "module.name"
-- @tparam table items
-- @tparam[opt] table opts
-- @treturn table results
function Group:map(fn, items, opts)
  check.method(self, Group, "map")
  return map.map(self, fn, items, opts, "group:map")
end

--- Like Pool:imap, as tasks of this group.
-- @param fn a function or "module.name"
-- @tparam table items
-- @tparam[opt] table opts
-- @treturn function iterator
function Group:imap(fn, items, opts)
  check.method(self, Group, "imap")
  return map.imap(self, fn, items, opts, "group:imap")
end

function Group:__tostring()
  return ("orch.group (%d tasks, %d pending)"):format(#self.futures, self.n_pending)
end

return Group
