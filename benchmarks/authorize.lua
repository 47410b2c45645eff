-- wrk script for the authorize benchmark: POST <base>/players/<id>/deposits/authorize with a
-- fresh tx_id on every request, over the players listed in a file (one id per line).
--   wrk ... -s benchmarks/authorize.lua <url> -- <players file> <api key> <base path> <run id>
-- done() prints one line "WRKJSON {...}" that benchmarks/authorize.py reads.

local threads = {}
local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("tid", next_thread)
  table.insert(threads, thread)
end

local players = {}
local amounts = {500, 1000, 2000, 2500, 5000}
local counter = 0
local key, base, run_id, headers

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then players[#players + 1] = line end
  end
  key, base, run_id = args[2], args[3], args[4]
  headers = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}
  math.randomseed(tonumber(run_id:sub(-6), 16) + tid)
end

function request()
  counter = counter + 1
  local pid = players[math.random(#players)]
  local body = string.format('{"tx_id":"wrk-%s-%d-%d","amount_minor":%d,"currency":"EUR"}',
    run_id, tid, counter, amounts[math.random(#amounts)])
  return wrk.format("POST", base .. "/players/" .. pid .. "/deposits/authorize", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
