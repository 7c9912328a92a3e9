-- GET /v1/agents/<id> with If-None-Match set to the ETag fetched for that id beforehand: every response
-- should be a 304. Args: etags=<file of "id<TAB>etag" lines> threads=<n>.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")

local requests, count, index = {}, 0, 0

setup = common.setup
done = common.done

function init(args)
  local options = common.options(args)
  for i, line in ipairs(common.lines(options.etags)) do
    local id, etag = line:match("^([^\t]+)\t(.+)$")
    requests[i] = wrk.format("GET", "/v1/agents/" .. id, { ["If-None-Match"] = etag })
  end
  count = #requests
  index = common.start_index(count, options)
end

function request()
  index = index % count + 1
  return requests[index]
end
