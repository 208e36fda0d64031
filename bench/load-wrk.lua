-- The wrk side of `--load wrk` (bench/load-wrk.ts writes the plan this reads, starts wrk, and reads
-- the lines this prints). It offers what bench/load.ts offers with autocannon: per request a seller
-- drawn uniformly from the plan's sellers with its own api key, a phone number and an amount from
-- the same pools, and an X-Request-Id of <plan name>-<n>; in `mixed`, of every 20 requests 18
-- sales, a credit request and the approval of a credit request this thread created.
--
-- wrk runs this script in one Lua state per thread (init, request, response) and in a separate
-- main state (setup, done). Lines printed:
--   wrk-progress <thread> <2xx> <non-2xx>   every 100 responses and each new second, for the bench's ticks
--   wrk-capped <thread>                     the thread has had its share of --max-requests and stopped
--   wrk-result {json}                       once, from done(): what the bench turns into a LoadResult

-- Main state: the threads, to read their tallies in done().
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

-- Per thread. The tally is a global because thread:get() reads globals only, and flat ("<kind>
-- <status>" -> count) because Debian's wrk 4.1 crashes copying nested tables out of a thread.
tally = {}
local plan, sellers, phones, amounts, mixed, ceiling
local seq = 0
local position = 0
local responses, ok, notOk = 0, 0, 0
local lastSecond = 0
local stopped = false
-- mixed: credit requests answered and not yet approved (oldest first), approvals due whose credit
-- request has not answered yet, and the kind of each credit request or approval in flight.
local created, createdHead, createdTail = {}, 1, 0
local owed = 0
local pending = {}

function init(args)
  plan = dofile(args[1])
  sellers, phones, amounts = plan.sellers, plan.phones, plan.amounts
  mixed = plan.mode == "mixed"
  ceiling = plan.target == "ceiling"
  -- Each thread's Lua state starts from the same seed: unseeded, all threads would draw the same sellers.
  math.randomseed(os.time() + 7919 * thread_index)
  lastSecond = os.time()
end

-- <name>-<n> with n unique across threads: thread i of T numbers its k-th request (k - 1) * T + i.
-- The bench finds the phase's jobs by the prefix "<name>-", as with autocannon's <name>-1, -2, ...
local function nextRequestId()
  seq = seq + 1
  return string.format("%s-%d", plan.name, (seq - 1) * plan.threads + thread_index)
end

-- wrk.format replaces wrk.headers with the table it is given, so every header is here.
local function headers(token, requestId)
  local h = { ["Content-Type"] = "application/json", ["X-Request-Id"] = requestId }
  if token then
    h["Authorization"] = "Bearer " .. token
  end
  return h
end

local function sale()
  local seller = sellers[math.random(#sellers)]
  local phone = phones[math.random(#phones)]
  local amount = amounts[math.random(#amounts)]
  if ceiling then
    -- The bare pipeline: integer seller id, no authentication.
    return wrk.format("POST", "/sale", headers(nil, nextRequestId()),
      string.format('{"seller_id":%s,"phone_number":"%s","amount":%d}', seller.id, phone, amount))
  end
  return wrk.format("POST", "/api/charge-sales", headers(seller.key, nextRequestId()),
    string.format('{"seller_id":"%s","phone_number":"%s","amount":%d}', seller.id, phone, amount))
end

local function creditRequest()
  local seller = sellers[math.random(#sellers)]
  local requestId = nextRequestId()
  pending[requestId] = "credit_request"
  return wrk.format("POST", "/api/credit-requests", headers(seller.key, requestId),
    string.format('{"seller":"%s","amount":%d}', seller.id, plan.creditAmount))
end

local function approval(creditRequestId)
  local requestId = nextRequestId()
  pending[requestId] = "approval"
  return wrk.format("POST", "/api/credit-requests/" .. creditRequestId .. "/process",
    headers(plan.adminToken, requestId), '{"action":"approve"}')
end

function request()
  if not mixed then
    return sale()
  end
  position = position % (plan.mixedSales + 2) + 1
  if position == plan.mixedSales + 1 then
    return creditRequest()
  end
  if position == plan.mixedSales + 2 then
    owed = owed + 1
  end
  -- A thread's connections share request(): the credit request just sent has usually not been
  -- answered when the approval's turn comes, so a sale goes instead and the approval takes the
  -- next turn after its id has arrived. The mix stays 18 : 1 : 1 over a cycle.
  if owed > 0 and createdHead <= createdTail then
    owed = owed - 1
    local id = created[createdHead]
    created[createdHead] = nil
    createdHead = createdHead + 1
    return approval(id)
  end
  return sale()
end

function response(status, hdrs, body)
  local kind = "sale"
  if mixed then
    -- The API echoes X-Request-Id: that says which request this answers.
    local requestId = hdrs["X-Request-Id"] or hdrs["x-request-id"]
    local inFlight = requestId and pending[requestId]
    if inFlight then
      pending[requestId] = nil
      kind = inFlight
      if kind == "credit_request" then
        -- A refused credit request still gets its approval, of an id that matches nothing (as with autocannon).
        createdTail = createdTail + 1
        created[createdTail] = (status == 201 and body:match('"id"%s*:%s*"([^"]+)"')) or plan.nilUuid
      end
    end
  end
  local key = kind .. " " .. status
  tally[key] = (tally[key] or 0) + 1
  responses = responses + 1
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    notOk = notOk + 1
  end
  -- os.time() has whole seconds only: the 100-response steps keep the ticks from lagging a second behind.
  local now = os.time()
  if now ~= lastSecond or responses % 100 == 0 then
    lastSecond = now
    io.write(string.format("wrk-progress %d %d %d\n", thread_index, ok, notOk))
    io.flush()
  end
  -- wrk has no request limit: each thread stops at its share, and the bench interrupts wrk
  -- (SIGINT: it then reports at once) when every thread has.
  if responses >= plan.maxPerThread and not stopped then
    stopped = true
    io.write(string.format("wrk-progress %d %d %d\nwrk-capped %d\n", thread_index, ok, notOk, thread_index))
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("tally")) do
      counts[key] = (counts[key] or 0) + n
    end
  end
  local byKindStatus = {}
  for key, n in pairs(counts) do
    byKindStatus[#byKindStatus + 1] = string.format('"%s":%d', key, n)
  end
  local e = summary.errors
  io.write(string.format(
    'wrk-result {"requests":%d,"durationUs":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latencyUs":{"p50":%.1f,"p90":%.1f,"p99":%.1f,"max":%.1f,"mean":%.1f},"byKindStatus":{%s}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    table.concat(byKindStatus, ",")))
  io.flush()
end
