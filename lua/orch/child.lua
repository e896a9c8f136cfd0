--- Talking to children: what pools and supervisors do alike with every
-- process they fork.
--
-- - Frames. Besides what its owner reads itself (a worker's RESULT and
--   ERROR, a service's READY), a child sends LOG (delivered under the
--   child's name), CALL (answered by the handler registered for its kind
--   with child.on_call) and frames that did not decode (logged; the owner
--   decides whether the channel can still be trusted).
-- - The three stop steps for one run in a child (a task id, or 0 for a
--   service; DESIGN.md): ask now, interrupt a moment later, SIGKILL of the
--   child's process group after the grace period.
--
-- Modules that answer CALLs (orch.queue) register here, with what they
-- need to hear about a child's stop steps and exit; pools and supervisors
-- never know them.
local core = require "orch.core"
local log = require "orch.log"

local MSG = core.msg
local LOG, CALL, REPLY = MSG.LOG, MSG.CALL, MSG.REPLY
local STOP_ASK = MSG.STOP_ASK

-- A run asked to stop is interrupted this long after the request (capped
-- by half its grace period).
local INTERRUPT_AFTER = 0.02

local child = {}

local handlers = {}  -- kind -> serve(proc, ...)
local watchers = {}  -- { stopping = fn(proc, id, step), exited = fn(proc) }, ...

--- Registers serve(proc, ...) as the answer to CALL frames whose first
-- value is kind; serve sends the REPLY (now or later). watch, if given,
-- hears of children's stop steps, watch.stopping(proc, id, "ask" |
-- "interrupt"), and exits, watch.exited(proc).
function child.on_call(kind, serve, watch)
  handlers[kind] = serve
  if watch then watchers[#watchers + 1] = watch end
end

local function tell(event, proc, id, step)
  for i = 1, #watchers do
    local fn = watchers[i][event]
    if fn then fn(proc, id, step) end
  end
end

--- Logs a protocol error of proc's channel (a frame that did not decode,
-- a result out of order) under the child's name.
function child.protocol_error(proc, name, why)
  log.deliver("error", "protocol: " .. tostring(why), name, proc:pid())
end

--- Handles a frame of proc (named name) that its owner does not read
-- itself: LOG, CALL, or type 0 (did not decode). Returns false for a frame
-- that did not decode, true otherwise (unknown types are ignored).
function child.frame(proc, name, type, a, ...)
  if type == LOG then
    log.deliver(a, (...), name, proc:pid())
  elseif type == CALL then
    local serve = handlers[a]
    if serve then
      serve(proc, ...)
    else
      pcall(proc.send, proc, REPLY, nil, ("orch: unknown call '%s'"):format(tostring(a)))
    end
  elseif type == 0 then
    child.protocol_error(proc, name, "bad frame: " .. tostring(a))
    return false
  end
  return true
end

--- The stop steps for run id of proc (a task id; 0 for a service): ask
-- now; interrupt it with level (STOP_CANCEL or STOP_TIMEOUT; nil: no
-- interrupt step) after a moment; SIGKILL proc's process group after
-- grace seconds. The later steps run only while current() is true (the
-- run has not ended); on_kill() runs just before the SIGKILL. Their timers
-- are kept in holder.stop_timer and holder.kill_timer (see clear_steps).
function child.stop(proc, id, holder, grace, level, current, on_kill)
  proc:stop(id, STOP_ASK)
  tell("stopping", proc, id, "ask")
  if level then
    holder.stop_timer = core.timer(math.min(INTERRUPT_AFTER, grace / 2), function()
      holder.stop_timer = nil
      if current() then
        proc:stop(id, level)
        tell("stopping", proc, id, "interrupt")
      end
    end)
  end
  holder.kill_timer = core.timer(grace, function()
    holder.kill_timer = nil
    if current() then
      on_kill()
      proc:kill()
    end
  end)
end

--- Stops the step timers child.stop left in holder.
function child.clear_steps(holder)
  local t = holder.stop_timer
  if t then t:stop(); holder.stop_timer = nil end
  t = holder.kill_timer
  if t then t:stop(); holder.kill_timer = nil end
end

--- proc has exited and every frame it wrote was handled.
function child.exited(proc)
  tell("exited", proc)
end

return child
