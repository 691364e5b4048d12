/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * AWS Signature Version 4 for header authentication (Bedrock and any other
 * service), on OpenSSL.  Nothing is allocated per call: the canonical
 * request is hashed as it is produced, never stored, and the caller gives
 * the buffer for the Authorization value; one SHA-256 context is made on
 * first use and kept for the process, so the functions are not for use
 * from several threads at once (an nginx worker has one).  The signing key
 * depends only on the secret, the day, the region and the service, so the
 * caller derives it once a day and keeps it.
 */

#ifndef _MG_SIGV4_H_INCLUDED_
#define _MG_SIGV4_H_INCLUDED_

#include <stddef.h>
#include <sys/types.h>


#define MG_SIGV4_KEY_LEN       32      /* a derived signing key, raw bytes */
#define MG_SIGV4_AMZ_DATE_LEN  16      /* YYYYMMDDTHHMMSSZ */

/* limits of what one request may carry */
#define MG_SIGV4_MAX_HEADERS   32      /* headers to sign */
#define MG_SIGV4_MAX_PARAMS    64      /* query parameters */
#define MG_SIGV4_MAX_SEGMENTS  128     /* path segments */
#define MG_SIGV4_MAX_SCOPE     64      /* bytes of a region or service name */
#define MG_SIGV4_MAX_SECRET    256     /* bytes of a secret access key */

#define MG_SIGV4_OK       0
#define MG_SIGV4_EINVAL  -1     /* malformed input: date, empty header name */
#define MG_SIGV4_ELIMIT  -2     /* beyond one of the limits above */
#define MG_SIGV4_ECRYPTO -3     /* OpenSSL failed */


typedef struct {
    const char                *name;     /* any case; lowercased here */
    size_t                     name_len;
    const char                *value;    /* trimmed, inner spaces collapsed */
    size_t                     value_len;
} mg_sigv4_header_t;


typedef struct {
    const char                *method;        /* "POST" */
    size_t                     method_len;

    /*
     * The path exactly as on the request line, already percent-encoded
     * (e.g. "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"),
     * without the query.
     */
    const char                *path;
    size_t                     path_len;

    /* the query as on the request line, without '?'; NULL or "" if none */
    const char                *query;
    size_t                     query_len;

    /*
     * Every header to sign, e.g. host, x-amz-date, x-amz-security-token,
     * content-type and x-amz-content-sha256; values of repeated names are
     * joined with ',' in the order given.  Never pass hop-by-hop headers.
     */
    const mg_sigv4_header_t   *headers;
    size_t                     nheaders;

    /* lowercase hex SHA-256 of the body (mg_sha256_hex()) */
    const char                *payload_hash;
    size_t                     payload_hash_len;

    const char                *access_key_id;
    size_t                     access_key_id_len;

    /* from mg_sigv4_derive_key() for the day of amz_date */
    const u_char              *key;

    /* MG_SIGV4_AMZ_DATE_LEN bytes; the scope's date is its first eight */
    const char                *amz_date;

    const char                *region;        /* "us-east-1" */
    size_t                     region_len;
    const char                *service;       /* "bedrock" */
    size_t                     service_len;

    /*
     * 0 (the default, every service but S3): the canonical URI is the path
     * with dot segments and empty segments removed, URI-encoded once more
     * ("%3A" is signed as "%253A").  1 (S3): the path is signed as sent.
     */
    unsigned                   raw_path:1;
} mg_sigv4_request_t;


/*
 * Derives the signing key HMAC(HMAC(HMAC(HMAC("AWS4" secret, date),
 * region), service), "aws4_request") into out.  date points to YYYYMMDD
 * (only eight bytes are read, so an amz date will do).  Returns
 * MG_SIGV4_OK or a negative error.
 */
int mg_sigv4_derive_key(const char *secret, size_t secret_len,
    const char *date, const char *region, size_t region_len,
    const char *service, size_t service_len, u_char *out);

/*
 * Writes the Authorization header value
 * "AWS4-HMAC-SHA256 Credential=AKID/date/region/service/aws4_request,
 * SignedHeaders=a;b, Signature=hex" (one line).  Writes at most cap bytes,
 * no NUL, and returns the length the whole value needs, as snprintf does;
 * or a negative error, with nothing written.
 */
ssize_t mg_sigv4_sign(const mg_sigv4_request_t *r, char *out, size_t cap);

/*
 * Writes the canonical request mg_sigv4_sign() hashes (for logging a
 * signature mismatch and for tests); the same return convention.
 */
ssize_t mg_sigv4_canonical_request(const mg_sigv4_request_t *r, char *out,
    size_t cap);

/*
 * URI-encodes bytes as SigV4 wants: A-Z a-z 0-9 - . _ ~ are kept, every
 * other byte becomes %XY (uppercase hex), '/' too if encode_slash.  With
 * encode_slash set it turns a Bedrock model id (ARNs have ':' and '/')
 * into one path label.  Writes at most cap bytes, no NUL, and returns the
 * length the whole encoding needs.
 */
size_t mg_sigv4_uri_encode(const char *in, size_t len, char *out, size_t cap,
    int encode_slash);

/*
 * Writes the lowercase hex SHA-256 of data and a NUL (65 bytes) to out.
 * Returns 0, or -1 if OpenSSL failed.
 */
int mg_sha256_hex(const void *data, size_t len, char *out);


#endif /* _MG_SIGV4_H_INCLUDED_ */
