-- Offboard each machine of a file once (one id per line); threads take disjoint slices.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local ids = {}
for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
local token = os.getenv("BENCH_TOKEN")
local headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
local body = '{"Comment": "benchmark"}'
local threads = 0
local total_threads = tonumber(os.getenv("BENCH_THREADS"))
function setup(thread) thread:set("index", threads); threads = threads + 1 end
function init(args) counter = index end
request = function()
  local id = ids[(counter % #ids) + 1]
  counter = counter + total_threads
  return wrk.format("POST", "/api/machines/" .. id .. "/offboard", headers, body)
end
