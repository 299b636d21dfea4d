-- POST /webhooks/github with a 1 MiB GitHub-signed delivery, the same every time. bench/run.py
-- writes the body to a file (too large for an environment variable) and signs it with the
-- bench's test secret: BENCH_WEBHOOK_1M_FILE, BENCH_WEBHOOK_1M_SIGNATURE. A static request
-- keeps wrk on its fast path.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
local f = assert(io.open(os.getenv("BENCH_WEBHOOK_1M_FILE"), "rb"))
wrk.method = "POST"
wrk.path = "/webhooks/github"
wrk.body = f:read("*a")
f:close()
wrk.headers["Host"] = "localhost"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = os.getenv("BENCH_WEBHOOK_1M_SIGNATURE") or ""
done = report_json
