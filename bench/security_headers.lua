-- The bench's Lua case: the same response headers aura-guard adds in production (the five
-- always-on headers, CSP and HSTS), set from Envoy's Lua filter.
local headers = {
  ["x-content-type-options"] = "nosniff",
  ["x-frame-options"] = "DENY",
  ["x-xss-protection"] = "1; mode=block",
  ["referrer-policy"] = "strict-origin-when-cross-origin",
  ["permissions-policy"] = "geolocation=(), microphone=(), camera=()",
  ["content-security-policy"] = "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self' https://api.auraconnect.ai wss://api.auraconnect.ai; frame-ancestors 'none';",
  ["strict-transport-security"] = "max-age=31536000; includeSubDomains; preload",
}

function envoy_on_response(handle)
  local h = handle:headers()
  for name, value in pairs(headers) do
    h:replace(name, value)
  end
end
