
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The Lua scripts that keep session pins and object ids in Redis.  A
 * pin's value is "BACKEND|CREATED_MS"; times come from Redis' own clock, so
 * every nginx node agrees on a pin's age.  Every script touches one key,
 * so each runs on a single Redis Cluster slot (the layout: README "Redis").
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
