/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Small pieces of the API contract that have no nginx in them: endpoint
 * names, the OpenAI error object, which statuses are worth another backend,
 * and Retry-After parsing.
 */

#ifndef _MG_UTIL_H_INCLUDED_
#define _MG_UTIL_H_INCLUDED_

#include <stddef.h>
#include <time.h>


typedef enum {
    MG_EP_UNKNOWN = 0,
    MG_EP_CHAT,                 /* chat/completions */
    MG_EP_EMBEDDINGS,           /* embeddings */
    MG_EP_MODELS,               /* models */
    MG_EP_MODEL,                /* models/{id}: the id follows */
    MG_EP_RESPONSES,            /* responses */
    MG_EP_RESPONSE,             /* responses/{id}[/...]: id is a segment */
    MG_EP_CONVERSATIONS,        /* conversations */
    MG_EP_CONVERSATION          /* conversations/{id}[/...] */
} mg_endpoint_t;


/*
 * Classifies the part of the URI after the location prefix, e.g.
 * "/v1/chat/completions", "v1/chat/completions" or "/chat/completions"
 * (a leading "/" and one leading "v1/" segment are optional; a trailing "/"
 * is tolerated).  For MG_EP_MODEL, *id and *id_len name the model; for
 * MG_EP_RESPONSE and MG_EP_CONVERSATION, the first path segment after
 * "responses/" or "conversations/" (what follows it, e.g. "/input_items",
 * is the caller's to pass on).
 */
mg_endpoint_t mg_endpoint_match(const char *path, size_t len,
    const char **id, size_t *id_len);

/*
 * Writes {"error":{"message":M,"type":T,"param":P,"code":C}} with proper
 * escaping; param and code may be NULL (written as null).  Returns the
 * length the whole object needs; writes at most cap bytes (snprintf-like).
 */
size_t mg_error_json(char *buf, size_t cap, const char *message,
    const char *type, const char *param, const char *code);

/*
 * Nonzero for a backend status that another backend might not have:
 * 408, 429, 500, 502, 503, 504, 529 and 520-524.
 */
int mg_status_retryable(int status);

/*
 * Parses a Retry-After value: delta-seconds (a decimal fraction is
 * accepted) or an IMF-fixdate relative to now.  Returns milliseconds
 * (a past date gives 0), or -1 if the value is not understood.
 */
long long mg_retry_after_ms(const char *v, size_t len, time_t now);

/* parses retry-after-ms (a decimal, fraction allowed); -1 if invalid */
long long mg_retry_after_ms_value(const char *v, size_t len);


#endif /* _MG_UTIL_H_INCLUDED_ */
