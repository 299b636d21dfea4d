-- POST /webhooks/github: one GitHub-signed delivery (about 1 KB of JSON), the same every
-- time. bench/run.py signs it with the bench's test secret and passes the body and signature in
-- BENCH_WEBHOOK_BODY / BENCH_WEBHOOK_SIGNATURE; a static request keeps wrk on its fast path.
package.path = (os.getenv("BENCH_WRK_DIR") or "bench/wrk") .. "/?.lua;" .. package.path
require("report")
wrk.method = "POST"
wrk.path = "/webhooks/github"
wrk.body = os.getenv("BENCH_WEBHOOK_BODY") or "{}"
wrk.headers["Host"] = "localhost"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = os.getenv("BENCH_WEBHOOK_SIGNATURE") or ""
done = report_json
