--- A broker node's hold on the entries it has: each task's lease renewed
-- (every third of that lease, one timer per lease in use), tasks whose
-- node stopped renewing taken over while workers are free (each judged
-- by its own lease), the entries the group says it holds recovered after
-- a reconnect, and what it holds handed back when it stops. Methods of
-- the node (orch.broker.node installs them); the tasks themselves are
-- orch.broker.feed's.
local core = require "orch.core"
local loop = require "orch.loop"
local log = require "orch.log"
local stream = require "orch.broker.stream"

local Node = {}

--- Keeps the leases of the held tasks whose lease is lease_ms; a task
-- another node took over is cancelled here and its outcome dropped.
function Node:renew(lease_ms)
  local ids = {}
  for _, e in ipairs(self:held_entries()) do
    if e[3] == lease_ms then ids[#ids + 1] = e[1] end
  end
  if #ids == 0 then return false end
  self.writer:command(stream.renew(self.keys, self.name, ids), function(lost)
    if type(lost) ~= "table" or lost.err then return end
    for _, id in ipairs(lost) do
      local r = self.running[id]
      if r and not r.gone then
        log.warn("node %s: lease of %s lost to another node; cancelling it here", self.name, id)
        r.gone = true
        r.fut:cancel()
      end
    end
  end)
  return true
end

--- One renewal timer per lease among the held tasks, every third of it;
-- it goes when no held task has that lease any more.
function Node:keep_renewing(lease_ms)
  if self.renewers[lease_ms] or self.stopping then return end
  local function tick()
    if self.stopping or not self:renew(lease_ms) then
      self.renewers[lease_ms] = nil
      return
    end
    self.renewers[lease_ms] = core.timer(lease_ms / 3000, tick)
  end
  self.renewers[lease_ms] = core.timer(lease_ms / 3000, tick)
end

local CLAIM_MIN = 0.05  -- seconds between two looks for stale tasks, at least

-- Seconds between two looks for stale tasks at the most: half the
-- shortest lease in use (its own for tasks without one included).
function Node:claim_period()
  return math.min(self.lease_ms, self.shortest_lease) / 2000
end

function Node:claim_in(seconds)
  if self.claim_timer then self.claim_timer:stop() end
  self.claim_at = core.now() + seconds
  self.claim_timer = core.timer(seconds, function()
    self.claim_timer = nil
    self:claim()
  end)
end

--- Takes over tasks whose node stopped renewing their lease, each judged
-- by its own lease; looks again as soon as the first task it left may
-- run out of lease (a full pending list is looked at in pages, back to
-- back), and at least every half of the shortest lease clients of the
-- queue have used lately (stream.claim_stale) or of its own.
function Node:claim()
  if self.stopping or self.claiming then return end
  local every = self:claim_period()
  local free = self.workers - self.n_running - self:n_waiting()
  if free <= 0 then return self:claim_in(every) end
  self.claiming = true
  local ok = self.writer:command(stream.claim_stale(self.keys, self.name, free, self.claim_after,
    self.lease_ms), function(reply)
    self.claiming = false
    if self.stopping then return end
    if type(reply) ~= "table" or reply.err or type(reply[1]) ~= "table" then
      return self:claim_in(every)
    end
    for _, e in ipairs(reply[1]) do
      log.info("node %s: took over %s (delivery %d)", self.name, e[1], e[3])
      self:take(e[1], e[2], e[3], e[4] or nil)
    end
    local shortest = tonumber(reply[4]) or -1
    self.shortest_lease = shortest > 0 and shortest or math.huge
    local wait = tonumber(reply[2]) or -1
    if wait >= 0 then self.claim_wait = math.min(self.claim_wait or math.huge, wait / 1000) end
    self.claim_after = reply[3]
    if self.claim_after ~= "-" then return self:claim_in(CLAIM_MIN) end  -- the next page
    local soonest = math.min(self.claim_wait or every, every)
    self.claim_wait = nil
    self:claim_in(math.max(soonest, CLAIM_MIN))
  end)
  if not ok then
    self.claiming = false
    self:claim_in(every)
  end
end

function Node:lease_used(lease_ms)
  if not lease_ms or lease_ms <= 0 or lease_ms >= self.shortest_lease then return end
  self.shortest_lease = lease_ms
  local period = self:claim_period()
  if not self.stopping and self.claim_timer and self.claim_at > core.now() + period then
    self:claim_in(period)
  end
end

--- Takes the entries the group says this node holds but it does not
-- know of: delivered by a read (or a claim) whose answer was lost with
-- the connection. Nobody would renew them; they would be taken over as
-- if this node were lost.
function Node:recover()
  if self.stopping then return end
  self.writer:command(stream.read_own(self.keys, self.name, 10000), function(reply)
    if type(reply) ~= "table" or reply.err or self.stopping then return end
    for _, e in ipairs(reply) do
      if not (self.running[e[1]] or self.queued[e[1]] or self.writing[e[1]]) then
        log.info("node %s: %s was delivered here as the connection went; running it", self.name, e[1])
        self:take(e[1], e[2], e[3])
      end
    end
  end)
end

--- Gives every entry it holds back for another node at once (running
-- tasks' outcomes dropped), sent(reply) for each: returns the entries
-- sent back (id -> true) and how many.
function Node:hand_back_held(sent)
  local back, n = {}, 0
  for _, r in pairs(self.running) do r.gone = true end
  for _, e in ipairs(self:held_entries()) do
    if self.writer:command(stream.hand_back(self.keys, self.name, e[1], e[2]), sent) then
      back[e[1]], n = true, n + 1
    end
  end
  return back, n
end

--- Hands back what it holds and what was delivered to it but never
-- taken; waits (at most 5 s) for the answers.
function Node:hand_back_all()
  local pending = 0
  local function sent() pending = pending - 1 end
  local back, n = self:hand_back_held(sent)
  pending = n
  -- what was delivered to this node but never taken (a read answered
  -- as it stopped) goes back too
  local held = self.writer:call(stream.held(self.keys, self.name, 10000), 5)
  for _, p in ipairs(type(held) == "table" and held or {}) do
    if not back[p[1]] and not self.writing[p[1]] then
      pending = pending + 1
      self.writer:command(stream.hand_back(self.keys, self.name, p[1], p[4]), sent)
    end
  end
  loop.wait(function() return pending <= 0 end, 5)
end

return Node
