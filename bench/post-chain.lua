-- wrk script for bench/run.sh's responses_gateway run: 10-turn Responses
-- chains.  Against the gateway (a URL ending in /responses) each request
-- continues a chain whose last answer came back (previous_response_id) or
-- starts one; the turn rides in metadata, which the response repeats, so
-- that response() knows which turn it answered whatever the connection.
-- Against proxy_pass (any other URL) it sends, in turn, the 10 requests
-- the gateway sends the backend for a chain's turns: the same bytes,
-- without the memory (BENCH_CHAIN_DIR/turn-N.json, made by bench/run.sh).
--
--   BENCH_CHAIN_DIR=DIR BENCH_INPUT=FILE wrk -s bench/post-chain.lua URL

local gateway, input, bodies, ready, t, auth

local function slurp(path)
   local f, err = io.open(path, "rb")
   if f == nil then
      error("post-chain.lua: cannot open " .. path .. ": " .. tostring(err))
   end
   local s = f:read("*a")
   f:close()
   return s
end

function init(args)
   local dir = os.getenv("BENCH_CHAIN_DIR")
   if dir == nil or dir == "" then
      error("post-chain.lua: set BENCH_CHAIN_DIR")
   end
   gateway = wrk.path:find("/responses$") ~= nil
   input = slurp(dir .. "/input.txt"):gsub("\n$", "")
   bodies = {}
   for i = 1, 10 do
      bodies[i] = slurp(dir .. "/turn-" .. i .. ".json")
   end
   ready = {}
   t = 0
   auth = "Bearer " .. (os.getenv("BENCH_AUTH") or "client-key")
end

function request()
   local body
   if not gateway then
      t = t % 10 + 1
      body = bodies[t]
   else
      local e = table.remove(ready)
      if e then
         body = '{"model":"gpt-4o-mini","previous_response_id":"' .. e.id
                .. '","metadata":{"turn":"' .. e.turn .. '"},"input":"'
                .. input .. '"}'
      else
         body = '{"model":"gpt-4o-mini","metadata":{"turn":"1"},"input":"'
                .. input .. '"}'
      end
   end
   return wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = auth
   }, body)
end

function response(status, headers, body)
   if not gateway or status ~= 200 then
      return
   end
   local id = body:match('"id":"(resp_mgw_[0-9a-f]+)"')
   local turn = tonumber(body:match('"turn":"(%d+)"') or "10")
   if id and turn < 10 then
      table.insert(ready, { id = id, turn = turn + 1 })
   end
end
