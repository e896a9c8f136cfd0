--- Seed 000: a daemon whose worker must stop first, and whose result writer
-- must then flush its buffer and stop.
--
--   lua5.4 scripts/examples/ordered_shutdown.lua      then Ctrl-C (or kill -TERM)
--
-- "worker" produces numbered results into a queue; "results" takes them,
-- buffers them and writes them out every FLUSH_EVERY items and once more
-- when it is asked to stop. The worker lists "results" in `after`, so it
-- starts after the writer is ready and is stopped before it: when the
-- writer is asked to stop, every result the worker put is in the queue.
-- Both print what they did; the two counts are equal.
--
-- Environment: ORCH_EXAMPLE_OUT=file writes the results there (one a line,
-- appended), ORCH_EXAMPLE_DELAY=seconds between two results (default 0.001).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath
local orch = require "orch"

local FLUSH_EVERY = 50
local out_path = os.getenv("ORCH_EXAMPLE_OUT")
local delay = tonumber(os.getenv("ORCH_EXAMPLE_DELAY") or "0.001")

local results = orch.queue{ capacity = 1000 }

local function say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

local function worker(q)
  local n = 0
  while not orch.stopping() do
    n = n + 1
    assert(q:put(n))              -- blocks while the queue is full
    if delay > 0 then orch.sleep(delay) end
  end
  orch.log.info("asked to stop after %d results", n)
  say("produced %d", n)
end

local function result_writer(q)
  local out = out_path and assert(io.open(out_path, "a"))
  local buffer, written, last, in_order = {}, 0, 0, true
  local function flush()
    for _, v in ipairs(buffer) do
      if v ~= last + 1 then in_order = false end
      last = v
      if out then out:write(v, "\n") end
    end
    if out then out:flush() end
    written = written + #buffer
    buffer = {}
  end
  orch.ready()
  while not orch.stopping() do
    local v = q:get(1)
    if v then
      buffer[#buffer + 1] = v
      if #buffer >= FLUSH_EVERY then flush() end
    end
  end
  -- asked to stop: the worker has exited, everything it put is here
  local pending = #buffer
  while true do
    local v = q:get(0)
    if v == nil then break end
    buffer[#buffer + 1] = v
  end
  orch.log.info("asked to stop: flushing %d buffered and %d queued results", pending, #buffer - pending)
  flush()
  if out then out:close() end
  say("written %d (%s)", written, in_order and "in order, no gaps, no duplicates" or "OUT OF ORDER")
end

local sup = orch.supervisor{
  shutdown_timeout = 10,
  services = {
    { name = "results", run = result_writer, args = { results }, ready = "notify", grace = 5 },
    { name = "worker", run = worker, args = { results }, after = { "results" }, grace = 5 },
  },
}
orch.log.info("running: press Ctrl-C or send TERM to pid %d", require("orch.core").getpid())
local ok, err = sup:run()
if not ok then
  io.stderr:write(err, "\n")
  os.exit(1)
end
