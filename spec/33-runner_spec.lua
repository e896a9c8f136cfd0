-- The orch command: scripts/orch, run as a separate process.
local P = require "scripts.sup_proc"
after_each(P.cleanup_all)

local function orch_cmd(args, env)
  local out, code = orch_spec.sh((env or "") .. " lua5.4 scripts/orch " .. args .. " 2>&1")
  return code, out
end

-- Writes files into a fresh directory; returns path(name) and a remover.
local function scratch()
  local dir = P.tmpdir()
  return function(name, text)
    local path = dir .. "/" .. name
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
    return path
  end, function() os.execute("rm -rf " .. P.quote(dir)) end
end

describe("the orch command", function()
  it("--help, --version and each command's --help", function()
    local code, out = orch_cmd("--help")
    assert.equal(0, code)
    assert.matches("Usage: orch", out, 1, true)
    assert.matches("\n   run ", out, 1, true)
    code, out = orch_cmd("--version")
    assert.equal(0, code)
    assert.matches("^orch %d+%.%d+%.%d+\n$", out)
    code, out = orch_cmd("run --help")
    assert.equal(0, code)
    assert.matches("Usage: orch run", out, 1, true)
    assert.matches("--log-format {text,json}", out, 1, true)
    assert.matches("--check", out, 1, true)
    -- orch busted: orch's options, then busted's own usage, and no error
    code, out = orch_cmd("busted --help")
    assert.equal(0, code)
    assert.matches("^Usage: orch busted %[%-j N%]", out)
    assert.matches("\nUsage: busted %[OPTIONS%]", out)
    assert.matches("--exclude-tags", out, 1, true)
    assert.is_nil(out:find("busted: error", 1, true))
    assert.is_nil(out:find("re-run with --help", 1, true))
  end)

  it("usage errors exit 2 with one line saying what, then a hint", function()
    local cases = {
      { "", "orch: a command is required\nTry 'orch --help' for more information.\n" },
      { "frobnicate", "orch: unknown command 'frobnicate'\nTry 'orch --help' for more information.\n" },
      { "run", "orch: missing argument 'file'\nTry 'orch run --help' for more information.\n" },
      { "run --log-level loud x.lua", "orch: argument for option '--log-level' must be one of" },
      { "run /nonexistent/services.lua", "orch: run: cannot open '/nonexistent/services.lua'" },
    }
    for _, case in ipairs(cases) do
      local code, out = orch_cmd(case[1])
      assert.equal(2, code, case[1])
      assert.equal(case[2], out:sub(1, #case[2]), case[1])
    end
  end)

  it("refuses a file that does not return a table, or a bad service spec", function()
    local file, remove = scratch()
    finally(remove)
    local code, out = orch_cmd("run " .. file("num.lua", "return 42"))
    assert.equal(2, code)
    assert.matches("must return a table of services", out, 1, true)
    code, out = orch_cmd("run " .. file("bad.lua", "return { services = { { name = 'a', run = print, after = { 'zz' } } } }"))
    assert.equal(2, code)
    assert.matches("'after' names an unknown service 'zz'", out, 1, true)
    code, out = orch_cmd("run " .. file("opt.lua", "return { services = { { name = 'a', run = print, colour = 1 } } }"))
    assert.equal(2, code)
    assert.matches("unknown option 'colour'", out, 1, true)
    code, out = orch_cmd("run " .. file("syntax.lua", "return {"))
    assert.equal(2, code)
    assert.matches("syntax.lua:1: unexpected symbol near <eof>", out, 1, true)
  end)

  it("--check validates the spec without running it (exit 0 or 2)", function()
    local file, remove = scratch()
    finally(remove)
    local good = file("good.lua", [[
      return { services = { { name = "a", run = function() print("ran") end } } }]])
    local code, out = orch_cmd("run --check " .. good)
    assert.equal(0, code, out)
    assert.matches("1 services, spec ok", out, 1, true)
    assert.not_matches("ran", out, 1, true)
    code, out = orch_cmd("run --check " .. file("bad.lua", "return { services = { { run = print } } }"))
    assert.equal(2, code, out)
    assert.matches("bad.lua", out, 1, true)
  end)

  it("passes ARGS to FILE as ... and arg, options after FILE included", function()
    local file, remove = scratch()
    finally(remove)
    local path = file("args.lua", [[
      print("dots", ...)
      print("arg", arg[0]:match("[^/]+$"), #arg, arg[1], arg[3])
      return function(a, b) print("fn", a, b) end]])
    local code, out = orch_cmd("run " .. path .. " -x --check y")
    assert.equal(0, code, out)
    assert.equal("dots\t-x\t--check\ty\narg\targs.lua\t3\t-x\ty\nfn\t-x\t--check\n", out)
  end)

  it("runs a function FILE returns; exit 1 when FILE or the function raises", function()
    local file, remove = scratch()
    finally(remove)
    local code, out = orch_cmd("run " .. file("pool.lua", [[
      return function(n)
        local orch = require "orch"
        local pool <close> = orch.pool{ workers = 2 }
        print(table.concat(pool:map(function(x) return x * x end, { 1, 2, tonumber(n) }), ","))
      end]]) .. " 5")
    assert.equal(0, code, out)
    assert.equal("1,4,25\n", out)
    code, out = orch_cmd("run " .. file("raise.lua", "local x = nil\nerror('no config')"))
    assert.equal(1, code)
    assert.matches("raise.lua:2: no config\nstack traceback:", out, 1, true)
    assert.not_matches("orch/cli", out, 1, true)  -- the user's frames only
    code, out = orch_cmd("run " .. file("fn.lua", "return function() error('late') end"))
    assert.equal(1, code)
    assert.matches("fn.lua:1: late", out, 1, true)
  end)

  it("exit 0 once every service ended well, 1 when one failed", function()
    local file, remove = scratch()
    finally(remove)
    local code, out = orch_cmd("run " .. file("ok.lua", [[
      return { services = { { name = "once", restart = "transient", run = function() print("ran") end } } }]]))
    assert.equal(0, code, out)
    assert.matches("ran\n", out)
    code, out = orch_cmd("run " .. file("bad.lua", [[
      return { services = { { name = "once", restart = "temporary", run = function() error("broken") end } } }]]))
    assert.equal(1, code, out)
    assert.matches("broken", out, 1, true)
  end)

  it("--log-level and --log-format json reach the handler, in workers too", function()
    local file, remove = scratch()
    finally(remove)
    local path = file("log.lua", [[
      return function()
        local orch = require "orch"
        local pool <close> = orch.pool{ workers = 1 }
        pool:submit(function() require("orch").log.debug("from %s", "worker") end):result()
        orch.log.info("from main")
      end]])
    local code, out = orch_cmd("run --log-level debug --log-format json " .. path)
    assert.equal(0, code, out)
    local cjson = require "cjson"
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(line) end
    assert.equal(2, #lines, out)
    assert.same({ "debug", "from worker", "worker 1" }, { lines[1].level, lines[1].message, lines[1].name })
    assert.same({ "info", "from main", "main" }, { lines[2].level, lines[2].message, lines[2].name })
    code, out = orch_cmd("run " .. path, "ORCH_LOG=warn")
    assert.equal(0, code, out)
    assert.equal("", out)
  end)

  it("runs the services a file returns and stops them in order on TERM (exit 143)", function()
    local job = P.start("scripts/orch", { "run", "spec/scripts/sup_services.lua" })
    assert.is_true(P.wait_output(job, "once ran", 10, "out"))
    assert.is_true(P.wait_output(job, "[ticker", 10, "err"))
    P.signal_group("TERM", job.pid)
    local rc = P.wait_exit(job, 10)
    local out, err = P.stdout(job), P.stderr(job)
    P.cleanup(job)
    assert.equal(143, rc, err)
    assert.matches("ticker stopped after %d+ ticks", out)
    assert.matches("%[ticker %d+%] stop requested", err)
  end)

  it("ends by the signal when a function's pool is interrupted (exit 130)", function()
    local file, remove = scratch()
    finally(remove)
    local job = P.start("scripts/orch", { "run", file("spin.lua", [[
      return function()
        local orch = require "orch"
        local pool <close> = orch.pool{ workers = 1, grace = 1 }
        local fut = pool:submit(function() while true do end end)
        io.stderr:write("spinning\n")
        fut:wait()
      end]]) })
    assert.is_true(P.wait_output(job, "spinning", 10, "err"))
    P.signal_group("INT", job.pid)
    local rc = P.wait_exit(job, 10)
    local err = P.stderr(job)
    P.cleanup(job)
    assert.equal(130, rc, err)
    assert.matches("orch: interrupted (SIGINT)\n", err, 1, true)
    assert.not_matches("traceback", err, 1, true)
  end)
end)
