--- The services' dependencies (their `after` lists) as a graph: a start
-- order, what a service needs, what depends on it. A service here is a
-- table with a `name` and an `after` list of names; `by_name` maps each
-- name to its service and knows every name an `after` list holds
-- (orch.services checks that). Plain data: nothing here starts, stops or
-- logs, and nothing raises.
local unpack = table.unpack

local deps = {}

--- deps.order(list, by_name) -> order: the services of list, each after
-- those it lists in `after` (otherwise in list order); or nil, cycle: the
-- names along a cycle, its first name again at its end.
function deps.order(list, by_name)
  local order, mark, cycle = {}, {}, nil
  local function visit(s, path)
    if mark[s] == "done" then return end
    if mark[s] == "visiting" then
      local from = 1
      while path[from] ~= s.name do from = from + 1 end
      cycle = { unpack(path, from) }
      cycle[#cycle + 1] = s.name
      return
    end
    mark[s] = "visiting"
    path[#path + 1] = s.name
    for _, dep in ipairs(s.after) do
      visit(by_name[dep], path)
      if cycle then return end
    end
    path[#path] = nil
    mark[s] = "done"
    order[#order + 1] = s
  end
  for _, s in ipairs(list) do
    visit(s, {})
    if cycle then return nil, cycle end
  end
  return order
end

--- deps.link(order, by_name): gives each service of order its place in
-- it (`pos`) and its `dependents`: the services that list it in `after`,
-- in order.
function deps.link(order, by_name)
  for _, s in ipairs(order) do s.dependents = {} end
  for pos, s in ipairs(order) do
    s.pos = pos
    for _, dep in ipairs(s.after) do
      local d = by_name[dep]
      d.dependents[#d.dependents + 1] = s
    end
  end
end

--- deps.ready(s, by_name) -> whether every service s lists in `after`
-- runs (its state is "running").
function deps.ready(s, by_name)
  for _, dep in ipairs(s.after) do
    if by_name[dep].state ~= "running" then return false end
  end
  return true
end

--- deps.with_dependents(s, set?) -> set: s and every service that
-- depends on it, directly or not (after deps.link), added to set.
function deps.with_dependents(s, set)
  set = set or {}
  if not set[s] then
    set[s] = true
    for _, d in ipairs(s.dependents) do deps.with_dependents(d, set) end
  end
  return set
end

--- deps.with_needs(s, by_name, set?) -> set: s and every service it
-- needs, those it lists in `after` directly or not, added to set.
function deps.with_needs(s, by_name, set)
  set = set or {}
  if not set[s] then
    set[s] = true
    for _, dep in ipairs(s.after) do deps.with_needs(by_name[dep], by_name, set) end
  end
  return set
end

return deps
