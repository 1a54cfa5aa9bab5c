-- wrk script: GET the paths listed in a file (one per line) round-robin,
-- each request on a new connection, and print the figures as one JSON line.
-- Usage: wrk ... -s bench/wrk/paths.lua http://host:port -- PATHS_FILE

wrk.headers["Connection"] = "close"

local counter = 1

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local paths = {}
local index = 0

function init(args)
   for line in io.lines(args[1]) do
      if line ~= "" then
         paths[#paths + 1] = line
      end
   end
   -- Threads start at different places so that they do not hit the same canary in step.
   index = ((tid or 1) - 1) * 7919 % #paths
end

function request()
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
