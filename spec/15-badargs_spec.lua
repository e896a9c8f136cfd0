-- Misuse raises at the edge with a message that says what and where, and
-- leaves no process behind.
local orch = require "orch"
local H = orch_spec

describe("bad arguments", function()
  after_each(function()
    local kids = H.children()
    assert.are.same({}, kids)
  end)

  it("orch.pool rejects unknown options and lists the valid ones", function()
    local ok, err = pcall(orch.pool, { worker = 2 })
    assert.is_false(ok)
    assert.matches("unknown option 'worker'", err)
    assert.matches("valid: .*workers", err)
    assert.matches("max_tasks_per_worker", err)
  end)

  it("orch.pool checks types and ranges", function()
    assert.has_error(function() orch.pool{ workers = "2" } end,
      "orch.pool: option 'workers' must be a number, got string")
    assert.has_error(function() orch.pool{ workers = 0 } end,
      "orch.pool: option 'workers' must be a positive integer, got 0")
    assert.has_error(function() orch.pool{ workers = -3 } end)
    assert.has_error(function() orch.pool{ workers = 1.5 } end)
    assert.has_error(function() orch.pool{ timeout = -1 } end)
    assert.has_error(function() orch.pool{ on_error = "explode" } end)
    assert.has_error(function() orch.pool{ retry_on = { "sometimes" } } end)
    assert.has_error(function() orch.pool("four") end,
      "orch.pool: options must be a table, got string")
  end)

  it("submit rejects what is not a function and a closed pool", function()
    local pool = orch.pool{ workers = 1 }
    assert.has_error(function() pool:submit(42) end,
      "orch.pool: submit expects a function or a 'module.name' string, got number")
    pool:close()
    assert.has_error(function() pool:submit(print) end, "orch.pool: submit on a closed pool")
    pool:join()
  end)

  it("map and imap reject a non-table and bad options", function()
    local pool <close> = orch.pool{ workers = 1 }
    assert.has_error(function() pool:map(print, "abc") end,
      "pool:map: items must be a table (an array), got string")
    assert.has_error(function() pool:imap(print, 3) end)
    assert.has_error(function() pool:map(print, {}, { chunk = 0 }) end)
    assert.has_error(function() pool:map(print, {}, { chunks = 10 }) end,
      "pool:map: unknown option 'chunks' (valid: chunk, joblog, ordered, progress, resume, resume_failed)")
  end)

  it("a 'module.name' that does not exist fails the task clearly", function()
    local pool <close> = orch.pool{ workers = 1 }
    local fut = pool:submit("no_such_module.fn")
    fut:wait()
    assert.are.equal("error", fut:error().kind)
    assert.matches("no_such_module", fut:error().message)
  end)

  it("orch.core checks its arguments and names them", function()
    local core = require "orch.core"
    assert.has_error(function() core.pack_task(5) end)
    assert.matches("bad argument #1 to 'orch.core.pack_task' %(function or module name expected", select(2, pcall(core.pack_task, 5)))
    assert.matches("bad argument #1", select(2, pcall(core.pack_chunk, print, print, {}, 1, 2)))
    assert.matches("bad argument #3", select(2, pcall(core.pack_chunk, function() end, print, 7, 1, 2)))
    assert.matches("bad argument #1 to 'orch.core.array'", select(2, pcall(core.array, -1)))
    assert.matches("bad argument #2 to 'orch.core.spawn' %(fn, on_message, on_exit for each child",
      select(2, pcall(core.spawn, print)))
    assert.matches("bad argument #3 to 'orch.core.spawn' %(function expected",
      select(2, pcall(core.spawn, print, print, 3)))
    assert.matches("bad argument #4 to 'orch.core.spawn' %(fn, on_message, on_exit",
      select(2, pcall(core.spawn, print, print, print, print)))
    assert.matches("must not be negative", select(2, pcall(core.timer, -1, print)))
    assert.matches("bad argument #2 to 'orch.core.timer'", select(2, pcall(core.timer, 1, 42)))
    assert.matches("unknown signal 'NOPE'", select(2, pcall(core.signum, "NOPE")))
    assert.matches("signal must be INT", select(2, pcall(core.on_signal, "KILL", print)))
    assert.matches("only in a child process", select(2, pcall(core.serve)))
    assert.matches("only in a child process", select(2, pcall(core.call, "x")))
    assert.has_error(function() orch.on_signal("BOGUS", print) end,
      "orch.on_signal: unknown signal 'BOGUS' (valid: INT, TERM, HUP, QUIT, USR1, USR2)")
    assert.has_error(function() orch.sleep(-1) end, "orch.sleep: seconds must be a non-negative number")
  end)

  it("future methods check their arguments", function()
    local pool <close> = orch.pool{ workers = 1 }
    local fut = pool:submit(function() end)
    assert.has_error(function() fut:wait("soon") end)
    assert.has_error(function() fut:on_done(5) end)
    fut:wait()
  end)
end)
