-- wrk script for bench/burst.py: the webhooks of a JIRA bulk transition. Each of BURST_TICKETS tickets
-- PREFIX-n is posted once, with delivery id burst-n (thread t of T takes n = t+1, t+1+T, ...); once a thread
-- has its share answered it stops. Requests wrk has already pipelined beyond that are redeliveries of ids
-- already sent, as JIRA's retries are: answered 200 as duplicates.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
local template = f:read("*a")
f:close()
local tickets = tonumber(os.getenv("BURST_TICKETS"))
local path = os.getenv("BURST_PATH")
local stride = tonumber(os.getenv("BURST_THREADS"))     -- wrk's -t: each thread's Lua state is its own
local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  sent, answered, good, share = 0, 0, 0, 0
  for n = tid + 1, tickets, stride do share = share + 1 end
end

function request()
  local n = tid + 1 + (sent % share) * stride
  sent = sent + 1
  local body = string.gsub(template, "@KEY@", "SUP-" .. n)
  return wrk.format("POST", path, {["Content-Type"] = "application/json",
                                   ["X-Atlassian-Webhook-Identifier"] = "burst-" .. n}, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status >= 200 and status < 300 then good = good + 1 end
  if answered >= share then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local answered, good = 0, 0
  for _, thread in ipairs(threads) do
    answered = answered + thread:get("answered")
    good = good + thread:get("good")
  end
  io.write(string.format("burst: answered %d, 2xx %d, errors %d\n", answered, good,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
