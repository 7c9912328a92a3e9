-- POST /v1/agents with a card whose url and name are unique per request, as the admin (quota-exempt).
-- Args: template=<file> token=<bearer> tag=<run tag>. The template is the JSON body with "__N__" where
-- the unique part goes; it is split once so each request only concatenates strings.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")

local parts, headers, prefix, counter = {}, nil, "", 0

setup = common.setup
done = common.done

function init(args)
  local options = common.options(args)
  local file = assert(io.open(assert(options.template, "publish.lua needs template=<file>"), "r"))
  local text = file:read("*a")
  file:close()
  local start = 1
  while true do
    local from, to = text:find("__N__", start, true)
    if not from then break end
    parts[#parts + 1] = text:sub(start, from - 1)
    start = to + 1
  end
  parts[#parts + 1] = text:sub(start)
  assert(#parts > 1, "template has no __N__ placeholder")
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. assert(options.token, "publish.lua needs token=<bearer>"),
  }
  prefix = (options.tag or "run") .. "-t" .. tostring(tid or 1) .. "-"
end

function request()
  counter = counter + 1
  local unique = prefix .. counter
  local body = parts[1]
  for i = 2, #parts do
    body = body .. unique .. parts[i]
  end
  return wrk.format("POST", "/v1/agents", headers, body)
end
