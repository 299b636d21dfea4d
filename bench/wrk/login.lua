-- POST /auth/login as a new client every time: a unique X-Forwarded-For address and username
-- per request, so a rate limiter takes its normal "allow" path (one counter per client)
-- instead of refusing everything after the first few requests. BENCH_CLIENT_OFFSET (set by
-- bench/run.py, a new range for each wrk run) keeps the clients of one run apart from those of
-- the runs before it: the limits' windows outlast a run, and the same clients coming back in
-- every round and case would be refused after their fifth try.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
local n = tonumber(os.getenv("BENCH_CLIENT_OFFSET") or "0") or 0
request = function()
  n = n + 1
  local ip = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256,
                           math.floor(n / 256) % 256, n % 256)
  local body = "username=bench" .. n .. "&password=not-the-password"
  return wrk.format("POST", "/auth/login", {
    ["Host"] = "localhost",
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["X-Forwarded-For"] = ip,
  }, body)
end
done = report_json
