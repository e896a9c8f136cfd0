-- A broker node for the specs: serve(url, queue, workers, lease, grace),
-- then exit 0 once stopped in order by INT or TERM.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("ORCH_CPATH") or "build/?.so") .. ";" .. package.cpath
local url, queue, workers, lease, grace = ...
local _, sig = require("orch.broker.node").serve{
  broker = url, queue = queue, workers = tonumber(workers), lease = tonumber(lease),
  grace = tonumber(grace),
}
io.stderr:write("node stopped by ", sig, "\n")
os.exit(0)
