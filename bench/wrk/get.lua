-- GET /v1/agents/<id><suffix> over every id in ids=<file>, round-robin per thread.
-- Args: ids=<file> threads=<n> [suffix=/card]. Also drives the ceiling run against the bare server, so the
-- client does the same work per request in both and the ratio compares servers, not Lua paths.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")

local requests, count, index = {}, 0, 0

setup = common.setup
done = common.done

function init(args)
  local options = common.options(args)
  local suffix = options.suffix or ""
  -- Pre-built request strings: building one per request in Lua would make wrk the bottleneck.
  for i, id in ipairs(common.lines(options.ids)) do
    requests[i] = wrk.format("GET", "/v1/agents/" .. id .. suffix)
  end
  count = #requests
  index = common.start_index(count, options)
end

function request()
  index = index % count + 1
  return requests[index]
end
