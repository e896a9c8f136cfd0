--- orch.busted.replay: events recorded in spec processes (orch.busted.recorder)
-- published again on the busted bus of `orch busted` itself, so that its
-- output handler (utfTerminal, TAP, json, junit, ...) and busted's runner
-- (which counts failures and errors for the exit status) see one run.
--
-- Each spec file has its own numbering of elements; an element is rebuilt
-- once as a table in this process, attached under its parent in busted's
-- context tree (output handlers name a test by walking up that tree), and
-- updated in place by every later event, since handlers key their state on
-- the table itself. A file that ends before its process said it was done
-- (a crash, a timeout) gets an error on the test it was running, or on the
-- file, and its open blocks are closed, so handlers see a complete tree.
local unpack = table.unpack

local Replay = {}
Replay.__index = Replay

local replay = {}

--- replay.new(busted, root) -> Replay: `busted` is busted's core object,
-- `root` the suite element of the current run.
function replay.new(busted, root)
  return setmetatable({ busted = busted, root = root, files = {} }, Replay)
end

function Replay:_file(idx)
  local f = self.files[idx]
  if not f then
    f = { elements = { [0] = self.root }, open = {} }
    self.files[idx] = f
  end
  return f
end

-- Attaches child under parent in busted's context tree. Pushing a block
-- whose envmode is "insulate" would snapshot _G and package.loaded, which
-- this process has no use for: its attributes are set aside meanwhile.
local NO_ENV = {}
function Replay:_attach(parent, child)
  local context, attributes = self.busted.context, parent.attributes
  parent.attributes = NO_ENV
  context.push(parent)
  context.attach(child)
  context.pop()
  parent.attributes = attributes
end

local function update(element, fields)
  for k, v in pairs(fields) do element[k] = v end
end

local function element_of(f, ref)
  if type(ref) == "table" then return ref end   -- outside the tree: its fields
  return f.elements[ref]
end

-- Keeps the list of blocks that started and have not ended, innermost last.
local function track(f, ch, element)
  if ch[2] == "start" then
    f.open[#f.open + 1] = element
  elseif ch[2] == "end" then
    for i = #f.open, 1, -1 do
      if f.open[i] == element then table.remove(f.open, i) break end
    end
  end
end

--- replay:event(idx, ev): one decoded event line of the file at idx.
function Replay:event(idx, ev)
  local f = self:_file(idx)
  if ev.new then
    local element = ev.new.fields
    f.elements[ev.new.id] = element
    self:_attach(f.elements[ev.new.parent] or self.root, element)
    if element.descriptor == "file" then f.file = element end
  elseif ev.ch then
    local element = element_of(f, ev.el)
    if ev.fields then update(element, ev.fields) end
    local args = ev.args
    for i = 1, ev.n do
      local a = args[i]
      if type(a) == "table" and a.ref then
        args[i] = f.elements[a.ref]
        if a.ref ~= 0 then update(args[i], a.fields) end
      end
    end
    track(f, ev.ch, element)
    self.busted.publish(ev.ch, element, unpack(args, 1, ev.n))
  elseif ev.done then
    f.done = true
  end
end

--- replay:done(idx) -> true when the file's process said its run ended.
function Replay:done(idx)
  return self:_file(idx).done == true
end

--- replay:cut(idx, name, why): the file at idx ended early. With `why` (a
-- message), that is an error of the test it was running, else of the file;
-- without, it was stopped on purpose (--maxfail, Ctrl-C) and its open
-- blocks are only closed.
function Replay:cut(idx, name, why)
  local f = self:_file(idx)
  local publish = self.busted.publish
  local parent_of = self.busted.context.parent
  local innermost = f.open[#f.open]
  if why and innermost and (innermost.descriptor == "it" or innermost.descriptor == "pending") then
    publish({ "error", "it" }, innermost, parent_of(innermost), why, innermost.trace)
    publish({ "test", "end" }, innermost, parent_of(innermost), "error")
    table.remove(f.open)
  elseif why then
    local file = f.file or { descriptor = "file", name = name, attributes = {} }
    publish({ "error", "file" }, file, f.file and self.root, why)
  end
  for i = #f.open, 1, -1 do
    local element = f.open[i]
    if element.descriptor == "file" then
      publish({ "file", "end" }, element)
    elseif element.descriptor == "describe" then
      publish({ "describe", "end" }, element, parent_of(element))
    end   -- a test stopped halfway did not end: it is not reported
  end
  f.open = {}
end

return replay
