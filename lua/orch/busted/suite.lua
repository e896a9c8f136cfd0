--- orch.busted.suite: what busted's execute module does for a run (suite
-- start and end, file order by --sort / --shuffle and the seed, --repeat),
-- with the spec files run in parallel (orch.busted.dispatch) and their
-- events published here (orch.busted.replay).
-- Files are started longest first (orch.busted.schedule), but their events
-- are published in busted's own file order: the first unfinished file's
-- events as they come, the later files' once every file before them is
-- done, so the output reads as busted alone would print it.
local dispatch = require "orch.busted.dispatch"
local frame = require "orch.busted.frame"
local replay = require "orch.busted.replay"
local schedule = require "orch.busted.schedule"

local suite = {}

local SIGNALS = { [1] = "SIGHUP", [2] = "SIGINT", [3] = "SIGQUIT", [4] = "SIGILL", [6] = "SIGABRT",
                  [7] = "SIGBUS", [8] = "SIGFPE", [9] = "SIGKILL", [11] = "SIGSEGV",
                  [13] = "SIGPIPE", [14] = "SIGALRM", [15] = "SIGTERM" }

--- suite.collect(busted, get_all, roots, patterns, options) -> file names,
-- as busted's test file loader finds them (and with its errors).
function suite.collect(busted, get_all, roots, patterns, options)
  local list = get_all(roots, patterns, options)
  if #list == 0 then
    local pattern = patterns[1]
    if #patterns > 1 then pattern = "\n\t" .. table.concat(patterns, "\n\t") end
    busted.publish({ "error" }, {}, nil, require("say")("output.no_test_files_match"):format(pattern), {})
  end
  return list
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The shell command that runs one file: the same busted options, then the
-- ones that make it a spec process of this run.
local function commands(state, seed)
  local cli_args = state.cli_args
  local head = { "exec", cli_args.lua or "lua5.4", quote(state.script) }
  local tail = {}
  for _, a in ipairs(state.busted_args) do tail[#tail + 1] = quote(a) end
  for _, a in ipairs({ "--ignore-lua", "--directory=" .. require("pl.path").currentdir(),
                       "--seed=" .. tostring(seed), "--repeat=1", "--output=orch.busted.recorder" }) do
    tail[#tail + 1] = quote(a)
  end
  head, tail = table.concat(head, " "), table.concat(tail, " ")
  return function(file) return head .. " " .. quote(file) .. " " .. tail end
end

-- Why a file ended before its spec process said it was done, or nil.
local function cut_reason(outcome, done, timeout)
  if outcome.kind == "exit" then
    if done then return nil end
    if outcome.how == "signal" then
      return ("the spec process was killed by %s"):format(SIGNALS[outcome.code] or ("signal " .. outcome.code))
    end
    return ("the spec process exited with status %d before the file finished"):format(outcome.code)
  elseif outcome.kind == "timeout" then
    return ("the file ran longer than %g s (--timeout)"):format(timeout)
  elseif outcome.kind ~= "stopped" then
    return "the worker running the file failed: " .. tostring(outcome.message)
  end
end

-- Publishes each file's events in file order (see the header).
local function sequencer(rp, list)
  local buffered, head = {}, 1
  local function apply(idx, item)
    if item.finish then
      if item.why or item.finish.kind == "stopped" then rp:cut(idx, list[idx], item.why) end
      return true
    end
    rp:event(idx, item)
  end
  return function(idx, item)
    if idx ~= head then
      buffered[idx] = buffered[idx] or {}
      table.insert(buffered[idx], item)
      return
    end
    if not apply(idx, item) then return end
    head = head + 1
    while buffered[head] do
      local items, ended = buffered[head], false
      buffered[head] = nil
      for _, it in ipairs(items) do ended = apply(head, it) or ended end
      if not ended then return end
      head = head + 1
    end
  end
end

local function run_files(busted, root, list, state)
  local opts, rp = state.opts, replay.new(busted, root)
  local push, command = sequencer(rp, list), commands(state, busted.randomseed)
  local done, started, took = {}, {}, {}
  dispatch.run{
    count = #list, jobs = opts.jobs, timeout = opts.timeout,
    order = schedule.order(list, schedule.load(schedule.CACHE)),
    command = function(idx) return command(list[idx]) end,
    on_event = function(idx, line)
      started[idx] = started[idx] or busted.monotime()
      local ok, ev = pcall(frame.decode, line)
      if not ok then return io.stderr:write("orch busted: ", list[idx], ": ", ev, "\n") end
      if ev.ch and (ev.ch[1] == "failure" or ev.ch[1] == "error") then state.failed = state.failed + 1 end
      done[idx] = done[idx] or ev.done
      push(idx, ev)
    end,
    on_finish = function(idx, outcome)
      local why = cut_reason(outcome, done[idx], opts.timeout)
      if why then state.failed = state.failed + 1 end
      if outcome.kind ~= "stopped" then took[list[idx]] = busted.monotime() - (started[idx] or busted.monotime()) end
      push(idx, { finish = outcome, why = why and (list[idx] .. ": " .. why) })
    end,
    should_stop = function()
      return state.interrupted or (opts.maxfail and state.failed >= opts.maxfail)
    end,
  }
  schedule.save(schedule.CACHE, took)
  if state.interrupted then
    io.stderr:write("orch busted: interrupted; the tests that finished are reported\n")
  elseif opts.maxfail and state.failed >= opts.maxfail then
    state.stopped = true
    io.stderr:write(("orch busted: stopped after %d failures and errors (--maxfail %d)\n")
      :format(state.failed, opts.maxfail))
  end
end

--- suite.execute(busted, state, runs, options): busted.execute's job.
function suite.execute(busted, state, runs, options)
  local utils = require "busted.utils"
  for i = 1, runs do
    local root = busted.context.get()
    if i > 1 then
      busted.context.clear()
      local fresh = busted.context.get()
      for k, v in pairs(root) do fresh[k] = v end
      root = fresh
      busted.randomseed = tonumber(options.seed) or utils.urandom() or os.time()
      busted.safe_publish("suite", { "suite", "reset" }, root, i, runs)
    end
    local list = { table.unpack(state.files) }
    if options.sort then
      table.sort(list)
    elseif options.shuffle then
      root.randomseed = busted.randomseed
      utils.shuffle(list, busted.randomseed)
    end
    local seed = busted.randomize and busted.randomseed or nil
    if busted.safe_publish("suite", { "suite", "start" }, root, i, runs, seed) then
      run_files(busted, root, list, state)
    end
    busted.safe_publish("suite", { "suite", "end" }, root, i, runs)
    if busted.skipAll or state.interrupted or state.stopped then break end
  end
end

return suite
