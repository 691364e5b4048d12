
/*
 * Copyright (C) The ngx_http_model_gateway_module authors
 *
 * What the module's own clients share (the Redis connection, the sentinel
 * connections, the health probes): each owns an ngx_peer_connection_t on
 * nginx's event loop, learns of its non-blocking connect through the
 * socket's error, and closes without waiting for the peer.
 */


#include "ngx_http_model_gateway_module.h"


/* 0 once a non-blocking connect has succeeded, else the socket's error */

ngx_err_t
ngx_http_model_gateway_client_error(ngx_connection_t *c)
{
    int        err;
    socklen_t  len;

    err = 0;
    len = sizeof(int);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, (void *) &err, &len) == -1) {
        err = ngx_socket_errno;
    }

    return (ngx_err_t) err;
}


/*
 * Closes the peer's connection, if any, at once: TLS is shut down without
 * sending or waiting for close_notify (nothing more is to be read), and
 * the connection's pool goes with it.
 */

void
ngx_http_model_gateway_client_close(ngx_peer_connection_t *pc)
{
    ngx_pool_t        *pool;
    ngx_connection_t  *c;

    c = pc->connection;

    if (c == NULL) {
        return;
    }

#if (NGX_HTTP_SSL)
    if (c->ssl) {
        c->ssl->no_wait_shutdown = 1;
        c->ssl->no_send_shutdown = 1;
        (void) ngx_ssl_shutdown(c);
    }
#endif

    pool = c->pool;

    ngx_close_connection(c);
    pc->connection = NULL;

    if (pool) {
        ngx_destroy_pool(pool);
    }
}
