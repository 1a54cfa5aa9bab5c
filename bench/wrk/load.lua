-- wrk script: every request on a new connection (as curl in cron does) unless the last
-- argument is "keepalive"; prints the figures as one JSON line. Two modes:
--   wrk ... -s bench/wrk/load.lua http://host:port -- paths PATHS_FILE [keepalive]
--       GET the paths listed in the file (one per line) round-robin
--   wrk ... -s bench/wrk/load.lua http://host:port -- create NAME_PREFIX [keepalive]
--       create canaries with unique names

wrk.headers["Connection"] = "close"

local counter = 1

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local mode = "paths"
local paths = {}
local index = 0
local prefix = "bench"
local n = 0

function init(args)
   if args[#args] == "keepalive" then
      wrk.headers["Connection"] = nil  -- HTTP/1.1: the connection stays open when the server allows
   end
   mode = args[1] or mode
   if mode == "create" then
      prefix = args[2] or prefix
      return
   end
   for line in io.lines(args[2]) do
      if line ~= "" then
         paths[#paths + 1] = line
      end
   end
   -- Threads start at different places so that they do not hit the same canary in step.
   index = ((tid or 1) - 1) * 7919 % #paths
end

function request()
   if mode == "create" then
      n = n + 1
      return wrk.format("GET", string.format(
         "/coal-mine/v1/canary/create?name=%s-%d-%d&periodicity=86400", prefix, tid or 1, n))
   end
   index = index % #paths + 1
   return wrk.format("GET", paths[index])
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
         .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
