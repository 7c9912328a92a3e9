-- GET every path of paths=<file> in turn, round-robin per thread (the search mix of bench/search.ts).
-- Each line is "anon<TAB>/path" or "auth<TAB>/path"; auth lines carry `Authorization: Bearer <token>`.
-- Args: paths=<file> threads=<n> [token=<bearer>, required when the file has auth lines].
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")

local requests, count, index = {}, 0, 0

setup = common.setup
done = common.done

function init(args)
  local options = common.options(args)
  local auth = options.token and { ["Authorization"] = "Bearer " .. options.token } or nil
  -- Pre-built request strings, as in get.lua: wrk's per-request cost stays a table lookup.
  for i, line in ipairs(common.lines(options.paths)) do
    local who, path = line:match("^(%a+)\t(/.*)$")
    assert(path, "paths.lua: line " .. i .. " is not \"anon|auth<TAB>/path\"")
    if who == "auth" then
      requests[i] = wrk.format("GET", path, assert(auth, "paths.lua: auth lines need token=<bearer>"))
    else
      requests[i] = wrk.format("GET", path)
    end
  end
  count = #requests
  index = common.start_index(count, options)
end

function request()
  index = index % count + 1
  return requests[index]
end
