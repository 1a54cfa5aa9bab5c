-- wrk script: create canaries with unique names, each request on a new connection,
-- and print the figures as one JSON line.
-- Usage: wrk ... -s bench/wrk/create.lua http://host:port -- NAME_PREFIX

wrk.headers["Connection"] = "close"

local counter = 1

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

local prefix = "bench"
local n = 0

function init(args)
   prefix = args[1] or prefix
end

function request()
   n = n + 1
   return wrk.format("GET", string.format(
      "/coal-mine/v1/canary/create?name=%s-%d-%d&periodicity=86400", prefix, tid or 1, n))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, '
         .. '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
      summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
      latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
