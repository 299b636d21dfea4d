-- A flood of unsigned 1 MiB deliveries to POST /webhooks/github (webhook_1m.lua without its
-- signature header). Every one must be answered 401: the script counts the answers that are
-- not, and bench/run.py reports them as the case's unexpected statuses.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("webhook_1m")
wrk.headers["X-Hub-Signature-256"] = nil

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

unexpected = 0
function response(status, headers, body)
  if status ~= 401 then
    unexpected = unexpected + 1
  end
end

done = function(summary, latency)
  local n = 0
  for _, t in ipairs(threads) do
    n = n + (t:get("unexpected") or 0)
  end
  report_json(summary, latency, string.format('"unexpected_status":%d', n))
end
