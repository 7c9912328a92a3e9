-- Shared by every scenario script (loaded with dofile into each of wrk's Lua states).
-- Arguments after `--` arrive as key=value pairs; run.ts parses the one JSON line `done` prints, so the
-- figures come from wrk's own histogram rather than from scraping its human-readable summary.
local M = {}

-- Each thread gets a 1-based id so scripts can split the id list and keep generated urls unique.
local next_tid = 0
function M.setup(thread)
  next_tid = next_tid + 1
  thread:set("tid", next_tid)
end

function M.options(args)
  local options = {}
  for _, arg in ipairs(args) do
    local key, value = arg:match("^([%w_]+)=(.*)$")
    if key then options[key] = value end
  end
  return options
end

function M.lines(path)
  local file = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  local lines = {}
  for line in file:lines() do
    if line ~= "" then lines[#lines + 1] = line end
  end
  file:close()
  assert(#lines > 0, path .. " is empty")
  return lines
end

-- Threads start at evenly spaced offsets so that together they sweep the whole list, not the same ids.
function M.start_index(count, options)
  local threads = tonumber(options.threads) or 1
  return math.floor(count * ((tid or 1) - 1) / threads) % count
end

function M.done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '@@BENCH@@ {"requests":%.0f,"durationUs":%.0f,"bytes":%.0f,"meanUs":%.1f,"p50Us":%.0f,"p90Us":%.0f,' ..
      '"p95Us":%.0f,"p99Us":%.0f,"maxUs":%.0f,"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}}\n',
    summary.requests, summary.duration, summary.bytes, latency.mean, latency:percentile(50),
    latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end

return M
