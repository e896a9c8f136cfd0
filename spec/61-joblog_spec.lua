-- The job log of long runs: written line by line, read back for a resume,
-- a torn last line ignored and repaired, a log of another run refused.
local H = orch_spec
local joblog = require "orch.joblog"

local function inc(x) return x + 1 end

local function slurp(path) return H.read_file(path) end

local function lines_of(text)
  local lines = {}
  for l in text:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  return lines
end

describe("joblog", function()
  local path
  before_each(function() path = os.tmpname() end)
  after_each(function() os.remove(path) end)

  it("writes a header and one line per item, human-readable", function()
    local log = joblog.open(path, inc, { 1, 2, 3 })
    log:done(1, 2, 1, 0.5, 4242)
    log:failed(3, require("orch").TaskError.new({ kind = "error", message = "item 3: bad\tthing\nhere",
      attempts = 2, pid = 4243 }), 0.25)
    log:close()
    local lines = lines_of(slurp(path))
    assert.are.equal(4, #lines)
    assert.matches("^# orch joblog 1\tfn=%x+\titems=3\titems_sha256=%x+\t%d+%-", lines[1])
    assert.are.equal("index\tstate\tattempts\tseconds\tpid\tresult\terror", lines[2])
    assert.matches("^1\tdone\t1\t0%.500000\t4242\t%x+\t$", lines[3])
    assert.are.equal("3\terror\t2\t0.250000\t4243\t\titem 3: bad\\tthing\\nhere", lines[4])
  end)

  it("writes a chunk's done lines in one call, each value encoded on its own", function()
    local core = require "orch.core"
    local shared = { 1, 2 }
    local list = { "skip", 7, "a\tb\n", { shared, shared }, 2 ^ 53, false }
    local text = core.joblog_done(41, list, 2, 5, "\tdone\t3\t0.1\t99\t")
    local lines = lines_of(text)
    assert.are.equal(5, #lines)
    for j = 1, 5 do
      local index, hex = lines[j]:match("^(%d+)\tdone\t3\t0%.1\t99\t(%x*)\t$")
      assert.are.equal(tostring(40 + j), index)
      local bytes = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
      assert.are.equal(core.encode(list[j + 1]), bytes)
      assert.are.same(list[j + 1], core.decode(bytes))
    end
    assert.are.equal("", core.joblog_done(1, list, 1, 0, "\t"))
    assert.has_error(function() core.joblog_done(1, list, 1, -1, "\t") end)
    assert.has_error(function() core.joblog_done(1, { io.stdout }, 1, 1, "\t") end,
      "result: cannot send userdata")
  end)

  it("reads back what a resumed run needs: values and failures", function()
    local value = { name = "x", list = { 1.5, -0.0, "a\0b" } }
    local log = joblog.open(path, inc, { 1, 2, 3 })
    log:done(2, value, 1, 0.1, 10)
    log:failed(3, require("orch").TaskError.new({ kind = "crashed", message = "crashed: killed by SIGKILL",
      attempts = 1, pid = 11 }))
    log:close()
    local log2, prior = joblog.open(path, inc, { 1, 2, 3 }, true)
    log2:close()
    assert.is_nil(prior[1])
    assert.are.same(value, joblog.value(prior[2]))
    local err = joblog.error(3, prior[3])
    assert.is_true(require("orch").TaskError.is(err))
    assert.are.same({ "crashed", "crashed: killed by SIGKILL", 3, 11 }, { err.kind, err.message, err.index, err.pid })
    -- the resume is noted; the earlier lines stay
    assert.matches("\n# resumed ", slurp(path))
  end)

  it("ignores a torn last line and repairs the file before appending", function()
    local log = joblog.open(path, inc, { 1, 2, 3 })
    log:done(1, 100, 1, 0.1, 10)
    log:close()
    local whole = slurp(path)
    -- a line cut anywhere: inside the result, before its newline
    for _, torn in ipairs({ "2\tdone\t1\t0.1", "2\tdone\t1\t0.100000\t10\t0a", "2\tdone\t1\t0.100000\t10\t" ..
        ("%02x"):rep(3):format(1, 2, 3) .. "\t" }) do
      local f = assert(io.open(path, "wb")); f:write(whole, torn); f:close()
      local log2, prior = joblog.open(path, inc, { 1, 2, 3 }, true)
      log2:done(3, 300, 1, 0.1, 10)
      log2:close()
      assert.are.equal(100, joblog.value(prior[1]))
      assert.is_nil(prior[2])
      local _, again = joblog.open(path, inc, { 1, 2, 3 }, true)
      assert.are.equal(300, joblog.value(again[3]))
      assert.is_nil(again[2])
      assert.is_nil(slurp(path):find(torn, 1, true))
    end
  end)

  it("starts afresh from a torn header or an empty file", function()
    local f = assert(io.open(path, "wb")); f:write("# orch jobl"); f:close()
    local log, prior = joblog.open(path, inc, { 1 }, true)
    log:done(1, 2)
    log:close()
    assert.is_nil(next(prior))
    local _, again = joblog.open(path, inc, { 1 }, true)
    assert.are.equal(2, joblog.value(again[1]))
  end)

  it("refuses a log of another function, other items, or no log at all", function()
    joblog.open(path, inc, { 1, 2, 3 }):close()
    local function dec(x) return x - 1 end
    assert.has_error(function() joblog.open(path, dec, { 1, 2, 3 }, true) end,
      ("joblog '%s' was written for another function: not resuming from it (remove it or use another path)"):format(path))
    assert.has_error(function() joblog.open(path, inc, { 1, 2, 4 }, true) end,
      ("joblog '%s' was written for other items (3 items, this run has 3): not resuming from it "
        .. "(remove it or use another path)"):format(path))
    assert.has_error(function() joblog.open(path, inc, { 1, 2 }, true) end)
    local k = 1
    local function with_upvalue(x) return x + k end
    joblog.open(path, with_upvalue, { 1 }):close()
    k = 2
    assert.has_error(function() joblog.open(path, with_upvalue, { 1 }, true) end)
    local f = assert(io.open(path, "wb")); f:write("hello\nworld\n"); f:close()
    assert.has_error(function() joblog.open(path, inc, { 1 }, true) end,
      ("joblog '%s' is not an orch job log (its first line is no header)"):format(path))
  end)

  it("names a bad line that is not the last", function()
    local log = joblog.open(path, inc, { 1, 2 })
    log:done(1, 1)
    log:close()
    local f = assert(io.open(path, "ab")); f:write("garbage\n2\tdone\t1\t0\t1\t0a\t\n"); f:close()
    assert.has_error(function() joblog.open(path, inc, { 1, 2 }, true) end,
      ("joblog '%s': line 4 does not read: \"garbage\""):format(path))
  end)

  it("names the file and the system's reason when it cannot open or write it", function()
    assert.has_error(function() joblog.open("/nonexistent/run.joblog", inc, { 1 }) end,
      "joblog '/nonexistent/run.joblog': cannot open: No such file or directory")
    -- /dev/full takes the open and refuses every write
    assert.has_error(function() joblog.open("/dev/full", inc, { 1 }) end,
      "joblog '/dev/full': cannot write: No space left on device")
  end)

  it("starts afresh without resume", function()
    local log = joblog.open(path, inc, { 1 })
    log:done(1, 2)
    log:close()
    local _, prior = joblog.open(path, inc, { 1 })
    assert.is_nil(next(prior))
    assert.are.equal(2, #lines_of(slurp(path)))
  end)

  it("fingerprints the same in any process, whatever a table's iteration order", function()
    local code = [[
      local joblog = require "orch.joblog"
      local conf = {}
      for i = %d, %d, %d do conf["k" .. i] = i end
      local function f(x) return conf, x end
      local items = { { a = 1, b = "two", c = { 3.5, true } }, "s", 7, 0.5 }
      print(joblog.fingerprint(f, items))
    ]]
    local a = H.run_lua(code:format(1, 50, 1))
    local b = H.run_lua(code:format(50, 1, -1))
    assert.matches("^%x+\t%x+\n$", a)
    assert.are.equal(a, b)
    local fa = joblog.fingerprint("mod.fn", { 1 })
    assert.are_not.equal(fa, (joblog.fingerprint("mod.fn2", { 1 })))
    assert.are.equal(select(2, joblog.fingerprint(inc, { 1, 2 })), select(2, joblog.fingerprint(inc, { 1, 2 })))
    assert.are_not.equal(select(2, joblog.fingerprint(inc, { 1, 2 })), select(2, joblog.fingerprint(inc, { 2, 1 })))
    assert.is_truthy(joblog.fingerprint(os.time, {}))
  end)
end)

describe("joblog.pending", function()
  local function e(state, line) return { state = state, line = line } end

  it("gives the ranges left to run, the count done and the first failure", function()
    local prior = { [2] = e("done", 3), [3] = e("done", 4), [5] = e("error", 6), [6] = e("crashed", 5) }
    assert.are.same({ { 1, 1, 4, 4, 7, 8 }, 2, 6 }, { joblog.pending(prior, 8, false) })
    assert.are.same({ { 1, 1, 4, 8 }, 2 }, { joblog.pending(prior, 8, true) })
    assert.are.same({ { 1, 3 }, 0 }, { joblog.pending({}, 3) })
    assert.are.same({ {}, 2 }, { joblog.pending({ e("done", 3), e("done", 4) }, 2) })
  end)
end)
