-- GET /api/v2/ping: one static request, so wrk stays on its fast path (no per-request Lua).
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
wrk.method = "GET"
wrk.path = "/api/v2/ping"
wrk.headers["Host"] = "localhost"
done = report_json
