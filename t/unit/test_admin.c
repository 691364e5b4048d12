/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * The admin record: what a node reads from Redis must be well formed and
 * bounded, and anything else must read as "no override".
 */

#include <stdio.h>
#include <string.h>

#include "tap.h"
#include "mg_admin.h"


static int
parse(const char *s, mg_admin_rec_t *rec)
{
    return mg_admin_parse(s, strlen(s), rec);
}


int
main(void)
{
    size_t          n;
    mg_admin_rec_t  rec, back;
    char            buf[MG_ADMIN_REC_LEN];

    is_int(parse("5|1|1796083200000|3", &rec), 0, "a record parses");
    is_int(rec.weight, 5, "its weight");
    is_int(rec.drain, 1, "its drain");
    is_int(rec.forced_until, 1796083200000LL, "its forced cool-down");
    is_int(rec.clear, 3, "its clears");

    is_int(parse("0|0|0|0", &rec), 0, "the empty record parses");
    is_int(rec.weight + rec.drain + rec.forced_until + (long long) rec.clear,
           0, "and is all zero");

    is_int(parse("1000|0|0|0", &rec), 0, "weight 1000 is the largest");
    is_int(parse("1001|0|0|0", &rec), -1, "weight 1001 is refused");
    is_int(rec.weight, 0, "a refused record reads as no override");
    is_int(parse("5|2|0|0", &rec), -1, "drain 2 is refused");
    is_int(parse("5|1|0", &rec), -1, "three fields are refused");
    is_int(parse("5|1|0|0|0", &rec), -1, "five fields are refused");
    is_int(parse("5|1|0|0 ", &rec), -1, "a trailing space is refused");
    is_int(parse("-5|1|0|0", &rec), -1, "a sign is refused");
    is_int(parse("5||0|0", &rec), -1, "an empty field is refused");
    is_int(parse("", &rec), -1, "an empty record is refused");
    is_int(parse("5|1|1234567890123456|0", &rec), -1,
           "16 digits are refused");
    is_int(parse("5|1|123456789012345|0", &rec), 0, "15 digits are not");
    is_int(mg_admin_parse("5|1|0|0", 5, &rec), -1,
           "a record cut short is refused");

    rec.weight = 1000;
    rec.drain = 1;
    rec.forced_until = 999999999999999LL;
    rec.clear = 999999999999999ULL;

    n = mg_admin_format(&rec, buf);
    ok(n > 0 && n < sizeof(buf), "the longest record fits");
    is_int(mg_admin_parse(buf, n, &back), 0, "and reads back");
    ok(memcmp(&rec, &back, sizeof(rec)) == 0, "to the same values");

    return tap_done();
}
