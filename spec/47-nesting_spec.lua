-- Nested orchestration: a task or a service that is itself an
-- orchestrator (its own pool, its own supervisor) sees its children's
-- results and exits, and the stop steps reach the grandchildren.
local orch = require "orch"
local H = orch_spec
local procs = require "helper.procs"

describe("a task that runs a pool of its own", function()
  it("maps over a pool of 2 and returns the results", function()
    local pool <close> = orch.pool{ workers = 1, timeout = 20 }
    local got = pool:submit(function(n)
      local inner = require("orch").pool{ workers = 2 }
      local r = inner:map(function(x) return x * x end, { 1, 2, 3, n })
      inner:close()
      assert(inner:join(10))
      return r
    end, 4):result()
    assert.are.same({ 1, 4, 9, 16 }, got)
  end)

  it("sees a grandchild crash: the inner task fails as crashed, the inner pool goes on", function()
    local pool <close> = orch.pool{ workers = 1, timeout = 20 }
    local got = pool:submit(function()
      local inner <close> = require("orch").pool{ workers = 2 }
      local f = inner:submit(function() os.exit(5) end)
      assert(f:wait(10), "the grandchild's exit was never seen")
      local after = inner:submit(function() return "still" end):result()
      return { f:error().kind, f:error().exit_code, after, inner:stats().restarts }
    end):result()
    assert.are.same({ "crashed", 5, "still", 1 }, got)
  end)

  it("runs several nested pools one after the other and leaves no process", function()
    local before = procs.descendants()
    do
      local pool <close> = orch.pool{ workers = 2, timeout = 30 }
      local futs = {}
      for i = 1, 4 do
        futs[i] = pool:submit(function(k)
          local total = 0
          for _ = 1, 3 do
            local inner <close> = require("orch").pool{ workers = 2 }
            for _, v in ipairs(inner:map(function(x) return x + 1 end, { k, k, k })) do
              total = total + v
            end
          end
          return total
        end, i)
      end
      for i = 1, 4 do assert.are.equal(9 * (i + 1), futs[i]:result()) end
    end
    assert.is_true(procs.wait_until(function()
      local alive, zombies = procs.count(before)
      return alive == 0 and zombies == 0
    end, 5))
  end)

  it("passes the stop steps on: a cancelled task's inner tasks are cancelled too", function()
    local mark = os.tmpname()
    local pool <close> = orch.pool{ workers = 1, grace = 10 }
    local fut = pool:submit(function(path)
      local o = require("orch")
      local inner <close> = o.pool{ workers = 2, grace = 10 }
      local futs = {}
      for i = 1, 2 do
        futs[i] = inner:submit(function(p, k)
          local f = assert(io.open(p .. "." .. k, "w")); f:write("started\n"); f:close()
          -- runs when the stop steps end the task, not on a SIGKILL
          local _ <close> = setmetatable({}, { __close = function()
            local g = assert(io.open(p .. "." .. k, "a")); g:write("stopped\n"); g:close()
          end })
          while true do o.sleep(0.01) end
        end, path, i)
      end
      for i = 1, 2 do futs[i]:wait() end
    end, mark)
    assert.is_true(procs.wait_until(function()
      return (procs.slurp(mark .. ".1") or ""):find("started") ~= nil
        and (procs.slurp(mark .. ".2") or ""):find("started") ~= nil
    end, 10))
    local t0 = require("orch.core").now()
    fut:cancel()
    assert.is_true(fut:wait(8), "the cancel did not get through")
    assert.is_true(require("orch.core").now() - t0 < 5, "ended only by the grace SIGKILL")
    for k = 1, 2 do
      assert.are.equal("started\nstopped\n", procs.slurp(mark .. "." .. k))
      os.remove(mark .. "." .. k)
    end
    os.remove(mark)
  end)
end)

describe("a service that runs a supervisor of its own", function()
  it("starts its services, restarts one that fails, and stops them in order", function()
    local out = os.tmpname()
    local sup <close> = orch.supervisor{
      services = {
        { name = "middle", ready = "notify", run = function(path)
          local o = require("orch")
          local inner <close> = o.supervisor{ max_restarts = 5, services = {
            { name = "flaky", run = function(p)
              local f = assert(io.open(p, "a")); f:write("flaky up\n"); f:close()
              if (select(2, (io.open(p):read("a")):gsub("flaky up", ""))) < 2 then
                error("first run fails on purpose")
              end
              while not o.stopping() do o.sleep(0.01) end
              f = assert(io.open(p, "a")); f:write("flaky stopped\n"); f:close()
            end, args = { path } },
          } }
          assert(inner:start())
          o.ready()
          while not o.stopping() do o.sleep(0.01) end
          inner:stop()
          local f = assert(io.open(path, "a")); f:write("middle stopped\n"); f:close()
        end, args = { out } },
      },
    }
    orch.log.handler = function() end
    assert.is_true(sup:start())
    assert.is_true(H.eventually(function()
      return (procs.slurp(out) or ""):find("flaky up\nflaky up\n", 1, true) ~= nil
    end, 10))
    sup:stop()
    orch.log.handler = nil
    assert.are.equal("flaky up\nflaky up\nflaky stopped\nmiddle stopped\n", procs.slurp(out))
    os.remove(out)
  end)
end)
