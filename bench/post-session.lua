-- wrk script for bench/run.sh's stateful run: like post.lua, and each
-- request carries one of BENCH_SESSIONS session keys (default 1000) in
-- X-Session-Id, round robin, so after the warm-up every key is pinned.

local body, sessions, n

function init(args)
   local path = args[1] or os.getenv("BENCH_BODY")
   if path == nil or path == "" then
      error("post-session.lua: set BENCH_BODY or pass the body file after --")
   end
   local f, err = io.open(path, "rb")
   if f == nil then
      error("post-session.lua: cannot open " .. path .. ": " .. tostring(err))
   end
   body = f:read("*a")
   f:close()
   sessions = tonumber(os.getenv("BENCH_SESSIONS") or "1000")
   n = 0
end

function request()
   n = n + 1
   return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. (os.getenv("BENCH_AUTH") or "client-key"),
      ["X-Session-Id"] = "bench-session-" .. (n % sessions)
   }, body)
end
