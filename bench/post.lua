-- wrk script for bench/run.sh: POSTs one JSON request body, read from a file,
-- with the headers an OpenAI client sends.
--
--   BENCH_BODY=/path/to/request.json wrk -s bench/post.lua URL
--   wrk -s bench/post.lua URL -- /path/to/request.json
--
-- Optional: BENCH_AUTH overrides the bearer token (default "client-key").

function init(args)
   local path = args[1] or os.getenv("BENCH_BODY")  -- args[0] is the URL
   if path == nil or path == "" then
      error("post.lua: set BENCH_BODY or pass the body file after --")
   end
   local f, err = io.open(path, "rb")
   if f == nil then
      error("post.lua: cannot open " .. path .. ": " .. tostring(err))
   end
   local body = f:read("*a")
   f:close()
   if body == nil or #body == 0 then
      error("post.lua: empty request body in " .. path)
   end

   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_AUTH") or "client-key")
end
