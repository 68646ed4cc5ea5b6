/*
 * io_epoll.c: the default I/O engine: kernel sockets with epoll, through the
 * HTTP/1.1 server of common/ (kvf_http.h: keep-alive, pipelining, the
 * socket-free parser, header/body timeouts and limits, backpressure). This
 * file only adapts its requests to the engine-neutral gw_io_ops the gateway
 * answers through, so another engine (DPDK user-space TCP) can feed the same
 * gateway code.
 */
#include "gateway/gw_core.h"

static const kvf_http_msg *e_msg(void *r) { return kvf_http_req_msg(r); }
static const char *e_body(void *r, size_t *len) { return kvf_http_req_body(r, len); }
static const char *e_peer(void *r) { return kvf_http_req_peer(r); }

static int e_respond(void *r, int status, const char *ctype, const char *const *hdrs, const void *body, size_t len)
{
	return kvf_http_respond(r, status, ctype, hdrs, body, len);
}

static int e_begin(void *r, int status, const char *ctype, const char *const *hdrs, int64_t clen)
{
	return kvf_http_begin(r, status, ctype, hdrs, clen);
}

static int e_send(void *r, const void *data, size_t len) { return kvf_http_send(r, data, len); }
static int e_end(void *r) { return kvf_http_end(r); }
static size_t e_pending(void *r) { return kvf_http_req_pending(r); }
static void e_set_close(void *r) { kvf_http_req_set_close(r); }

static void tramp_close(kvf_http_req *req, void *ud) { gw_on_client_close(ud); }
static void tramp_drain(kvf_http_req *req, void *ud) { gw_on_client_drain(ud); }

static void e_watch(void *r, void *ud)
{
	kvf_http_req_on_close(r, ud ? tramp_close : NULL, ud);
	kvf_http_req_on_drain(r, ud ? tramp_drain : NULL, ud);
}

const gw_io_ops gw_io_epoll_ops = {
	"epoll", e_msg, e_body, e_peer, e_respond, e_begin, e_send, e_end, e_pending, e_set_close, e_watch,
};

void kvf_gateway_io_epoll_handler(kvf_http_req *req, void *gw)
{
	gw_io_req io = { &gw_io_epoll_ops, req };
	gw_handle(gw, io);
}
