-- GET one path after another from a file (one path per line), with a bearer token.
dofile(os.getenv("BENCH_WRK_DIR") .. "/report.lua")
local paths = {}
for line in io.lines(os.getenv("BENCH_PATHS")) do paths[#paths + 1] = line end
local token = os.getenv("BENCH_TOKEN")
local counter = 0
local offset = 0
local threads = 0
function setup(thread) thread:set("offset", threads * 7919); threads = threads + 1 end
function init(args) counter = offset end
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter % #paths) + 1], {["Authorization"] = "Bearer " .. token})
end
