-- wrk script: POSTs one signed benchmark payload on every request, as Twilio would.
--
--   wrk -s post_payload.lua http://127.0.0.1:8082 -- PAYLOAD_DIR NAME
--
-- Prints one JSON line when done: requests, duration, p50/p99 latency, errors.

function init(args)
  local dir, name = args[1], args[2]
  local function read(ext)
    local file = assert(io.open(dir .. "/" .. name .. "." .. ext, "rb"))
    local text = file:read("*a")
    file:close()
    return text
  end
  wrk.method = "POST"
  wrk.path = read("path")
  wrk.body = read("body")
  wrk.headers["Content-Type"] = read("ctype")
  wrk.headers["X-Twilio-Signature"] = read("sig")
  wrk.headers["User-Agent"] = "TwilioProxy/1.1"
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write + errors.timeout))
end
