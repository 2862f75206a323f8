-- One wrk scenario of `make bench`, configured by the environment bench/run.py sets:
--   BENCH_METHOD, BENCH_PATH, BENCH_AUTH (an API key), BENCH_BODY (a JSON body),
--   BENCH_UNIQUE=1 (BENCH_BODY's "{ref}" becomes a reference unique to each request),
--   BENCH_OUT (where done() writes the run's figures as JSON).
local method = os.getenv("BENCH_METHOD") or "GET"
local path = os.getenv("BENCH_PATH") or "/"
local body = os.getenv("BENCH_BODY")
local unique = os.getenv("BENCH_UNIQUE") == "1"
local prefix = os.getenv("BENCH_REF_PREFIX") or "bench"

wrk.method = method
wrk.path = path
wrk.headers["Accept"] = "application/json"
if os.getenv("BENCH_AUTH") then
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_AUTH")
end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0

function request()
  if not unique then
    return wrk.request()
  end
  counter = counter + 1
  local ref = string.format("%s-%d-%d", prefix, tid, counter)
  return wrk.format(nil, nil, nil, (body:gsub("{ref}", ref)))
end

function done(summary, latency, requests)
  local out = io.open(os.getenv("BENCH_OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d, ' ..
    '"latency_p50_us": %d, "latency_p99_us": %d, "latency_mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.status, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
  out:close()
end
