--- The job log of a long map: one line per finished item, appended and
-- flushed as the item (its chunk) finishes, so that a run killed at any
-- instant can be started again and run only what had not finished.
--
-- The file, tab-separated like GNU parallel's joblog:
--
--   # orch joblog 1	fn=<sha256>	items=<count>	items_sha256=<sha256>	<date>
--   index	state	attempts	seconds	pid	result	error
--   17	done	1	0.000012	4242	0a22
--   18	error	1	0.000340	4243		item 18: boom
--
-- The first line names the run: fingerprints of the function (its code,
-- the line it is defined at included, and its upvalues) and of the items,
-- in a canonical form that does not depend on a table's iteration order, so the same script gives the same header. A
-- log with another header is refused, never mixed in. state is "done" or
-- the failure's kind; seconds is the item's share of its chunk's time;
-- result is the done item's value as core.encode writes it, in hex; error
-- is the failure's message with tabs, newlines and backslashes escaped
-- (empty for a done item, the line then ends with a tab).
-- Lines starting with "#" are comments. When an index appears twice (a
-- failed item run again), the later line is the one that counts.
--
-- A kill can leave a torn last line (no newline, or cut short): reading
-- ignores it and the file is rewritten without it before anything is
-- appended. Any other line that does not read is an error naming it.
local core = require "orch.core"
local TaskError = require("orch.errors").TaskError

local joblog = {}

local VERSION = 1
local COLUMNS = "index\tstate\tattempts\tseconds\tpid\tresult\terror"
local FAILED_KINDS = { error = true, timeout = true, crashed = true, killed = true, cancelled = true }

---------------------------------------------------------------------------
-- fingerprints: a canonical text of a value, hashed

local canon

local TYPE_ORDER = { boolean = 1, number = 2, string = 3, table = 4, ["function"] = 5 }

local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_ORDER[ta] or 9) < (TYPE_ORDER[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  if ta == "boolean" then return not a and b end
  return false  -- tables or functions as keys: kept in the order found
end

-- The name under which a C function can be found in a loaded module
-- ("os.time"), the smallest of them if several.
local function c_function_name(fn)
  local best
  for modname, mod in pairs(package.loaded) do
    if type(mod) == "table" then
      for k, v in pairs(mod) do
        if v == fn and type(k) == "string" then
          local name = modname .. "." .. k
          if not best or name < best then best = name end
        end
      end
    end
  end
  return best
end

local function canon_function(fn, out, seen)
  local ok, code = pcall(string.dump, fn, true)
  if not ok then
    local name = c_function_name(fn)
    if not name then error("joblog: cannot fingerprint a C function that no loaded module holds", 0) end
    out[#out + 1] = "C" .. #name .. ":" .. name
    return
  end
  out[#out + 1] = "F" .. #code .. ":" .. code
  for i = 1, math.huge do
    local name, value = debug.getupvalue(fn, i)
    if not name then break end
    if name ~= "_ENV" then canon(value, out, seen) else out[#out + 1] = "E" end
  end
end

local function canon_table(t, out, seen)
  seen.n = seen.n + 1
  seen[t] = seen.n
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, key_less)
  out[#out + 1] = "T" .. #keys .. "{"
  for _, k in ipairs(keys) do
    canon(k, out, seen)
    canon(t[k], out, seen)
  end
  out[#out + 1] = "}"
end

-- Appends the canonical text of v to out; seen numbers the tables met, so
-- shared tables and cycles are written as references.
canon = function(v, out, seen)
  local t = type(v)
  if t == "number" then
    out[#out + 1] = math.type(v) == "integer" and ("i%d;"):format(v) or ("f%a;"):format(v)
  elseif t == "string" then
    out[#out + 1] = "s" .. #v .. ":" .. v
  elseif t == "boolean" or t == "nil" then
    out[#out + 1] = tostring(v) .. ";"
  elseif t == "table" then
    if seen[v] then out[#out + 1] = "R" .. seen[v] .. ";" else canon_table(v, out, seen) end
  elseif t == "function" then
    canon_function(v, out, seen)
  else
    error(("joblog: cannot fingerprint a %s"):format(t), 0)
  end
end

-- Items are hashed in blocks: a block of numbers, strings and booleans
-- is encoded in one call (core.encode is canonical for those), any other
-- block item by item in the canonical form.
local BLOCK = 4096
local SCALAR = { number = true, string = true, boolean = true }

local function canon_items(items)
  local out, seen, n = {}, { n = 0 }, #items
  for s = 1, n, BLOCK do
    local e = math.min(s + BLOCK - 1, n)
    local scalars = true
    for i = s, e do
      if not SCALAR[type(items[i])] then scalars = false; break end
    end
    if scalars then
      out[#out + 1] = "B" .. (e - s + 1) .. ":"
      out[#out + 1] = core.encode(table.unpack(items, s, e))
    else
      for i = s, e do canon(items[i], out, seen) end
    end
  end
  return table.concat(out)
end

--- joblog.fingerprint(fn, items) -> fn_sha256, items_sha256: the same for
-- the same code (where it is defined included), upvalues and items in any
-- process.
function joblog.fingerprint(fn, items)
  local out = {}
  if type(fn) == "string" then out[1] = "M" .. fn else canon(fn, out, { n = 0 }) end
  return core.sha256(table.concat(out)), core.sha256(canon_items(items))
end

---------------------------------------------------------------------------
-- lines

-- Done lines are made in C (core.joblog_done, src/joblog.c): a chunk's
-- in one call. Reading them back:
local UNHEX = {}
for b = 0, 255 do
  local c = string.char(b)
  UNHEX[("%02x"):format(b)], UNHEX[("%02X"):format(b)] = c, c
end
local function unhex(h) return (h:gsub("%x%x", UNHEX)) end

local ESCAPES = { ["\\"] = "\\\\", ["\t"] = "\\t", ["\n"] = "\\n", ["\r"] = "\\r" }
local UNESCAPES = { ["\\"] = "\\", t = "\t", n = "\n", r = "\r" }

local function escape(s) return (s:gsub("[\\\t\n\r]", ESCAPES)) end
local function unescape(s) return (s:gsub("\\(.)", UNESCAPES)) end

local function header(fn_sum, total, items_sum)
  return ("# orch joblog %d\tfn=%s\titems=%d\titems_sha256=%s\t%s\n%s\n"):format(
    VERSION, fn_sum, total, items_sum, os.date("!%Y-%m-%dT%H:%M:%SZ"), COLUMNS)
end

-- One line of the log read back: index, entry, or nil if it does not read.
local ROW = "^(%d+)\t(%l+)\t(%d+)\t([%d.]*)\t(%d*)\t(%x*)\t(.*)$"
local function parse_row(line, lineno)
  local index, state, attempts, seconds, pid, result, message = line:match(ROW)
  if not index or not (state == "done" or FAILED_KINDS[state]) then return nil end
  if #result % 2 == 1 or (state == "done") ~= (result ~= "") then return nil end
  local entry = { state = state, attempts = tonumber(attempts), seconds = tonumber(seconds),
    pid = tonumber(pid), result = result ~= "" and result or nil, message = unescape(message),
    line = lineno }
  return tonumber(index), entry
end

---------------------------------------------------------------------------
-- reading back

-- The header's fields, or nil if line is not an orch joblog header.
local function parse_header(line)
  local version, fn_sum, total, items_sum = line:match(
    "^# orch joblog (%d+)\tfn=(%x+)\titems=(%d+)\titems_sha256=(%x+)")
  if not version then return nil end
  return { version = tonumber(version), fn = fn_sum, total = tonumber(total), items = items_sum }
end

local function refuse(path, what)
  error(("joblog '%s' was written for %s: not resuming from it (remove it or use another path)")
    :format(path, what), 0)
end

local function check_header(path, h, want)
  if not h then
    error(("joblog '%s' is not an orch job log (its first line is no header)"):format(path), 0)
  end
  if h.version ~= VERSION then refuse(path, ("version %d of the format"):format(h.version)) end
  if h.fn ~= want.fn then refuse(path, "another function") end
  if h.total ~= want.total or h.items ~= want.items then
    refuse(path, ("other items (%d items, this run has %d)"):format(h.total, want.total))
  end
end

-- Reads text (a whole log): the entries by index, and the length of the
-- part that reads (a torn last line is left out of it).
local function read_entries(path, text, want)
  local entries, good, lineno = {}, 0, 0
  local pos = 1
  while pos <= #text do
    local nl = text:find("\n", pos, true)
    local line = text:sub(pos, (nl or #text + 1) - 1)
    lineno = lineno + 1
    if not nl then break end  -- torn: a line is whole only with its newline
    if lineno == 1 then
      check_header(path, parse_header(line), want)
    elseif line ~= COLUMNS and line:sub(1, 1) ~= "#" then
      local index, entry = parse_row(line, lineno)
      if index and index >= 1 and index <= want.total then
        entries[index] = entry
      elseif nl == #text then
        break  -- a last line that does not read: torn as well
      else
        error(("joblog '%s': line %d does not read: %q"):format(path, lineno, line:sub(1, 80)), 0)
      end
    end
    good = nl
    pos = nl + 1
  end
  return entries, good
end

---------------------------------------------------------------------------
-- the log of one run

local Log = {}
Log.__index = Log

-- ok, or an error that names the log and what failed: a log that lost
-- lines without a word would make a resume run those items again.
local function must(path, what, ok, err)
  if ok then return ok end
  err = tostring(err)
  if err:sub(1, #path) == path then  -- io.open's "path: why"
    err = err:match("^[^:]*: (.*)$", #path + 1) or err
  end
  error(("joblog '%s': %s: %s"):format(path, what, err), 0)
end

-- Replaces the file's text at once (a new file renamed over it).
local function write_all(path, text)
  local tmp = path .. ".repair"
  local f = must(path, "cannot repair", io.open(tmp, "wb"))
  local ok, err = f:write(text)
  if ok then ok, err = f:close() else f:close() end
  if ok then ok, err = os.rename(tmp, path) end
  if not ok then os.remove(tmp) end
  must(path, "cannot repair", ok, err)
end

--- joblog.open(path, fn, items, resume) -> log, prior: the log to append
-- to, and what a resumed run already has: prior[i] = { state, attempts,
-- seconds, pid, result (hex), message } for each item the log holds as
-- finished (nil entries: not finished). Without resume the file starts
-- afresh.
function joblog.open(path, fn, items, resume)
  local fn_sum, items_sum = joblog.fingerprint(fn, items)
  local want = { fn = fn_sum, total = #items, items = items_sum }
  local prior, f = {}
  local existing = resume and io.open(path, "rb")
  if existing then
    local text = existing:read("a")
    existing:close()
    local good
    prior, good = read_entries(path, text, want)
    if good == 0 then
      text = header(fn_sum, #items, items_sum)
      write_all(path, text)
    elseif good < #text then
      write_all(path, text:sub(1, good))  -- the torn last line goes
    end
    f = must(path, "cannot open", io.open(path, "ab"))
    must(path, "cannot write", f:write(("# resumed %s\n"):format(os.date("!%Y-%m-%dT%H:%M:%SZ"))))
  else
    f = must(path, "cannot open", io.open(path, "wb"))
    must(path, "cannot write", f:write(header(fn_sum, #items, items_sum)))
  end
  f:setvbuf("full")
  must(path, "cannot write", f:flush())
  return setmetatable({ path = path, file = f, lines = {} }, Log), prior
end

--- Items first..first+n-1 done, with the values list[from..from+n-1];
-- attempts, seconds (the chunk's, nil: not known) and the worker's pid
-- are the same for all of them. Their lines are made in one C call.
function Log:done_list(first, list, from, n, attempts, seconds, pid)
  local mid = ("\tdone\t%d\t%s\t%s\t"):format(attempts or 1,
    seconds and ("%.6f"):format(seconds / n) or "", pid or "")
  local lines = self.lines
  lines[#lines + 1] = core.joblog_done(first, list, from, n, mid)
end

--- Item index done: its value, attempts, seconds and worker pid.
function Log:done(index, value, attempts, seconds, pid)
  self:done_list(index, { value }, 1, 1, attempts, seconds, pid)
end

--- Item index failed: err is its TaskError.
function Log:failed(index, err, seconds)
  local lines = self.lines
  lines[#lines + 1] = ("%d\t%s\t%d\t%.6f\t%s\t\t%s\n"):format(
    index, err.kind, err.attempts or 1, seconds or 0, err.pid or "", escape(tostring(err.message or "")))
end

--- Writes what was added since the last flush, in one write; raises
-- when the file does not take it (a full disk, a file size limit).
function Log:flush()
  local lines = self.lines
  if #lines == 0 then return end
  self.lines = {}
  local f = self.file
  local ok, err = f:write(table.concat(lines))
  if ok then ok, err = f:flush() end
  must(self.path, "cannot write", ok, err)
end

function Log:close()
  if not self.file then return end
  local ok, err = pcall(self.flush, self)
  self.file:close()
  self.file = nil
  if not ok then error(err, 0) end
end
Log.__close = Log.close

--- What a resumed run has left to do, from what the log holds (prior,
-- as joblog.open returns it) of n items: the ranges to run (first and
-- last index, pairs in one list), how many are done already, and the
-- first failure the log holds when failures are not run again (nil: none).
function joblog.pending(prior, n, rerun_failed)
  local ranges, done, failure, failure_line = {}, 0, nil, math.huge
  local from
  for i = 1, n do
    local e = prior[i]
    local skip = e and (e.state == "done" or not rerun_failed)
    if e and e.state == "done" then
      done = done + 1
    elseif e and not rerun_failed and e.line < failure_line then
      failure, failure_line = i, e.line
    end
    if skip and from then
      ranges[#ranges + 1], ranges[#ranges + 2], from = from, i - 1, nil
    elseif not skip and not from then
      from = i
    end
  end
  if from then ranges[#ranges + 1], ranges[#ranges + 2] = from, n end
  return ranges, done, failure
end

--- A done entry's value, decoded.
function joblog.value(entry)
  return core.decode(unhex(entry.result))
end

--- A failed entry as the TaskError it was.
function joblog.error(index, entry)
  return TaskError.new({ kind = entry.state, message = entry.message, index = index,
    attempts = entry.attempts, pid = entry.pid })
end

return joblog
