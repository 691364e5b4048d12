
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * Where gateway keys come from: a key file, read when the configuration
 * loads (so an error fails "nginx -t" and a reload re-reads it), and the
 * worker's cache of keys looked up in Redis.  Both are found by the
 * SHA-256 of the presented key; the key itself is never kept.
 */


#include "ngx_http_model_gateway_module.h"


/* one entry of the worker's cache: a found key, or a key Redis lacks */
typedef struct {
    ngx_rbtree_node_t                  node;    /* key: the hash's start */
    ngx_queue_t                        queue;   /* its LRU list */
    ngx_msec_t                         expires;
    u_char                             hash[MG_KEY_HASH_LEN];
    mg_key_t                          *key;     /* NULL: unknown */
} ngx_http_model_gateway_key_node_t;


/* a record of the key file while it loads, with its line */
typedef struct {
    mg_key_t                          *key;
    ngx_uint_t                         line;
} ngx_http_model_gateway_key_line_t;


static ngx_int_t ngx_http_model_gateway_key_file_read(ngx_conf_t *cf,
    ngx_http_model_gateway_keys_t *kf, ngx_array_t *lines);
static ngx_int_t ngx_http_model_gateway_key_cmp_hash(const void *a,
    const void *b);
static ngx_int_t ngx_http_model_gateway_key_cmp_id(const void *a,
    const void *b);
static void ngx_http_model_gateway_key_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_http_model_gateway_key_node_t *
    ngx_http_model_gateway_key_lookup(const u_char *hash);
static void ngx_http_model_gateway_key_drop(
    ngx_http_model_gateway_key_node_t *kn);


/*
 * The cache belongs to the worker: Redis is the shared truth, and a
 * record held here for at most model_gateway_key_cache_time bounds how
 * long a revoked key keeps working.  Found and unknown keys have lists of
 * their own, each of at most model_gateway_key_cache_size entries, so a
 * flood of random keys cannot push the real ones out.
 */

static ngx_rbtree_t        ngx_http_model_gateway_key_tree;
static ngx_rbtree_node_t   ngx_http_model_gateway_key_sentinel;
static ngx_queue_t         ngx_http_model_gateway_key_lru[2];
static ngx_uint_t          ngx_http_model_gateway_key_count[2];
static ngx_uint_t          ngx_http_model_gateway_key_ready;


/* model_gateway_key_file PATH; */

char *
ngx_http_model_gateway_key_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_model_gateway_loc_conf_t *lcf = conf;

    ngx_str_t                      *value;
    ngx_http_model_gateway_keys_t  *kf;

    if (lcf->key_file != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    kf = ngx_http_model_gateway_keys_load(cf, &value[1]);
    if (kf == NULL) {
        return NGX_CONF_ERROR;
    }

    lcf->key_file = kf;

    return NGX_CONF_OK;
}


/* reads and checks a key file: gateway keys, or the admin API's */

ngx_http_model_gateway_keys_t *
ngx_http_model_gateway_keys_load(ngx_conf_t *cf, ngx_str_t *path)
{
    ngx_uint_t                          i;
    ngx_array_t                         lines;
    ngx_http_model_gateway_keys_t      *kf;
    ngx_http_model_gateway_key_line_t  *l;

    kf = ngx_pcalloc(cf->pool, sizeof(ngx_http_model_gateway_keys_t));
    if (kf == NULL) {
        return NULL;
    }

    kf->name = *path;

    if (ngx_conf_full_name(cf->cycle, &kf->name, 1) != NGX_OK) {
        return NULL;
    }

    if (ngx_array_init(&lines, cf->temp_pool, 16,
                       sizeof(ngx_http_model_gateway_key_line_t))
        != NGX_OK)
    {
        return NULL;
    }

    if (ngx_http_model_gateway_key_file_read(cf, kf, &lines) != NGX_OK) {
        return NULL;
    }

    /*
     * a duplicate is refused, not resolved: which of two records for one
     * id or one hash was meant cannot be guessed
     */

    l = lines.elts;

    ngx_sort(l, lines.nelts, sizeof(ngx_http_model_gateway_key_line_t),
             ngx_http_model_gateway_key_cmp_id);

    for (i = 1; i < lines.nelts; i++) {
        if (ngx_strcmp(l[i - 1].key->id, l[i].key->id) == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: the id \"%s\" is also on line %ui",
                               &kf->name, ngx_max(l[i - 1].line, l[i].line),
                               l[i].key->id,
                               ngx_min(l[i - 1].line, l[i].line));
            return NULL;
        }
    }

    ngx_sort(l, lines.nelts, sizeof(ngx_http_model_gateway_key_line_t),
             ngx_http_model_gateway_key_cmp_hash);

    for (i = 1; i < lines.nelts; i++) {
        if (mg_key_hash_eq(l[i - 1].key->hash, l[i].key->hash)) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: the hash is also on line %ui",
                               &kf->name, ngx_max(l[i - 1].line, l[i].line),
                               ngx_min(l[i - 1].line, l[i].line));
            return NULL;
        }
    }

    kf->nkeys = lines.nelts;
    kf->keys = ngx_palloc(cf->pool, (lines.nelts ? lines.nelts : 1)
                                    * sizeof(mg_key_t *));
    if (kf->keys == NULL) {
        return NULL;
    }

    for (i = 0; i < lines.nelts; i++) {
        kf->keys[i] = l[i].key;
    }

    return kf;
}


static ngx_int_t
ngx_http_model_gateway_key_file_read(ngx_conf_t *cf,
    ngx_http_model_gateway_keys_t *kf, ngx_array_t *lines)
{
    u_char           *buf, *p, *end, *eol;
    char              err[MG_KEY_ERR_LEN];
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_int_t         rc;
    ngx_uint_t        line;
    mg_key_t         *k;
    ngx_file_t        file;
    ngx_file_info_t   fi;

    ngx_http_model_gateway_key_line_t  *l;

    fd = ngx_open_file(kf->name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", &kf->name);
        return NGX_ERROR;
    }

    ngx_memzero(&file, sizeof(ngx_file_t));
    file.fd = fd;
    file.name = kf->name;
    file.log = cf->log;

    rc = NGX_ERROR;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", &kf->name);
        goto done;
    }

    if (ngx_file_size(&fi) > 64 * 1024 * 1024) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "key file \"%V\" is larger than 64m", &kf->name);
        goto done;
    }

    buf = ngx_pnalloc(cf->temp_pool, (size_t) ngx_file_size(&fi) + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_file(&file, buf, (size_t) ngx_file_size(&fi), 0);
    if (n == NGX_ERROR) {
        goto done;
    }

    /* the key record, in full, while a line is parsed */

    k = ngx_palloc(cf->temp_pool, sizeof(mg_key_t));
    if (k == NULL) {
        goto done;
    }

    p = buf;
    end = buf + n;

    for (line = 1; p < end; line++, p = eol + 1) {
        eol = ngx_strlchr(p, end, LF);
        if (eol == NULL) {
            eol = end;
        }

        if ((size_t) (eol - p) > MG_KEY_LINE_MAX) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "%V:%ui: the line is longer than %d bytes",
                               &kf->name, line, MG_KEY_LINE_MAX);
            goto done;
        }

        /* the line's own "\n" goes with it: "\r\n" is then understood */

        switch (mg_key_parse_line(k, (char *) p, eol - p + (eol < end), err))
        {

        case MG_KEY_SKIP:
            continue;

        case MG_KEY_OK:
            break;

        default:
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "%V:%ui: %s",
                               &kf->name, line, err);
            goto done;
        }

        l = ngx_array_push(lines);
        if (l == NULL) {
            goto done;
        }

        /* held for the configuration's life, cut to what it uses */

        l->key = ngx_http_model_gateway_key_copy(cf->pool, k);
        if (l->key == NULL) {
            goto done;
        }

        l->line = line;
    }

    rc = NGX_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%V\" failed", &kf->name);
    }

    return rc;
}


/*
 * A record is read-only once made, and the models text, its bulk, is
 * last: a copy stops where the text does.
 */

mg_key_t *
ngx_http_model_gateway_key_copy(ngx_pool_t *pool, const mg_key_t *key)
{
    size_t     size;
    mg_key_t  *k;

    size = offsetof(mg_key_t, models_text) + key->models_len;

    k = ngx_palloc(pool, size);
    if (k == NULL) {
        return NULL;
    }

    ngx_memcpy(k, key, size);

    return k;
}


static ngx_int_t
ngx_http_model_gateway_key_cmp_hash(const void *a, const void *b)
{
    const ngx_http_model_gateway_key_line_t  *la = a;
    const ngx_http_model_gateway_key_line_t  *lb = b;

    return ngx_memcmp(la->key->hash, lb->key->hash, MG_KEY_HASH_LEN);
}


static ngx_int_t
ngx_http_model_gateway_key_cmp_id(const void *a, const void *b)
{
    const ngx_http_model_gateway_key_line_t  *la = a;
    const ngx_http_model_gateway_key_line_t  *lb = b;

    return ngx_strcmp(la->key->id, lb->key->id);
}


/*
 * A binary search over the hashes; only the final match is compared with
 * mg_key_hash_eq().  The order of SHA-256 digests tells nothing of the
 * keys, so the search itself leaks nothing worth timing.
 */

const mg_key_t *
ngx_http_model_gateway_keys_find(ngx_http_model_gateway_keys_t *keys,
    const u_char *hash)
{
    ngx_int_t   c;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = keys->nkeys;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        c = ngx_memcmp(hash, keys->keys[mid]->hash, MG_KEY_HASH_LEN);

        if (c == 0) {
            return mg_key_hash_eq(hash, keys->keys[mid]->hash)
                   ? keys->keys[mid] : NULL;
        }

        if (c < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/*
 * NGX_OK with *key the record (NULL: a key Redis does not know) while the
 * entry is fresh; NGX_DECLINED if the key is not cached.
 */

ngx_int_t
ngx_http_model_gateway_key_cache_get(ngx_http_model_gateway_main_conf_t *mcf,
    const u_char *hash, const mg_key_t **key)
{
    ngx_http_model_gateway_key_node_t  *kn;

    kn = ngx_http_model_gateway_key_lookup(hash);
    if (kn == NULL) {
        return NGX_DECLINED;
    }

    if ((ngx_msec_int_t) (kn->expires - ngx_current_msec) <= 0) {
        ngx_http_model_gateway_key_drop(kn);
        return NGX_DECLINED;
    }

    ngx_queue_remove(&kn->queue);
    ngx_queue_insert_head(&ngx_http_model_gateway_key_lru[kn->key != NULL],
                          &kn->queue);

    *key = kn->key;

    return NGX_OK;
}


/* caches what Redis answered; a failure to cache costs a lookup later */

void
ngx_http_model_gateway_key_cache_put(ngx_http_model_gateway_main_conf_t *mcf,
    const u_char *hash, const mg_key_t *key)
{
    size_t                              size;
    ngx_uint_t                          found;
    ngx_queue_t                        *q;
    ngx_http_model_gateway_key_node_t  *kn;

    if (mcf->key_cache_time == 0 || mcf->key_cache_size == 0) {
        return;
    }

    if (!ngx_http_model_gateway_key_ready) {
        ngx_rbtree_init(&ngx_http_model_gateway_key_tree,
                        &ngx_http_model_gateway_key_sentinel,
                        ngx_http_model_gateway_key_insert);
        ngx_queue_init(&ngx_http_model_gateway_key_lru[0]);
        ngx_queue_init(&ngx_http_model_gateway_key_lru[1]);
        ngx_http_model_gateway_key_ready = 1;
    }

    kn = ngx_http_model_gateway_key_lookup(hash);
    if (kn) {
        ngx_http_model_gateway_key_drop(kn);
    }

    found = (key != NULL);

    if (ngx_http_model_gateway_key_count[found] >= mcf->key_cache_size) {
        q = ngx_queue_last(&ngx_http_model_gateway_key_lru[found]);
        ngx_http_model_gateway_key_drop(
            ngx_queue_data(q, ngx_http_model_gateway_key_node_t, queue));
    }

    size = sizeof(ngx_http_model_gateway_key_node_t);

    kn = ngx_alloc(size, ngx_cycle->log);
    if (kn == NULL) {
        return;
    }

    kn->key = NULL;

    if (key) {
        size = offsetof(mg_key_t, models_text) + key->models_len;

        kn->key = ngx_alloc(size, ngx_cycle->log);
        if (kn->key == NULL) {
            ngx_free(kn);
            return;
        }

        ngx_memcpy(kn->key, key, size);
    }

    ngx_memcpy(kn->hash, hash, MG_KEY_HASH_LEN);
    ngx_memcpy(&kn->node.key, hash, sizeof(ngx_rbtree_key_t));
    kn->expires = ngx_current_msec + mcf->key_cache_time;

    ngx_rbtree_insert(&ngx_http_model_gateway_key_tree, &kn->node);
    ngx_queue_insert_head(&ngx_http_model_gateway_key_lru[found],
                          &kn->queue);
    ngx_http_model_gateway_key_count[found]++;
}


static ngx_http_model_gateway_key_node_t *
ngx_http_model_gateway_key_lookup(const u_char *hash)
{
    ngx_int_t                           c;
    ngx_rbtree_key_t                    key;
    ngx_rbtree_node_t                  *node, *sentinel;
    ngx_http_model_gateway_key_node_t  *kn;

    if (!ngx_http_model_gateway_key_ready) {
        return NULL;
    }

    ngx_memcpy(&key, hash, sizeof(ngx_rbtree_key_t));

    node = ngx_http_model_gateway_key_tree.root;
    sentinel = ngx_http_model_gateway_key_tree.sentinel;

    while (node != sentinel) {

        if (key != node->key) {
            node = (key < node->key) ? node->left : node->right;
            continue;
        }

        kn = (ngx_http_model_gateway_key_node_t *) node;

        c = ngx_memcmp(hash, kn->hash, MG_KEY_HASH_LEN);

        if (c == 0) {
            return kn;
        }

        node = (c < 0) ? node->left : node->right;
    }

    return NULL;
}


static void
ngx_http_model_gateway_key_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t                 **p;
    ngx_http_model_gateway_key_node_t  *kn, *kt;

    kn = (ngx_http_model_gateway_key_node_t *) node;

    for ( ;; ) {
        kt = (ngx_http_model_gateway_key_node_t *) temp;

        if (node->key != temp->key) {
            p = (node->key < temp->key) ? &temp->left : &temp->right;

        } else {
            p = (ngx_memcmp(kn->hash, kt->hash, MG_KEY_HASH_LEN) < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static void
ngx_http_model_gateway_key_drop(ngx_http_model_gateway_key_node_t *kn)
{
    ngx_rbtree_delete(&ngx_http_model_gateway_key_tree, &kn->node);
    ngx_queue_remove(&kn->queue);
    ngx_http_model_gateway_key_count[kn->key != NULL]--;

    if (kn->key) {
        ngx_free(kn->key);
    }

    ngx_free(kn);
}
