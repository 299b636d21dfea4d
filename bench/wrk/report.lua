-- Shared by the bench's wrk scripts: prints one JSON line with the run's totals and latency
-- percentiles (microseconds), so bench/run.py never scrapes wrk's human-readable text.
-- `extra`, when a string, is more JSON members ('"name":value,...') added to the line (wrk
-- itself passes its `requests` object as the third argument of `done`: ignored).
function report_json(summary, latency, extra)
  if type(extra) ~= "string" then
    extra = nil
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {' .. (extra and (extra .. ',') or '') ..
    '"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
