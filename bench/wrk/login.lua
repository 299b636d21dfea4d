-- POST /auth/login as a new client every time: a unique X-Forwarded-For address and username
-- per request, so a rate limiter takes its normal "allow" path (one counter per client)
-- instead of refusing everything after the first few requests.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
local n = 0
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
