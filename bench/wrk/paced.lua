-- get.lua with a per-connection pause, for latency at a chosen rate (wrk has no rate option).
-- Args: those of get.lua plus delay_ms=<float>, the pause each connection takes between requests
-- (connections / target rate). wrk only takes whole milliseconds, so each pause is dithered between
-- floor and ceil to keep the mean on the fractional value.
local common = dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "common.lua")
dofile(debug.getinfo(1, "S").source:sub(2):match("^(.*/)") .. "get.lua")

local base_init = init
local delay_ms = 0

function init(args)
  base_init(args)
  delay_ms = assert(tonumber(common.options(args).delay_ms), "paced.lua needs delay_ms=<milliseconds>")
  math.randomseed((tid or 1) * 7919)
end

function delay()
  local whole = math.floor(delay_ms)
  if math.random() < delay_ms - whole then return whole + 1 end
  return whole
end
