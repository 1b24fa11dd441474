-- wrk script of scripts/bench_wrk.py: the answers of a measurement window counted by
-- status, and their latencies kept by status.
--
--   wrk -t N -c N -d <settle + duration>s -s scripts/bench_wrk.lua URL -- <window_start_us>
--
-- window_start_us is a time on the monotonic clock (Python's time.monotonic() x 10^6):
-- answers received before it (the settling) are not counted, so the connections stay
-- open from the settling into the measured window.
--
-- wrk itself reports one latency distribution for every answer of the whole run (200s
-- and 503s mixed, and "corrected" for coordinated omission), and only a count of the
-- non-2xx answers. This script times each request from request() to response() on the
-- monotonic clock (clock_gettime through LuaJIT's FFI: wrk's Lua has no clock of its
-- own, os.clock is CPU time and os.time whole seconds). response() is not told which
-- connection answered, so the pairing is exact only with one connection per thread:
-- run wrk with -t equal to -c. Each thread keeps a count and a histogram per status
-- (whole microseconds -> answers).
--
-- done() runs in another Lua state after every thread has ended, and thread:get copies
-- only flat values safely (wrk 4.1 pops one value too many after copying a table), so
-- each thread hands its results over as one string, made on demand by a metamethod on
-- its globals when done() asks for `bench_wrk_results`.
--
-- Output:
--   bench_wrk window <start_us> <end_us>
--   bench_wrk thread <lost> <pending_age_us> <status>/<count>:<us>=<n>,<us>=<n>,... ...
-- (one thread line per thread). end_us is when done() ran, just after every thread
-- stopped. lost: requests of the whole run sent again before their answer came (the
-- connection was closed or failed under them); pending_age_us: how long the request
-- in flight at the end had waited, -1 if none. Without LuaJIT's FFI there is no clock:
-- the script prints "bench_wrk noclock" and nothing else.

local have_ffi, ffi = pcall(require, "ffi")
local now_us = nil
if have_ffi then
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_wrk_timespec;
      int clock_gettime(int clk_id, bench_wrk_timespec *tp);
   ]]
   local ts = ffi.new("bench_wrk_timespec[1]")
   local CLOCK_MONOTONIC = 1 -- Linux
   now_us = function()
      ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
      return tonumber(ts[0].tv_sec) * 1000000 + tonumber(ts[0].tv_nsec) / 1000
   end
end

local threads = {}
local window_start = 0 -- answers received before it are not counted
local counts = {} -- status -> answers in the window
local hist = {} -- status -> {whole microseconds -> answers in the window}
local lost = 0
local in_flight = false
local sent_at = 0 -- when the request in flight was sent

function setup(thread)
   table.insert(threads, thread)
   -- wrk calls the first thread's request() once before the run, to check the request
   -- it returns: that call sends nothing
   thread:set("bench_wrk_check", #threads == 1)
end

function init(args)
   window_start = tonumber(args[1]) or 0
   bench_wrk_window_start = window_start -- for done(), in another Lua state
end

function request()
   if bench_wrk_check then
      bench_wrk_check = false
      return wrk.request()
   end
   if in_flight then
      lost = lost + 1
   end
   in_flight = true
   sent_at = now_us()
   return wrk.request()
end

function response(status, headers, body)
   local now = now_us()
   if in_flight and now >= window_start then
      counts[status] = (counts[status] or 0) + 1
      local h = hist[status]
      if h == nil then
         h = {}
         hist[status] = h
      end
      local us = math.floor(now - sent_at)
      h[us] = (h[us] or 0) + 1
   end
   in_flight = false
end

local function results()
   local age = -1
   if in_flight then
      age = math.floor(now_us() - sent_at)
   end
   local parts = { tostring(lost), tostring(age) }
   for status, n in pairs(counts) do
      local cells = {}
      for us, k in pairs(hist[status]) do
         cells[#cells + 1] = us .. "=" .. k
      end
      parts[#parts + 1] = status .. "/" .. n .. ":" .. table.concat(cells, ",")
   end
   return table.concat(parts, " ")
end

setmetatable(_G, {
   __index = function(_, name)
      if name == "bench_wrk_results" then
         return results()
      end
      return nil
   end,
})

function done(summary, latency, requests)
   if now_us == nil then
      print("bench_wrk noclock")
      return
   end
   local start = #threads > 0 and threads[1]:get("bench_wrk_window_start") or 0
   print(string.format("bench_wrk window %d %d", start, now_us()))
   for _, thread in ipairs(threads) do
      print("bench_wrk thread " .. thread:get("bench_wrk_results"))
   end
end

if now_us == nil then
   -- no clock: send plain requests, count nothing, and say so in done()
   request, response = nil, nil
end
