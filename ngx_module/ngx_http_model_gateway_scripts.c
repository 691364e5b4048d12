
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Lua scripts that keep session pins, object ids and limit counters in
 * Redis.  A pin's value is "BACKEND|CREATED_MS"; times come from Redis' own
 * clock, so every nginx node agrees on a pin's age.  Every script touches
 * one key, or (LIMIT) keys that all carry one tenant's hash tag, so each
 * runs on a single Redis Cluster slot (the layout: README "Redis").
 */


#include "ngx_http_model_gateway_module.h"
#include "ngx_http_model_gateway_redis.h"

#include <openssl/sha.h>


ngx_http_mg_redis_script_t  ngx_http_mg_redis_scripts[] = {

    /*
     * PIN: KEYS[1] the pin; ARGV[1] the backend to pin a new session to,
     * ARGV[2] the idle timeout and ARGV[3] the maximum lifetime (ms).
     * Returns {backend, 1 if the pin is new}.  An existing pin within its
     * lifetime wins and has its idle timeout refreshed; so concurrent
     * first requests on different nodes end on one backend.
     */

    { "local t = redis.call('TIME') "
      "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
      "local idle = tonumber(ARGV[2]) "
      "local max = tonumber(ARGV[3]) "
      "local v = redis.call('GET', KEYS[1]) "
      "if v then "
        "local sep = string.find(v, '|', 1, true) "
        "if sep then "
          "local born = tonumber(string.sub(v, sep + 1)) "
          "if born and now - born < max then "
            "redis.call('PEXPIRE', KEYS[1], "
                       "math.min(idle, max - (now - born))) "
            "return {string.sub(v, 1, sep - 1), 0} "
          "end "
        "end "
      "end "
      "redis.call('SET', KEYS[1], ARGV[1] .. '|' .. now, 'PX', "
                 "math.min(idle, max)) "
      "return {ARGV[1], 1}",
      1, "" },

    /*
     * MOVE: KEYS[1] the pin; ARGV[1] the backend it should still name,
     * ARGV[2] the backend that served instead.  Compare-and-set, keeping
     * the pin's age and expiry.
     */

    { "local v = redis.call('GET', KEYS[1]) "
      "if not v then return 0 end "
      "local sep = string.find(v, '|', 1, true) "
      "if not sep or string.sub(v, 1, sep - 1) ~= ARGV[1] then return 0 end "
      "redis.call('SET', KEYS[1], ARGV[2] .. string.sub(v, sep), 'KEEPTTL') "
      "return 1",
      1, "" },

    /*
     * DROP: KEYS[1] the pin; ARGV[1] the backend it should name.
     * Compare-and-delete, for a new session whose every attempt failed.
     */

    { "local v = redis.call('GET', KEYS[1]) "
      "if not v then return 0 end "
      "local sep = string.find(v, '|', 1, true) "
      "if not sep or string.sub(v, 1, sep - 1) ~= ARGV[1] then return 0 end "
      "return redis.call('DEL', KEYS[1])",
      1, "" },

    /*
     * LOOKUP: KEYS[1] an object id's key; ARGV[1] the caller's tenant (""
     * without identity).  A record is "TENANT|BACKEND" for an id a tenant
     * owns, or a bare "BACKEND" for one that no tenant owns (written
     * without identity, or before tenants existed).  Returns the backend
     * for the owner (or, without identity, for an unowned id); nil for an
     * unknown id; 0 for another tenant's id; 1 for an unowned id asked for
     * by a tenant.  One key: the script is Cluster-safe whatever its slot.
     */

    { "local v = redis.call('GET', KEYS[1]) "
      "if not v then return nil end "
      "local sep = string.find(v, '|', 1, true) "
      "if sep then "
        "if string.sub(v, 1, sep - 1) == ARGV[1] then "
          "return string.sub(v, sep + 1) "
        "end "
        "return 0 "
      "end "
      "if ARGV[1] == '' then return v end "
      "return 1",
      1, "" },

    /*
     * STORE: KEYS[1] an object id's key; ARGV[1] the record
     * ("TENANT|BACKEND", or "BACKEND" without identity), ARGV[2] the time
     * to keep it (ms, 0: no expiry), ARGV[3] the tenant ("" without
     * identity).  A record of another owner is left alone (returns 0): an
     * id, even one a backend repeats, never changes hands.
     */

    { "local v = redis.call('GET', KEYS[1]) "
      "if v then "
        "local sep = string.find(v, '|', 1, true) "
        "local owner = '' "
        "if sep then owner = string.sub(v, 1, sep - 1) end "
        "if owner ~= ARGV[3] then return 0 end "
      "end "
      "if ARGV[2] == '0' then "
        "return redis.call('SET', KEYS[1], ARGV[1]) "
      "end "
      "return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])",
      1, "" },

    /*
     * LIMIT: KEYS[1..n] a request's limit counters, all of one tenant
     * (one hash tag), and KEYS[n+1], when given, its session pin.
     * ARGV[1] n; for each counter i ARGV[4i-2] its kind ('r' per minute,
     * 'd' per UTC day, 'b' budget: src/mg_limit.c has the same rules),
     * ARGV[4i-1] its limit, ARGV[4i] the cost (1 request, or the tokens
     * reserved), ARGV[4i+1] a lease asked for besides (units the node
     * keeps to admit its next requests alone; granted only whole, and only
     * where it fits); then, with a pin, the PIN script's three arguments.
     * Charges every counter or none.  Returns {1 if charged, the counter
     * whose refusal decides (one that never fits first, else the longest
     * wait), its wait in ms (-1: never), the UTC day, then per counter
     * what remains, the ms until it is full again (-1: never) and the lease
     * granted}, and with a pin and a charge {backend, 1 if new} as PIN.
     * So a request's limits and its session cost one round trip.
     */

    { "local t = redis.call('TIME') "
      "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
      "local day = math.floor(now / 86400000) "
      "local n = tonumber(ARGV[1]) "
      "local out = {1, 0, 0, day} "
      "local st = {} "
      "local function take(kind, lim, v, cost) "
        "local ok, rem, reset, retry, s "
        "if kind == 'r' then "
          "local p = 60000 / lim "
          "local tat = tonumber(v) or now "
          "if tat < now then tat = now end "
          "local e = tat + cost * p "
          "if e - now <= 60000.001 then "
            "ok = true s = e "
            "rem = math.max(math.floor((60000 - (e - now)) / p + 1e-6), 0) "
            "reset = e - now "
          "else "
            "ok = false reset = tat - now "
            "rem = math.max(math.floor((60000 - (tat - now)) / p + 1e-6), "
                           "0) "
            "if cost > lim then retry = -1 else retry = e - 60000 - now end "
          "end "
        "else "
          "local used = 0 "
          "if kind == 'd' then "
            "reset = (day + 1) * 86400000 - now "
            "if v then "
              "local sep = string.find(v, '|', 1, true) "
              "if sep and tonumber(string.sub(v, 1, sep - 1)) == day then "
                "used = tonumber(string.sub(v, sep + 1)) or 0 "
              "end "
            "end "
          "else "
            "reset = -1 used = tonumber(v) or 0 "
          "end "
          "if used + cost <= lim then "
            "ok = true s = used + cost rem = lim - used - cost "
          "else "
            "ok = false rem = math.max(lim - used, 0) "
            "if cost > lim or kind == 'b' then retry = -1 "
            "else retry = reset end "
          "end "
        "end "
        "return ok, s, rem, reset, retry "
      "end "
      "for i = 1, n do "
        "local kind = ARGV[4 * i - 2] "
        "local lim = tonumber(ARGV[4 * i - 1]) "
        "local cost = tonumber(ARGV[4 * i]) "
        "local lease = tonumber(ARGV[4 * i + 1]) "
        "local v = redis.call('GET', KEYS[i]) "
        "local ok, s, rem, reset, retry "
        "if lease > 0 then "
          "ok, s, rem, reset, retry = take(kind, lim, v, cost + lease) "
        "end "
        "if not ok then "
          "lease = 0 "
          "ok, s, rem, reset, retry = take(kind, lim, v, cost) "
        "end "
        "st[i] = s "
        "if not ok then "
          "out[1] = 0 "
          "if out[2] == 0 or (retry < 0 and out[3] >= 0) "
             "or (out[3] >= 0 and retry > out[3]) then "
            "out[2] = i out[3] = math.ceil(retry) "
          "end "
        "end "
        "out[#out + 1] = rem "
        "out[#out + 1] = math.ceil(reset) "
        "out[#out + 1] = lease "
      "end "
      "if out[1] == 0 then return out end "
      "for i = 1, n do "
        "local kind = ARGV[4 * i - 2] "
        "if kind == 'r' then "
          "redis.call('SET', KEYS[i], string.format('%.17g', st[i]), 'PX', "
                     "math.ceil(st[i] - now) + 1000) "
        "elseif kind == 'd' then "
          "redis.call('SET', KEYS[i], "
                     "day .. '|' .. string.format('%.0f', st[i]), "
                     "'PX', 172800000) "
        "else "
          "redis.call('SET', KEYS[i], string.format('%.0f', st[i])) "
        "end "
      "end "
      "if #KEYS == n then return out end "
      "local pin = KEYS[n + 1] "
      "local backend = ARGV[4 * n + 2] "
      "local idle = tonumber(ARGV[4 * n + 3]) "
      "local max = tonumber(ARGV[4 * n + 4]) "
      "local v = redis.call('GET', pin) "
      "if v then "
        "local sep = string.find(v, '|', 1, true) "
        "if sep then "
          "local born = tonumber(string.sub(v, sep + 1)) "
          "if born and now - born < max then "
            "redis.call('PEXPIRE', pin, math.min(idle, max - (now - born))) "
            "out[#out + 1] = string.sub(v, 1, sep - 1) "
            "out[#out + 1] = 0 "
            "return out "
          "end "
        "end "
      "end "
      "redis.call('SET', pin, backend .. '|' .. now, 'PX', "
                 "math.min(idle, max)) "
      "out[#out + 1] = backend "
      "out[#out + 1] = 1 "
      "return out",
      0, "" },

    /*
     * SETTLE: KEYS[1..n] the counters a request was charged; ARGV[1] n,
     * ARGV[2] the UTC day of the charge, ARGV[3] the tokens to add (the
     * real usage minus the reservation; negative gives back), then per
     * counter ARGV[2i+2] its kind and ARGV[2i+3] its limit.  A day
     * counter of another day is left alone; nothing goes below empty.
     */

    { "local t = redis.call('TIME') "
      "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
      "local n = tonumber(ARGV[1]) "
      "local day = ARGV[2] "
      "local d = tonumber(ARGV[3]) "
      "for i = 1, n do "
        "local kind = ARGV[2 * i + 2] "
        "local lim = tonumber(ARGV[2 * i + 3]) "
        "local v = redis.call('GET', KEYS[i]) "
        "if kind == 'r' then "
          "local tat = tonumber(v) or now "
          "if tat < now then tat = now end "
          "tat = tat + d * 60000 / lim "
          "if tat <= now then redis.call('DEL', KEYS[i]) "
          "else "
            "redis.call('SET', KEYS[i], string.format('%.17g', tat), "
                       "'PX', math.ceil(tat - now) + 1000) "
          "end "
        "elseif kind == 'd' then "
          "if v then "
            "local sep = string.find(v, '|', 1, true) "
            "if sep and string.sub(v, 1, sep - 1) == day then "
              "local used = math.max((tonumber(string.sub(v, sep + 1)) "
                                     "or 0) + d, 0) "
              "redis.call('SET', KEYS[i], "
                         "day .. '|' .. string.format('%.0f', used), "
                         "'KEEPTTL') "
            "end "
          "end "
        "else "
          "redis.call('SET', KEYS[i], "
                     "string.format('%.0f', math.max((tonumber(v) or 0) + d, "
                                                    "0))) "
        "end "
      "end "
      "return 1",
      0, "" },

    /*
     * The memory of gateway-held Responses (_memory*.c).  A chain's items
     * are Redis lists, one item (compact JSON) per element; element 0 of
     * a list is its header: "" for a chain's first list, "PARENT END" for
     * a fork (it continues PARENT's first END elements).  A response is a
     * hash: l its list, s where its input starts there, i how many input
     * items, e the end of its output, o the response object, b the
     * backend that served it.  All of a tenant's keys carry its hash tag.
     *
     * A conversation is a hash too: l its list (appended to, never
     * forked), o its object, b the backend of its last turn.  An item
     * deleted from a conversation leaves an empty element, skipped.
     *
     * MREAD: KEYS[1] a response or a conversation; ARGV[1] the lists' key
     * prefix, ARGV[2] the most items and ARGV[3] the most bytes to
     * return.  Walks the chain from its end (a conversation's: its whole
     * list), newest first, in slices of 64, up to the limits.  Returns
     * {0} for an unknown id, {3} when a list the chain needs is missing
     * or short (evicted), else {1, backend, 1 if older items were left
     * out, list, end, the items oldest first}.
     */

    { "local r = redis.call('HMGET', KEYS[1], 'l', 'e', 'b') "
      "if not r[1] then return {0} end "
      "local maxi, maxb = tonumber(ARGV[2]), tonumber(ARGV[3]) "
      "local l, e = r[1], tonumber(r[2]) "
      "if not e then e = redis.call('LLEN', ARGV[1] .. l) "
        "if e == 0 then return {3} end "
      "end "
      "local got, n, bytes, more = {}, 0, 0, 0 "
      "while true do "
        "local k = ARGV[1] .. l "
        "local h = redis.call('LINDEX', k, 0) "
        "if not h or redis.call('LLEN', k) < e then return {3} end "
        "local hi = e - 1 "
        "while hi >= 1 and more == 0 do "
          "local lo = math.max(1, hi - 63) "
          "local seg = redis.call('LRANGE', k, lo, hi) "
          "for i = #seg, 1, -1 do "
            "if #seg[i] > 0 then "
              "if n >= maxi or bytes + #seg[i] > maxb then "
                "more = 1 break "
              "end "
              "n = n + 1 bytes = bytes + #seg[i] got[n] = seg[i] "
            "end "
          "end "
          "hi = lo - 1 "
        "end "
        "if more == 1 or h == '' then break end "
        "local sp = string.find(h, ' ', 1, true) "
        "if not sp then return {3} end "
        "l = string.sub(h, 1, sp - 1) e = tonumber(string.sub(h, sp + 1)) "
      "end "
      "local res = {1, r[3] or '', more, r[1], tostring(e)} "
      "for i = n, 1, -1 do res[#res + 1] = got[i] end "
      "return res",
      1, "" },

    /*
     * MWRITE: KEYS[1] the new response; ARGV[1] the lists' key prefix,
     * ARGV[2] the parent's list ("": a new chain), ARGV[3] the parent's
     * end, ARGV[4] the id of a new list, ARGV[5] the time to keep (ms),
     * ARGV[6] the number of input items, ARGV[7] the response object,
     * ARGV[8] the backend, ARGV[9] the items, one per line, ARGV[10] a
     * conversation ("" none), ARGV[11] the lists' time to keep (ms).  The
     * turn is appended to the parent's list when it ends there (or is a
     * conversation's: ARGV[3] ""), else (a fork, or a new chain) to a new
     * list.  Every list of the chain gets the TTL again.  Returns 1, or 0
     * when the parent's list or the conversation is gone (nothing is
     * written).
     */

    { "local ttl, lttl = tonumber(ARGV[5]), tonumber(ARGV[11]) "
      "local l, base "
      "if ARGV[10] ~= '' and redis.call('EXISTS', ARGV[10]) == 0 then "
        "return 0 "
      "end "
      "if ARGV[2] == '' then "
        "l = ARGV[4] base = 1 "
        "redis.call('RPUSH', ARGV[1] .. l, '') "
      "else "
        "local len = redis.call('LLEN', ARGV[1] .. ARGV[2]) "
        "local pe = tonumber(ARGV[3]) or len "
        "if len < pe or len == 0 then return 0 end "
        "if len == pe then l = ARGV[2] base = pe "
        "else "
          "l = ARGV[4] base = 1 "
          "redis.call('RPUSH', ARGV[1] .. l, ARGV[2] .. ' ' .. ARGV[3]) "
        "end "
      "end "
      "local k = ARGV[1] .. l "
      "local s, n, items = 1, 0, ARGV[9] "
      "while s <= #items do "
        "local nl = string.find(items, '\\n', s, true) or #items + 1 "
        "redis.call('RPUSH', k, string.sub(items, s, nl - 1)) "
        "n = n + 1 s = nl + 1 "
      "end "
      "redis.call('HSET', KEYS[1], 'l', l, 's', base, 'i', ARGV[6], "
                 "'e', base + n, 'o', ARGV[7], 'b', ARGV[8]) "
      "if ARGV[10] ~= '' then "
        "redis.call('HSET', ARGV[10], 'b', ARGV[8]) "
        "if lttl > 0 then redis.call('PEXPIRE', ARGV[10], lttl) end "
      "end "
      "if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end "
      "if lttl > 0 then "
        "local d = 0 "
        "while l and d < 100000 do "
          "redis.call('PEXPIRE', ARGV[1] .. l, lttl) "
          "local h = redis.call('LINDEX', ARGV[1] .. l, 0) "
          "l = nil d = d + 1 "
          "if h and h ~= '' then "
            "local sp = string.find(h, ' ', 1, true) "
            "if sp then l = string.sub(h, 1, sp - 1) end "
          "end "
        "end "
      "end "
      "return 1",
      1, "" },

    /*
     * MGET: KEYS[1] a response; ARGV[1] the lists' key prefix, ARGV[2]
     * 'o' for its object or 'i' for its input items.  Returns {0} for an
     * unknown response, {3} when its list is gone, else {1, the object}
     * or {1, the items}.
     */

    { "local r = redis.call('HMGET', KEYS[1], 'o', 'l', 's', 'i') "
      "if not r[1] then return {0} end "
      "if ARGV[2] == 'o' then return {1, r[1]} end "
      "local s, n = tonumber(r[3]), tonumber(r[4]) "
      "local k = ARGV[1] .. r[2] "
      "if redis.call('LLEN', k) < s + n then return {3} end "
      "local res = {1} "
      "if n > 0 then "
        "for _, v in ipairs(redis.call('LRANGE', k, s, s + n - 1)) do "
          "if #v > 0 then res[#res + 1] = v end "
        "end "
      "end "
      "return res",
      1, "" },

    /*
     * MCONV: KEYS[1] a conversation; ARGV[1] the lists' key prefix,
     * ARGV[2] what to do:
     *   new      ARGV[3] its list's id, ARGV[4] its object, ARGV[5] the
     *            time to keep (ms, 0: no expiry), ARGV[6] items, one per
     *            line, ARGV[7] its created_at: {1}
     *   get      {1, object}
     *   meta     the object ARGV[3] .. created_at .. ARGV[4]: {1, object}
     *   del      the conversation and its items: {1}
     *   add      ARGV[3] items, one per line, ARGV[4] the time to keep:
     *            {1}
     *   items    ARGV[3] 'asc' or 'desc', ARGV[4] the most, ARGV[5] the
     *            id to start after ('' none), ARGV[6] the most bytes (one
     *            item at least): {1, 1 if more, items...}, or {2} when
     *            there is no such item
     *   item     ARGV[3] an item's id: {1, item} or {2}
     *   delitem  ARGV[3] an item's id, left as an empty element:
     *            {1, object} or {2}
     * {0} for an unknown conversation, {3} when its items are gone.
     * Lists are walked in slices of 64.
     */

    { "local k, lp, op = KEYS[1], ARGV[1], ARGV[2] "
      "local function push(lk, items) "
        "local s = 1 "
        "while s <= #items do "
          "local nl = string.find(items, '\\n', s, true) or #items + 1 "
          "redis.call('RPUSH', lk, string.sub(items, s, nl - 1)) "
          "s = nl + 1 "
        "end "
      "end "
      "if op == 'new' then "
        "local lk = lp .. ARGV[3] "
        "redis.call('RPUSH', lk, '') "
        "push(lk, ARGV[6]) "
        "redis.call('HSET', k, 'l', ARGV[3], 'o', ARGV[4], 't', ARGV[7]) "
        "local ttl = tonumber(ARGV[5]) "
        "if ttl > 0 then "
          "redis.call('PEXPIRE', k, ttl) redis.call('PEXPIRE', lk, ttl) "
        "end "
        "return {1} "
      "end "
      "local c = redis.call('HMGET', k, 'l', 'o', 't') "
      "if not c[1] then return {0} end "
      "local lk = lp .. c[1] "
      "if op == 'get' then return {1, c[2]} end "
      "if op == 'meta' then "
        "local o = ARGV[3] .. (c[3] or '0') .. ARGV[4] "
        "redis.call('HSET', k, 'o', o) return {1, o} "
      "end "
      "if op == 'del' then redis.call('DEL', k, lk) return {1} end "
      "local len = redis.call('LLEN', lk) "
      "if len == 0 then return {3} end "
      "if op == 'add' then "
        "push(lk, ARGV[3]) "
        "local ttl = tonumber(ARGV[4]) "
        "if ttl > 0 then "
          "redis.call('PEXPIRE', k, ttl) redis.call('PEXPIRE', lk, ttl) "
        "end "
        "return {1} "
      "end "
      "local function each(desc, f) "
        "if desc then "
          "local hi = len - 1 "
          "while hi >= 1 do "
            "local lo = math.max(1, hi - 63) "
            "local seg = redis.call('LRANGE', lk, lo, hi) "
            "for j = #seg, 1, -1 do "
              "if #seg[j] > 0 and f(lo + j - 1, seg[j]) then return end "
            "end "
            "hi = lo - 1 "
          "end "
        "else "
          "local lo = 1 "
          "while lo < len do "
            "local hi = math.min(len - 1, lo + 63) "
            "local seg = redis.call('LRANGE', lk, lo, hi) "
            "for j = 1, #seg do "
              "if #seg[j] > 0 and f(lo + j - 1, seg[j]) then return end "
            "end "
            "lo = hi + 1 "
          "end "
        "end "
      "end "
      "local function idof(v) "
        "local ok, j = pcall(cjson.decode, v) "
        "if ok and type(j) == 'table' then return j.id end "
      "end "
      "if op == 'items' then "
        "local after, lim = ARGV[5], tonumber(ARGV[4]) "
        "local maxb, bytes = tonumber(ARGV[6]), 0 "
        "local seen, out = after == '', {1, 0} "
        "each(ARGV[3] ~= 'asc', function(p, v) "
          "if not seen then seen = (idof(v) == after) return false end "
          "if #out - 2 >= lim or (#out > 2 and bytes + #v > maxb) then "
            "out[2] = 1 return true "
          "end "
          "bytes = bytes + #v "
          "out[#out + 1] = v return false "
        "end) "
        "if not seen then return {2} end "
        "return out "
      "end "
      "local pos, item "
      "each(false, function(p, v) "
        "if idof(v) == ARGV[3] then pos = p item = v return true end "
        "return false "
      "end) "
      "if not pos then return {2} end "
      "if op == 'item' then return {1, item} end "
      "redis.call('LSET', lk, pos, '') "
      "return {1, c[2]}",
      1, "" },

    /*
     * ADMIN: KEYS[1] the fleet's admin hash; ARGV[1] a backend, ARGV[2]
     * what to do (weight, drain, undrain, cool, clear, reset, resetall),
     * ARGV[3] a weight or a cool-down's length (ms).  Returns {the
     * backend's record after the change, Redis' time}, or for resetall
     * {every backend's name and record, Redis' time}.  The record is
     * "WEIGHT|DRAIN|FORCED_UNTIL|CLEARS" (src/mg_admin.h); a reset is a
     * clear too, and a record stays once made, so its count of clears
     * never goes back and no node applies a clear twice or misses one.
     */

    { "local t = redis.call('TIME') "
      "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) "
      "local op = ARGV[2] "
      "local function clears(v) "
        "local c = v and string.match(v, '^%d+|[01]|%d+|(%d+)$') "
        "return c and tonumber(c) or 0 "
      "end "
      "if op == 'resetall' then "
        "local all, out = redis.call('HGETALL', KEYS[1]), {} "
        "for i = 1, #all, 2 do "
          "local v = '0|0|0|' .. (clears(all[i + 1]) + 1) "
          "redis.call('HSET', KEYS[1], all[i], v) "
          "out[#out + 1] = all[i] out[#out + 1] = v "
        "end "
        "return {out, now} "
      "end "
      "local w, d, u, c = 0, 0, 0, 0 "
      "local v = redis.call('HGET', KEYS[1], ARGV[1]) "
      "if v then "
        "local a, b, e, f = string.match(v, "
                                        "'^(%d+)|([01])|(%d+)|(%d+)$') "
        "if a then "
          "w, d, u, c = tonumber(a), tonumber(b), tonumber(e), tonumber(f) "
        "end "
      "end "
      "if op == 'weight' then w = tonumber(ARGV[3]) "
      "elseif op == 'drain' then d = 1 "
      "elseif op == 'undrain' then d = 0 "
      "elseif op == 'cool' then u = now + tonumber(ARGV[3]) "
      "elseif op == 'clear' then u = 0 c = c + 1 "
      "elseif op == 'reset' then w, d, u, c = 0, 0, 0, c + 1 "
      "end "
      "v = string.format('%d|%d|%d|%d', w, d, u, c) "
      "redis.call('HSET', KEYS[1], ARGV[1], v) "
      "return {v, now}",
      1, "" }
};


ngx_int_t
ngx_http_mg_redis_scripts_init(ngx_log_t *log)
{
    ngx_uint_t      i;
    unsigned char   md[SHA_DIGEST_LENGTH];

    for (i = 0; i < NGX_HTTP_MG_REDIS_NSCRIPTS; i++) {
        (void) SHA1((const unsigned char *) ngx_http_mg_redis_scripts[i].body,
                    ngx_strlen(ngx_http_mg_redis_scripts[i].body), md);

        ngx_hex_dump((u_char *) ngx_http_mg_redis_scripts[i].sha1, md,
                     SHA_DIGEST_LENGTH);
        ngx_http_mg_redis_scripts[i].sha1[40] = '\0';
    }

    return NGX_OK;
}
