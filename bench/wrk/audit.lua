-- POST /api/v1/payments/refund with a small JSON body: a sensitive operation (payment_refund in
-- audit.operations' defaults, docs/audit.md §9.1), so aura-guard holds the body, records it
-- sanitised (card_token redacted) and ships one audit record per request. Static request, so
-- wrk stays on its fast path.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
wrk.method = "POST"
wrk.path = "/api/v1/payments/refund"
wrk.body = '{"payment_id":"pay_0001","amount":1250,"currency":"EUR","reason":"duplicate",' ..
           '"card_token":"tok_bench_only_0123456789"}'
wrk.headers["Host"] = "localhost"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "aura-bench/wrk"
done = report_json
