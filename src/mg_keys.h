/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Gateway keys: the record of one key, its parsing from a key file line
 * or field by field (a Redis hash), the hash of a presented key, and the
 * per-key policy checks.  No nginx types: the glue reads the sources and
 * asks these functions.
 *
 * A key is never stored, only its SHA-256.  Both sources go through one
 * setter, mg_key_set(), with the same field names, so a record means the
 * same whether it came from the file or from Redis:
 *
 *   id          1-64 of [A-Za-z0-9._-]                     (required)
 *   tenant      1-64 of [A-Za-z0-9._-]                     (required)
 *   hash        sha256:<64 hex digits>                     (required)
 *   expires     RFC 3339 UTC "2027-01-31T00:00:00Z" or unix seconds
 *   models      pattern[,pattern...]: exact names, or a prefix ending
 *               in '*'; absent: every model
 *   endpoints   chat,embeddings,responses,conversations,models;
 *               absent: every endpoint
 *   max_tokens  cap on max_tokens / max_completion_tokens /
 *               max_output_tokens of a request
 *   rpm, tpm, tpd, budget
 *               requests per minute, tokens per minute, tokens per day,
 *               token budget (kept here; enforced by a later step)
 *
 * A field given twice and an unknown field are refused: a typo in a
 * policy must not silently widen what a key may do.
 *
 * A record has a fixed size, sizeof(mg_key_t), at most MG_KEY_SIZE_MAX
 * bytes (the models text is the bulk of it), so a cache of records is
 * bounded by its number of entries.
 */

#ifndef _MG_KEYS_H_INCLUDED_
#define _MG_KEYS_H_INCLUDED_

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "mg_util.h"


#define MG_KEY_OK              0
#define MG_KEY_ERROR          -1
#define MG_KEY_SKIP            1        /* a comment or a blank line */

#define MG_KEY_ID_MAX          64       /* bytes of an id or a tenant */
#define MG_KEY_HASH_LEN        32       /* raw SHA-256 */
#define MG_KEY_MODELS_MAX      64       /* patterns per key */
#define MG_KEY_MODEL_MAX       256      /* bytes of one pattern */
#define MG_KEY_MODELS_TEXT_MAX 4096     /* bytes of the whole models value */
#define MG_KEY_LINE_MAX        8192     /* bytes of a key file line */
#define MG_KEY_ERR_LEN         160      /* an error message with its NUL */
#define MG_KEY_SIZE_MAX        5120     /* sizeof(mg_key_t) is within it */

/* what a client may present as a key, checked before it is hashed */
#define MG_KEY_PRESENTED_MIN   16
#define MG_KEY_PRESENTED_MAX   256

/* bounds of the numeric fields; 0 is refused, absence means no limit */
#define MG_KEY_MAX_TOKENS_MAX  2147483647ULL
#define MG_KEY_LIMIT_MAX       1000000000000000ULL       /* 10^15 */

/* 9999-12-31T23:59:59Z: the last second RFC 3339 can write */
#define MG_KEY_EXPIRES_MAX     253402300799LL

/* endpoint bits of mg_key_t.endpoints */
#define MG_KEY_EP_CHAT           0x01
#define MG_KEY_EP_EMBEDDINGS     0x02
#define MG_KEY_EP_RESPONSES      0x04
#define MG_KEY_EP_CONVERSATIONS  0x08
#define MG_KEY_EP_MODELS         0x10
#define MG_KEY_EP_ALL            0x1f

/* bits of mg_key_t.set: which fields were given */
#define MG_KEY_F_ID            0x0001
#define MG_KEY_F_TENANT        0x0002
#define MG_KEY_F_HASH          0x0004
#define MG_KEY_F_EXPIRES       0x0008
#define MG_KEY_F_MODELS        0x0010
#define MG_KEY_F_ENDPOINTS     0x0020
#define MG_KEY_F_MAX_TOKENS    0x0040
#define MG_KEY_F_RPM           0x0080
#define MG_KEY_F_TPM           0x0100
#define MG_KEY_F_TPD           0x0200
#define MG_KEY_F_BUDGET        0x0400


typedef struct {
    uint16_t        off;                /* into models_text */
    uint16_t        len;                /* without the '*' of a prefix */
    uint16_t        prefix;             /* 1: ended in '*' */
} mg_key_model_t;


typedef struct {
    u_char          hash[MG_KEY_HASH_LEN];

    char            id[MG_KEY_ID_MAX + 1];        /* NUL-terminated */
    char            tenant[MG_KEY_ID_MAX + 1];
    uint8_t         id_len;
    uint8_t         tenant_len;

    uint16_t        nmodels;            /* 0: every model */
    uint16_t        models_len;         /* bytes used of models_text */
    uint32_t        endpoints;          /* MG_KEY_EP_*; 0: every one */
    uint32_t        set;                /* MG_KEY_F_* */

    int64_t         expires;            /* unix seconds; 0: never */

    /* 0: none */
    uint64_t        max_tokens;
    uint64_t        rpm;
    uint64_t        tpm;
    uint64_t        tpd;
    uint64_t        budget;

    mg_key_model_t  models[MG_KEY_MODELS_MAX];
    char            models_text[MG_KEY_MODELS_TEXT_MAX];
} mg_key_t;


/* an empty record: every field unset */
void mg_key_init(mg_key_t *k);

/*
 * Sets one field from its text.  On an error returns MG_KEY_ERROR with a
 * message in err (MG_KEY_ERR_LEN bytes, NUL-terminated; it names the
 * field but never repeats a hash) and leaves the record as it was.
 */
int mg_key_set(mg_key_t *k, const char *name, size_t name_len,
    const char *value, size_t value_len, char *err);

/* MG_KEY_OK if id, tenant and hash are set; else the error in err */
int mg_key_complete(const mg_key_t *k, char *err);

/*
 * Parses one key file line, "ID TENANT sha256:HEX [name=value ...]",
 * fields separated by spaces or tabs; a trailing "\n" or "\r\n" is
 * ignored.  Returns MG_KEY_OK with a complete record, MG_KEY_SKIP for a
 * blank line or one whose first non-blank byte is '#', or MG_KEY_ERROR
 * with the message in err (the caller adds the file name and line).
 */
int mg_key_parse_line(mg_key_t *k, const char *line, size_t len, char *err);

/*
 * Parses an expiry: "YYYY-MM-DDTHH:MM:SSZ" (UTC only) or unix seconds,
 * 1 .. MG_KEY_EXPIRES_MAX.  Returns the unix time, or -1.
 */
int64_t mg_key_parse_expires(const char *p, size_t len);

/*
 * Whether a presented key may be one: MG_KEY_PRESENTED_MIN ..
 * MG_KEY_PRESENTED_MAX bytes of printable ASCII without spaces.
 * Garbage is refused before it costs a hash or a lookup.
 */
int mg_key_presented_ok(const char *key, size_t len);

/*
 * out gets the SHA-256 of key (MG_KEY_HASH_LEN bytes).  Returns 0, or -1
 * if OpenSSL failed.  One digest context is kept for the process, as in
 * mg_sigv4.c: not for use from several threads at once.
 */
int mg_key_hash(const char *key, size_t len, u_char *out);

/* 1 if the hashes are equal; the time taken does not depend on where
 * they differ */
int mg_key_hash_eq(const u_char *a, const u_char *b);

/* 1 if the key may use the model (exact name, or a '*' prefix) */
int mg_key_model_allowed(const mg_key_t *k, const char *model, size_t len);

/* the MG_KEY_EP_* bit of an endpoint name ("chat", ...), or 0 */
uint32_t mg_key_endpoint_bit(const char *name, size_t len);

/* the MG_KEY_EP_* bit of a classified request path, or 0 */
uint32_t mg_key_endpoint_of(mg_endpoint_t ep);

/* 1 if the key may use the endpoint (an MG_KEY_EP_* bit) */
int mg_key_endpoint_allowed(const mg_key_t *k, uint32_t bit);

/*
 * The cap if requested tokens exceed it, so the refusal can name it;
 * 0 if the key has no cap or the request is within it.
 */
uint64_t mg_key_tokens_over(const mg_key_t *k, uint64_t requested);

/* 1 if the key has expired at now (unix seconds): now >= expires */
int mg_key_expired(const mg_key_t *k, int64_t now);


#endif /* _MG_KEYS_H_INCLUDED_ */
