-- wrk script: POST a real JIRA body with a new X-Atlassian-Webhook-Identifier each time,
-- so every request is a fresh delivery (stored and queued), none a duplicate.
local body_file = os.getenv("BENCH_BODY") or "docs/examples/waiting-for-feedback.json"
local f = assert(io.open(body_file, "rb"))
local body = f:read("*a")
f:close()
local counter = 0
local thread_id = 0

function setup(thread)
  thread:set("tid", thread_id)
  thread_id = thread_id + 1
end

function request()
  counter = counter + 1
  local headers = {["Content-Type"] = "application/json",
                   ["X-Atlassian-Webhook-Identifier"] = string.format("bench-%s-%d-%d", os.time(), tid, counter)}
  return wrk.format("POST", "/webhooks/jira", headers, body)
end

function done(summary, latency, requests)
  local codes = summary.errors
  io.write(string.format("non-2xx or socket errors: %d\n", codes.status + codes.connect + codes.read + codes.write + codes.timeout))
end
