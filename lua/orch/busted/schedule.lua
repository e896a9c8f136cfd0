--- orch.busted.schedule: in which order `orch busted` starts spec files, so
-- that the workers stay busy to the end: longest first. How long a file
-- takes is read from a small cache the previous runs wrote
-- (.orch-busted-times in the current directory: "seconds<TAB>file" lines);
-- a file not in it is estimated from its size, scaled by the seconds per
-- byte of the files that are, or ordered by size alone when none is.
local schedule = {}

schedule.CACHE = ".orch-busted-times"

local function size_of(file)
  local f = io.open(file, "rb")
  if not f then return 0 end
  local size = f:seek("end") or 0
  f:close()
  return size
end

--- schedule.load(path) -> { [file] = seconds } (empty when there is no cache).
function schedule.load(path)
  local times = {}
  local f = io.open(path, "r")
  if not f then return times end
  for line in f:lines() do
    local seconds, file = line:match("^([%d.e+-]+)\t(.+)$")
    if seconds and tonumber(seconds) then times[file] = tonumber(seconds) end
  end
  f:close()
  return times
end

--- schedule.save(path, times): merges `times` into the cache at path
-- (written to a temporary file, then renamed over it). Best effort: a
-- directory that cannot be written only loses the cache.
function schedule.save(path, times)
  local all = schedule.load(path)
  for file, seconds in pairs(times) do all[file] = seconds end
  local files = {}
  for file in pairs(all) do files[#files + 1] = file end
  table.sort(files)
  local tmp = path .. ".tmp"
  local f = io.open(tmp, "w")
  if not f then return end
  for _, file in ipairs(files) do f:write(("%.3f\t%s\n"):format(all[file], file)) end
  f:close()
  os.rename(tmp, path)
end

--- schedule.order(files, times) -> list of indices into files, the
-- longest expected first (ties keep the files' own order).
function schedule.order(files, times)
  local sizes, known_seconds, known_bytes = {}, 0, 0
  for i, file in ipairs(files) do
    sizes[i] = size_of(file)
    if times[file] then
      known_seconds, known_bytes = known_seconds + times[file], known_bytes + sizes[i]
    end
  end
  local per_byte = known_bytes > 0 and known_seconds / known_bytes or 1
  local expected, order = {}, {}
  for i, file in ipairs(files) do
    expected[i] = times[file] or sizes[i] * per_byte
    order[i] = i
  end
  table.sort(order, function(a, b)
    if expected[a] ~= expected[b] then return expected[a] > expected[b] end
    return a < b
  end)
  return order
end

return schedule
