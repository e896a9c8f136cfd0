-- Where orch.status() says a pool's tasks come from: read from each
-- future's packed task (core.task_source), not from the function, which
-- futures do not keep. core.task_source on strings that hold no task.
local orch = require "orch"
local core = require "orch.core"
local H = orch_spec

local function where(fn)
  local info = debug.getinfo(fn, "S")
  return ("%s:%d"):format(info.short_src, info.linedefined)
end

-- Runs until the file at path exists.
local function wait_for_file(path)
  while not io.open(path) do os.execute("sleep 0.02") end
  return "seen"
end

local function adder(n)
  return function(x) return x + n end
end

-- The report's entry of a pool of 1 worker holding n_tasks tasks, and
-- its tasks by id.
local function pool_entry(n_tasks)
  for _, p in ipairs(orch.status().pools) do
    if #p.tasks == n_tasks and p.workers == 1 then
      local by_id = {}
      for _, t in ipairs(p.tasks) do by_id[t.id] = t end
      return p, by_id
    end
  end
end

describe("orch.status() task sources", function()
  it("names each task's function: file:line, 'module.name' or [C]", function()
    local path = os.tmpname()
    os.remove(path)
    local pool = orch.pool{ workers = 1 }
    finally(function()  -- a failed assertion must not leave the task waiting
      local f = io.open(path, "w")
      if f then f:close() end
      pool:terminate()
      os.remove(path)
    end)
    local futs = {
      pool:submit(wait_for_file, path),
      pool:submit("string.rep", "a", 2),
      pool:submit(string.rep, "b", 2),
      pool:submit(adder(1), 1),
      pool:submit(adder(2), 1),       -- another closure of the same code
      pool:submit(function() return "inline" end),
    }
    local inline_line = debug.getinfo(1, "l").currentline - 2
    local tasks
    local deadline = core.now() + 10
    repeat
      orch.sleep(0.02)
      tasks = select(2, pool_entry(#futs))
    until (tasks and tasks[futs[1].id].state == "running") or core.now() > deadline
    assert.truthy(tasks, "the pool's running task was not seen")
    assert.equal(where(wait_for_file), tasks[futs[1].id].source)
    assert.matches("^spec/84%-status_sources_spec%.lua:%d+$", tasks[futs[1].id].source)
    assert.equal("string.rep", tasks[futs[2].id].source)
    assert.equal("[C]", tasks[futs[3].id].source)
    assert.equal(where(adder(0)), tasks[futs[4].id].source)
    assert.equal(where(adder(0)), tasks[futs[5].id].source)
    assert.equal("spec/84-status_sources_spec.lua:" .. inline_line, tasks[futs[6].id].source)
    -- asked again (from the cache by function id): the same
    local _, again = pool_entry(#futs)
    for id, t in pairs(tasks) do assert.equal(t.source, again[id].source) end
    local text = require("orch.status").format(orch.status())
    assert.matches(("running +pid %%d+ +age [%%d.]+s +%s"):format(where(wait_for_file):gsub("%p", "%%%0")), text)
    assert(io.open(path, "w")):close()
    assert.equal("seen", futs[1]:result())
  end)

  -- In a fresh interpreter, whose cache of function ids this trial fills:
  -- the tasks after that carry their code and share no id.
  it("past the bound of function ids, names each task that carries its code by that code", function()
    local out = H.run_lua([[
      local orch = require "orch"
      local core = require "orch.core"
      local function made(name, body)
        return assert(load("return function(...) " .. body .. " end", "=" .. name))()
      end
      local known, max = core.functions_known()
      for k = known + 1, max do core.pack_task(made("filler" .. k, "return " .. k)) end
      print(("known %d of %d"):format(core.functions_known(), max))
      print(("new code's id %d"):format(select(2, core.task_info(core.pack_task(made("probe", "return 0"))))))
      local path = os.tmpname()
      os.remove(path)
      local pool = orch.pool{ workers = 1 }
      local futs = {
        pool:submit(made("waiter", "while not io.open(...) do os.execute('sleep 0.02') end"), path),
        pool:submit(made("first", "return 1")),
        pool:submit(made("second", "return 2")),
      }
      local by_id, deadline = {}, core.now() + 30
      repeat
        orch.sleep(0.02)
        for _, p in ipairs(orch.status().pools) do
          for _, t in ipairs(p.tasks) do by_id[t.id] = t end
        end
      until (by_id[futs[1].id] and by_id[futs[1].id].state == "running") or core.now() > deadline
      for i, f in ipairs(futs) do print(("source %d %s"):format(i, by_id[f.id].source)) end
      assert(io.open(path, "w")):close()
      print(("results %s %s %s"):format(futs[1]:result(), futs[2]:result(), futs[3]:result()))
      os.remove(path)
      pool:terminate()
    ]])
    local known, max = out:match("known (%d+) of (%d+)\n")
    assert.equal(max, known, out)
    assert.matches("new code's id -1\n", out, 1, true)
    assert.matches("source 1 waiter:1\nsource 2 first:1\nsource 3 second:1\n", out, 1, true)
    assert.matches("results nil 1 2\n", out, 1, true)
  end)
end)

describe("core.task_source", function()
  it("reads a packed task without running it", function()
    local ran = false
    local function f() ran = true end
    assert.equal(where(f), core.task_source(core.pack_task(f, 1, { 2 })))
    assert.equal("os.time", core.task_source(core.pack_task("os.time")))
    assert.equal("[C]", core.task_source(core.pack_task(os.time)))
    assert.is_false(ran)
  end)

  it("packs a task as a userdata and a big one in pieces, both read by task_info and task_bytes", function()
    local tasks = {}
    for i = 1, 20000 do tasks[i] = core.pack_task(where, i) end
    -- not strings: a million pending tasks do not fill the string table
    assert.are.equal("userdata", type(tasks[1]))
    assert.is_nil(getmetatable(tasks[1]))
    local bytes = core.task_bytes(tasks[7])
    local size, fnid = core.task_info(tasks[7])
    assert.are.equal(#bytes, size)
    assert.are.equal(("j"):unpack(bytes), fnid)
    assert.is_true(fnid > 0 or fnid == -1)
    assert.are.equal(bytes, core.task_bytes(core.pack_task(where, 7)))
    local big = core.pack_task(where, ("x"):rep(2 << 20), 3)
    assert.are.equal("table", type(big))
    local whole = core.task_bytes(big)
    assert.are.equal(#whole, (core.task_info(big)))
    assert.are.equal(0, select(2, core.task_info(core.pack_task("os.time"))))
    -- whatever is not a packed task is refused, naming the argument
    for _, v in ipairs({ "a string", {}, { "short" }, { ("j"):pack(1), 2 }, io.stdout, 42 }) do
      assert.matches("bad argument #1 to 'orch.core.task_info' %(packed task expected",
        select(2, pcall(core.task_info, v)))
      assert.matches("bad argument #1 to 'orch.core.task_bytes' %(packed task expected",
        select(2, pcall(core.task_bytes, v)))
    end
  end)

  it("reads a task packed in pieces (it holds long strings) from its first piece", function()
    local function f(s) return #s end
    local task = core.pack_task(f, ("x"):rep(2 << 20))
    assert.are.equal("table", type(task))
    assert.equal(where(f), core.task_source(task))
    assert.is_nil(core.task_source({}))
    assert.is_nil(core.task_source({ "short" }))
  end)

  it("returns nil for strings that hold no task, raises for a non-string", function()
    local fnid0 = ("j"):pack(0)
    for _, s in ipairs({ "", "short", ("\0"):rep(8), fnid0 .. "\0", fnid0 .. "\6\0\0\0",
                         ("j"):pack(-1) .. "x", ("j"):pack(math.maxinteger) .. "x", 12345 }) do
      assert.is_nil(core.task_source(s), ("%q"):format(s))
    end
    assert.matches("bad argument #1 to 'orch.core.task_source' %(string or packed task expected, got no value%)",
      select(2, pcall(core.task_source)))
    assert.matches("bad argument #1 to 'orch.core.task_source' %(string or packed task expected, got boolean%)",
      select(2, pcall(core.task_source, true)))
  end)

  it("never crashes on random strings, random tails or cut tasks", function()
    math.randomseed(os.time())
    local function noise(n)
      local b = {}
      for i = 1, n do b[i] = string.char(math.random(0, 255)) end
      return table.concat(b)
    end
    local task = core.task_bytes(core.pack_task(wait_for_file, "x"))
    -- the shortest head of the task that names its function: its id, and
    -- its code as well when the task carries it (this process has handed
    -- out all its function ids: more specs ran in it before this one)
    local prefix
    for n = 1, #task do
      if core.task_source(task:sub(1, n)) then prefix = task:sub(1, n) break end
    end
    local fnid = ("j"):unpack(task)
    assert.truthy(prefix, "no head of the task names its function")
    assert.is_true(fnid > 0 or fnid == -1, "fnid " .. fnid)
    if fnid > 0 then assert.equal(("j"):packsize() + 1, #prefix) end
    for _ = 1, 3000 do
      local s = noise(math.random(0, 64))
      assert.is_nil(core.task_source(s), ("%q"):format(s))
      -- fnid 0 and any value after it: a name, [C] or nil
      local r = core.task_source(("j"):pack(0) .. noise(math.random(0, 64)))
      assert.is_true(r == nil or type(r) == "string")
      -- a known function id (or the code itself): its source, whatever follows
      assert.equal(where(wait_for_file), core.task_source(prefix .. noise(math.random(0, 32))))
    end
    for n = 0, #task do
      local r = core.task_source(task:sub(1, n))
      assert.is_true(r == nil or r == where(wait_for_file))
    end
  end)
end)
