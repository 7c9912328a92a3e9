-- GET one fixed path (the list, /health). Args: path=<path>. A pre-built request returned from request()
-- keeps wrk's per-request cost the same as in the id-based scripts.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")

local prepared

setup = common.setup
done = common.done

function init(args)
  local options = common.options(args)
  assert(options.path, "path.lua needs path=<path>")
  prepared = wrk.format("GET", options.path)
end

function request()
  return prepared
end
