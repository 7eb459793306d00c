-- One benchmark scenario for wrk. The request comes from the environment:
--   BENCH_METHOD (GET or POST), BENCH_BODY (for POST), BENCH_API_KEY,
--   BENCH_CONTENT_TYPE (default JSON), BENCH_HEADERS (more headers, one "Name: value" a line).
-- Every response that is not a 2xx is counted; `done` prints one JSON line that bench/bench.py
-- reads (latencies in microseconds).

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_API_KEY")
if wrk.body then
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
end
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^:\n]+): ([^\n]*)") do
  wrk.headers[name] = value
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  first_bad = ""
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local bad = 0
  local sample = ""
  for _, thread in ipairs(threads) do
    bad = bad + thread:get("non2xx")
    if sample == "" then
      sample = thread:get("first_bad")
    end
  end
  local errors = summary.errors
  -- The latency distribution in 0.1 % steps, so runs can be pooled into one distribution.
  local quantiles = {}
  for i = 1, 1000 do
    quantiles[i] = string.format("%d", latency:percentile(i / 10))
  end
  local clean = string.gsub(sample, '[%c"\\]', " ")
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
      .. '"first_bad": "%s", "quantiles_us": [%s]}\n',
    summary.requests, summary.duration, bad,
    errors.connect + errors.read + errors.write + errors.timeout,
    clean, table.concat(quantiles, ",")
  ))
end
