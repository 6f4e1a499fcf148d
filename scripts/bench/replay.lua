-- wrk script: replays the signed deliveries written by scripts/bench/gen-requests.py, once each.
--
--   wrk -t2 -c32 -d300s --timeout 10s --latency -s scripts/bench/replay.lua URL -- \
--       file=/tmp/requests.txt threads=2 donedir=/tmp/done
--
-- Every thread loads the file at init and keeps only its own jobs (job ordinal mod threads), so
-- the threads' slices are disjoint and each delivery is sent exactly once. The slice lives in
-- memory outside Lua's heap: kept as Lua strings, a long run's slice would make every garbage
-- collection (and LuaJIT's string table) larger, and the load tool would cost more per request
-- the more deliveries a run has, which would skew the comparison between targets. A thread stops itself
-- (wrk.thread:stop()) once every one of its deliveries is answered; the last thread to finish
-- sends wrk SIGINT, which ends wrk's -d sleep early (so -d is only a safety timeout). wrk's own
-- Requests/sec divides by the whole run, so done() prints its own figures on a "GAA-BENCH" line,
-- timed from the first request sent to the last answer received.

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } gaa_timespec;
int clock_gettime(int clk_id, gaa_timespec *tp);
int getpid(void);
int kill(int pid, int sig);
void *malloc(size_t size);
void *realloc(void *ptr, size_t size);
]]
local CLOCK_MONOTONIC, SIGINT = 1, 2
local clock = ffi.new("gaa_timespec")
local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
   return tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9
end

-- main state ---------------------------------------------------------------------------------

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

-- thread state -------------------------------------------------------------------------------

local templates, head = {}, nil
-- This thread's delivery lines, back to back in C memory; line i is bytes
-- [starts[i - 1], starts[i]) (starts[0] = 0).
local lines, starts, capacity, used = nil, nil, 0, 0
local sent = 0
local verify_pending = false
local donedir, nthreads
-- Globals, because done() reads them from the main state with thread:get().
nslice, answered, bad, first_at, last_at = 0, 0, 0, 0, 0

local function option(args, key)
   for _, a in pairs(args) do
      local k, v = string.match(a, "^(%w+)=(.*)$")
      if k == key then return v end
   end
end

local function fail(msg)
   io.stderr:write("replay.lua: ", msg, "\n")
   os.exit(2)
end

local function keep(batch)
   local n = #batch
   if n == 0 then return end
   local bytes = 0
   for i = 1, n do bytes = bytes + #batch[i] end
   if used + bytes > capacity then
      capacity = math.max(capacity * 2, used + bytes, 1024 * 1024)
      lines = ffi.cast("char *", ffi.C.realloc(lines, capacity))
      if lines == nil then fail("out of memory") end
   end
   local grown = ffi.cast("int64_t *", ffi.C.realloc(starts, (nslice + n + 1) * 8))
   if grown == nil then fail("out of memory") end
   starts = grown
   starts[0] = 0
   for i = 1, n do
      ffi.copy(lines + used, batch[i], #batch[i])
      used = used + #batch[i]
      nslice = nslice + 1
      starts[nslice] = used
      batch[i] = nil
   end
end

local function line_at(i)
   return ffi.string(lines + starts[i - 1], starts[i] - starts[i - 1])
end

local function load(path, me, count)
   local f = io.open(path, "rb") or fail("cannot open " .. path)
   if f:read("*l") ~= "gaa-replay 1" then fail(path .. ": not a gaa-replay 1 file") end
   local headers = {}
   while true do
      local line = f:read("*l") or fail(path .. ": truncated header")
      local word, rest = string.match(line, "^(%S+) ?(.*)$")
      if word == "header" then
         headers[#headers + 1] = rest .. "\r\n"
      elseif word == "template" then
         local fields = {}
         for x in string.gmatch(rest, "%S+") do fields[#fields + 1] = x end
         local index, nholes = tonumber(fields[1]), tonumber(fields[3])
         local t = { holes = {}, parts = {} }
         for i = 1, nholes do t.holes[i] = tonumber(fields[3 + i]) end
         for i = 1, nholes + 1 do
            local len = tonumber(f:read("*l"))
            t.parts[i] = len > 0 and f:read(len) or ""
            f:read("*l")
         end
         templates[index] = t
      elseif word == "deliveries" then
         break
      end
   end
   -- Host comes from the URL wrk was given, set by wrk.init before init() runs.
   head = "Host: " .. wrk.headers["Host"] .. "\r\n" .. table.concat(headers)
   local kept = {}
   for line in f:lines() do
      local ordinal = tonumber(string.match(line, "^(%d+) "))
      if ordinal % count == me then
         kept[#kept + 1] = line
         if #kept == 4096 then keep(kept) end
      end
   end
   keep(kept)
   f:close()
end

function init(args)
   local file = option(args, "file") or fail("missing file=PATH after --")
   nthreads = tonumber(option(args, "threads") or fail("missing threads=N after --"))
   donedir = option(args, "donedir") or fail("missing donedir=DIR after --")
   load(file, tid, nthreads)
   if nslice == 0 then fail("thread " .. tid .. " has no deliveries: generate more than threads * 3") end
   -- wrk calls request() once in the first thread to check the request parses; that call must
   -- not use up a delivery.
   verify_pending = tid == 0
end

local body_buf, req_buf = {}, {}

local function build(line)
   local f = {}
   for x in string.gmatch(line, "%S+") do f[#f + 1] = x end
   local t = templates[tonumber(f[2])]
   local parts, holes = t.parts, t.holes
   local n = 0
   for i = 1, #holes do
      body_buf[n + 1] = parts[i]
      body_buf[n + 2] = f[4 + holes[i]]
      n = n + 2
   end
   body_buf[n + 1] = parts[#holes + 1]
   local body = table.concat(body_buf, "", 1, n + 1)
   req_buf[1] = "POST " .. wrk.path .. " HTTP/1.1\r\n"
   req_buf[2] = head
   req_buf[3] = "X-GitHub-Delivery: " .. f[3] .. "\r\n"
   req_buf[4] = "X-Hub-Signature-256: sha256=" .. f[4] .. "\r\n"
   req_buf[5] = "Content-Length: " .. #body .. "\r\n\r\n"
   req_buf[6] = body
   return table.concat(req_buf, "", 1, 6)
end

function request()
   if verify_pending then
      verify_pending = false
      return build(line_at(1))
   end
   if sent >= nslice then
      -- Nothing left: an empty write leaves this connection idle until the thread stops.
      return ""
   end
   sent = sent + 1
   if sent == 1 then first_at = now() end
   return build(line_at(sent))
end

local function finished()
   local marker = donedir .. "/done." .. tid
   local f = io.open(marker, "w")
   if f then f:close() end
   for i = 0, nthreads - 1 do
      local g = io.open(donedir .. "/done." .. i, "r")
      if not g then return end
      g:close()
   end
   ffi.C.kill(ffi.C.getpid(), SIGINT)
end

function response(status, headers, body)
   answered = answered + 1
   last_at = now()
   if status < 200 or status > 299 then
      bad = bad + 1
      if bad <= 3 then
         io.stderr:write(string.format("replay.lua: thread %d got %d: %s\n", tid, status, string.sub(body or "", 1, 200)))
      end
   end
   if answered == nslice then
      wrk.thread:stop()
      finished()
   end
end

-- main state again ---------------------------------------------------------------------------

function done(summary, latency, requests)
   local expected, got, non2xx, first, last = 0, 0, 0, math.huge, 0
   for _, t in ipairs(threads) do
      expected = expected + (t:get("nslice") or 0)
      got = got + (t:get("answered") or 0)
      non2xx = non2xx + (t:get("bad") or 0)
      local f, l = t:get("first_at") or 0, t:get("last_at") or 0
      if f > 0 and f < first then first = f end
      if l > last then last = l end
   end
   local seconds = (last > first) and (last - first) or 0
   local rate = seconds > 0 and got / seconds or 0
   local e = summary.errors
   io.write(string.format(
      "GAA-BENCH expected=%d answered=%d non2xx=%d seconds=%.3f rate=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d " ..
      "connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
      expected, got, non2xx, seconds, rate,
      math.floor(latency:percentile(50)), math.floor(latency:percentile(90)),
      math.floor(latency:percentile(99)), math.floor(latency.max),
      e.connect, e.read, e.write, e.timeout))
end
