-- core.resolve: "module.name" to a function, by the rules a worker uses
-- for a task sent by name.
local core = require "orch.core"

describe("core.resolve", function()
  it("requires the module and takes the field after the last dot", function()
    assert.are.equal(string.rep, core.resolve("string.rep"))
    package.loaded["orch_spec.deep"] = { fn = print }
    assert.are.equal(print, core.resolve("orch_spec.deep.fn"))
    package.loaded["orch_spec.deep"] = nil
  end)

  it("takes a module that is itself a function or callable", function()
    package.loaded["orch_spec_fn"] = tostring
    assert.are.equal(tostring, core.resolve("orch_spec_fn"))
    local callable = setmetatable({}, { __call = function() return 1 end })
    package.loaded["orch_spec_callable"] = callable
    assert.are.equal(callable, core.resolve("orch_spec_callable"))
    package.loaded["orch_spec_fn"], package.loaded["orch_spec_callable"] = nil, nil
  end)

  it("says what is missing", function()
    assert.has_error(function() core.resolve("string.nope") end,
      "'string.nope' is nil here, not a function")
    assert.has_error(function() core.resolve("string") end,
      "'string' is table here, not a function")
    local ok, err = pcall(core.resolve, "no_such_module_here.fn")
    assert.is_false(ok)
    assert.matches("module 'no_such_module_here' not found", err)
  end)

  it("checks its argument", function()
    assert.matches("bad argument #1 to 'orch.core.resolve' %(string expected",
      select(2, pcall(core.resolve, {})))
  end)

  it("is what a worker uses for a task sent by name", function()
    local orch = require "orch"
    local pool <close> = orch.pool{ workers = 1 }
    local fut = pool:submit("string.nope")
    fut:wait()
    assert.are.equal("error", fut:error().kind)
    assert.matches("'string.nope' is nil here, not a function", fut:error().message)
  end)
end)
