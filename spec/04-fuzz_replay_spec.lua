-- Replays what `make fuzz` keeps: every input a fuzz target saved in
-- spec/fuzz/NAME/ (inputs that crashed it or grew the heap too much once)
-- and the seeds it starts from. Each must decode, or be refused with the
-- byte offset, within the bound the fuzzer enforces on heap growth.
local core = require "orch.core"
local seeds = dofile("src/fuzz/seeds.lua")

-- as src/fuzz/fuzz_wire.c: AMPLIFY_MAX times the input, plus AMPLIFY_SLACK
local AMPLIFY_MAX, AMPLIFY_SLACK = 64, 16 * 1024

local function saved_inputs(dir)
  local list = {}
  local p = assert(io.popen("ls -1 " .. dir .. " 2>/dev/null"))
  for name in p:lines() do
    local f = assert(io.open(dir .. "/" .. name, "rb"))
    list[#list + 1] = { name = name, bytes = f:read("a") }
    f:close()
  end
  p:close()
  return list
end

-- Runs f(s, ...) with the collector stopped: ok, its error, heap growth.
local function measured(f, s, ...)
  collectgarbage()
  collectgarbage("stop")
  local before = collectgarbage("count")
  local ok, err = pcall(f, s, ...)
  local grown = (collectgarbage("count") - before) * 1024
  collectgarbage("restart")
  return ok, err, grown
end

local function replay(name, s)
  for _, how in ipairs{ { "decode", core.decode }, { "decode_into", core.decode_into, {}, 1 } } do
    local ok, err, grown = measured(how[2], s, how[3], how[4])
    if not ok then
      assert.matches("^orch%.core%." .. how[1] .. ": byte %d+: ", err, nil, false, name)
    end
    assert.is_true(grown <= AMPLIFY_MAX * #s + AMPLIFY_SLACK,
                   ("%s: %d bytes grew the heap by %d in %s"):format(name, #s, grown, how[1]))
  end
end

-- The frame target's input through a real channel: a child that sleeps,
-- and the stream written into its end of the pipe it sends frames on (the
-- pipe whose read end this process holds), as if the child wrote it.
local function pipe_links(pid)
  local list, p = {}, io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null")
  for line in p:lines() do
    local fd, ino = line:match("(%d+) %-> pipe:%[(%d+)%]")
    if fd then
      local info = orch_spec.read_file(("/proc/%d/fdinfo/%s"):format(pid, fd)) or ""
      local flags = tonumber(info:match("flags:%s*(%d+)") or "0", 8)
      list[#list + 1] = { fd = tonumber(fd), ino = ino, mode = flags & 3 }
    end
  end
  p:close()
  return list
end

local function frame_pipe_of(pid)
  local read_here = {}
  for _, l in ipairs(pipe_links(core.getpid())) do
    if l.fd > 2 and l.mode == 0 then read_here[l.ino] = true end
  end
  for _, l in ipairs(pipe_links(pid)) do
    if l.mode == 1 and read_here[l.ino] then return l.fd end
  end
end

-- The frames' types a plain reading finds (as fuzz_frame.c's frames_of).
-- A big frame (chan.c) is 13 bytes; here no fd comes with it: refused. A
-- wake frame (no payload, type 5) is never handed on.
local function frames_of(s, max)
  local want, at = {}, 1
  while #s - at + 1 >= 5 do
    local len, t = string.unpack("<I4B", s, at)
    want[#want + 1] = t
    if len == 0 and t == core.msg.WAKE then
      want[#want] = nil
      at = at + 5
    elseif len == 0x80000008 then
      if #s - at + 1 < 13 then want[#want] = nil; break end
      if math.ult(max, string.unpack("<I8", s, at + 5)) then break end
      at = at + 13
    else
      if len > max or #s - at + 1 - 5 < len then
        if len <= max then want[#want] = nil end
        break
      end
      at = at + 5 + len
    end
  end
  return want
end

local function replay_frames(name, input)
  local max = input:byte(1) & 1 == 1 and 256 or 65536
  local stream, got = input:sub(2), {}
  local proc = core.spawn(function() core.child_sleep(30) end, function(_, t, a, b)
    if t == core.msg.RESULT then
      for _ = 1, b, 2 do got[#got + 1] = t end
    else
      if t == 0 then
        assert(type(a) == "string" and #a > 0, name .. ": a bad frame without a reason")
        t = b
      end
      got[#got + 1] = t
    end
  end, function() end)
  proc:set_max_message(max)
  local fd = assert(frame_pipe_of(proc:pid()), "the child's frame pipe")
  local f = assert(io.open(("/proc/%d/fd/%d"):format(proc:pid(), fd), "wb"))
  f:write(stream)
  f:close()
  local want = frames_of(stream, max)
  orch_spec.wait_for(function() return #got >= #want end, 5)
  core.step(0.05)
  proc:close()
  assert.are.same(want, got, name)
end

describe("fuzz reproducers", function()
  it("replays every saved input of the wire target", function()
    local saved = saved_inputs("spec/fuzz/wire")
    assert.is_true(#saved > 0, "spec/fuzz/wire/ holds the inputs the fuzzer found")
    for _, input in ipairs(saved) do replay(input.name, input.bytes) end
  end)

  it("replays the wire target's seeds", function()
    for i, s in ipairs(seeds.wire(core)) do replay("seed " .. i, s) end
  end)

  it("replays every saved input and seed of the frame target through a real channel", function()
    local saved = saved_inputs("spec/fuzz/frame")
    assert.is_true(#saved > 0, "spec/fuzz/frame/ holds the inputs the fuzzer found")
    for _, input in ipairs(saved) do replay_frames(input.name, input.bytes) end
    for i, s in ipairs(seeds.frame(core)) do replay_frames("seed " .. i, s) end
  end)
end)
