--- The running supervisors as one party of signal.two_stage: the first
-- INT/TERM starts the ordered shutdown of every one of them, the second
-- kills what is left; once none runs, the waiting script gets an
-- Interrupted error for the first signal (its <close> handlers run),
-- which, left uncaught, ends the process by that signal.
--
-- A supervisor joins while it runs and leaves when it has finished. What
-- the party asks of its members (it never requires orch.supervisor):
--   sup:_shutdown(why)   start the ordered stop of every service
--   sup:_kill_all(why)   kill every service still alive
--   sup:_check()         move on; may call party.leave(sup)
--
-- Invariants: the two-stage default is installed exactly while a
-- supervisor is a member; the interruption is armed once, when the last
-- member leaves after a signal.
local loop = require "orch.loop"
local signal = require "orch.signal"

local party = {}

local members = {}  -- the running supervisors
local n_members = 0
local remove_default = nil
local signalled = nil  -- the first signal's name

-- Once no supervisor runs after a signal: the waiting script is
-- interrupted by the first signal.
local function interrupt_if_down()
  if n_members == 0 and signalled then
    loop.interrupt(signalled)
    signalled = nil
  end
end

-- After each signal: the supervisors move on.
local function after_signal()
  for sup in pairs(members) do sup:_check() end
  interrupt_if_down()
end

--- party.stop(name): signal.two_stage's first stage.
function party.stop(name)
  signalled = name
  for sup in pairs(members) do sup:_shutdown(("signal %s"):format(name)) end
  after_signal()
end

--- party.kill(name): signal.two_stage's second stage.
function party.kill(name)
  for sup in pairs(members) do sup:_kill_all(("second signal %s"):format(name)) end
  after_signal()
end

--- party.join(sup): sup runs; the first member installs the two-stage
-- default. Joining twice is harmless.
function party.join(sup)
  if members[sup] then return end
  members[sup] = true
  n_members = n_members + 1
  if not remove_default then remove_default = signal.two_stage(party) end
end

--- party.leave(sup): sup has finished; the last member removes the
-- default and, after a signal, arms the interruption.
function party.leave(sup)
  if not members[sup] then return end
  members[sup] = nil
  n_members = n_members - 1
  if n_members == 0 then
    if remove_default then
      remove_default()
      remove_default = nil
    end
    interrupt_if_down()
  end
end

return party
