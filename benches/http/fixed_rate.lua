-- wrk script: post_payload.lua at a fixed rate. Each connection waits DELAY_MS after every
-- answer before its next request, which holds the rate near connections x 1000 / DELAY_MS
-- while the server keeps up.
--
--   wrk -s fixed_rate.lua http://127.0.0.1:8082 -- PAYLOAD_DIR NAME DELAY_MS

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "post_payload.lua")

local pause_ms = 2
local post_init = init

function init(args)
  post_init(args)
  pause_ms = tonumber(args[3]) or pause_ms
end

function delay()
  return pause_ms
end
