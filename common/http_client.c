/*
 * http_client.c: non-blocking HTTP/1.1 client with per-upstream keep-alive
 * pools (see kvf_http_client.h for the contract).
 *
 * Shape, as in common/http_server.c: every connection has one pump,
 * conn_process(), that delivers a recorded failure, writes what is pending,
 * parses buffered input into callbacks, handles end of input, then sets epoll
 * interest and the connection's timer. Only the pump (and the client's
 * zero-delay "kick" timer that runs pumps and queue timeouts) calls user
 * callbacks, so everything a callback can do - start, cancel, pause or resume
 * requests - only changes state, records work on the dirty list and arms the
 * kick timer; nothing recurses into a pump that is already on the stack.
 * Memory of a request canceled from inside its own connection's pump is
 * released when that pump unwinds.
 *
 * The request's bytes live in the request (not the connection) so a request
 * whose reused connection turns out to be closed can be written again on a
 * fresh one. Addresses are resolved once per upstream and cached; connect()
 * uses the cached sockaddr (no resolver on the data path).
 */
#include "common/kvf_http_client.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_net.h"

#define KICK_BATCH 256 /* pumps run per kick before yielding to the loop */

enum { C_CONNECTING = 1, C_ACTIVE, C_IDLE };

struct host;
struct conn;

struct kvf_http_creq {
	kvf_http_client *c;
	struct host *h;
	struct conn *conn;
	kvf_http_creq *qprev, *qnext; /* host queue */
	kvf_buf wire;                 /* the whole request: head and body */
	size_t wire_off;              /* bytes written on the current connection */
	int method;
	kvf_http_creq_cbs cb;
	void *ud;
	uint32_t fbt_ms, rto_ms;
	uint64_t t_tx_ms;             /* last write progress / request fully written */
	kvf_timer qtimer;             /* queue timeout */
	int stage;
	unsigned paused : 1, queued : 1, retried : 1, reused : 1, no_pool : 1, zombie : 1, skip_1xx : 1;
};

struct conn {
	kvf_http_client *c;
	struct host *h;
	struct conn *iprev, *inext;   /* host idle list */
	struct conn *dprev, *dnext;   /* client dirty list */
	struct conn *aprev, *anext;   /* client list of every connection */
	int fd;
	int state;
	unsigned events;              /* registered interest; ~0u when not registered */
	kvf_buf in;
	kvf_http_parser parser;
	kvf_timer timer;
	kvf_http_creq *req;
	kvf_http_creq *zombie;        /* canceled from inside this pump: freed at its end */
	uint32_t nreq;                /* requests assigned so far */
	uint64_t t_start_ms, t_idle_ms, t_rx_ms;
	int err;                      /* recorded failure, delivered by the pump */
	char errmsg[160];
	unsigned busy : 1, again : 1, eof : 1, closing : 1, in_dirty : 1, idle_listed : 1;
};

struct host {
	struct host *next;
	char *name;                   /* "host:port" as given */
	struct sockaddr_storage sa;
	socklen_t salen;
	struct conn *idle;            /* most recently used first */
	uint32_t nconns, nidle, nq;
	kvf_http_creq *qhead, *qtail;
};

struct kvf_http_client {
	kvf_loop *loop;
	kvf_http_client_opts o;
	struct host *hosts;
	struct conn *dirty;
	struct conn *conns;
	kvf_timer kick;
	kvf_http_client_stats st;
	int in_kick;
};

static void conn_process(struct conn *cn);
static void host_dispatch(struct host *h);
static void kick_cb(kvf_loop *loop, kvf_timer *t, void *ud);

/* ---- small helpers ---- */

static void kick(kvf_http_client *c)
{
	if (!kvf_timer_armed(&c->kick) && !c->in_kick)
		kvf_loop_timer_start(c->loop, &c->kick, 0, 0, kick_cb, c);
}

static void dirty_add(struct conn *cn)
{
	kvf_http_client *c = cn->c;
	if (!cn->in_dirty) {
		cn->in_dirty = 1;
		cn->dprev = NULL;
		cn->dnext = c->dirty;
		if (c->dirty)
			c->dirty->dprev = cn;
		c->dirty = cn;
	}
	kick(c);
}

static void dirty_del(struct conn *cn)
{
	if (!cn->in_dirty)
		return;
	if (cn->dprev)
		cn->dprev->dnext = cn->dnext;
	else
		cn->c->dirty = cn->dnext;
	if (cn->dnext)
		cn->dnext->dprev = cn->dprev;
	cn->in_dirty = 0;
	cn->dprev = cn->dnext = NULL;
}

static void idle_del(struct conn *cn)
{
	struct host *h = cn->h;
	if (!cn->idle_listed)
		return;
	if (cn->iprev)
		cn->iprev->inext = cn->inext;
	else
		h->idle = cn->inext;
	if (cn->inext)
		cn->inext->iprev = cn->iprev;
	cn->iprev = cn->inext = NULL;
	cn->idle_listed = 0;
	h->nidle--;
	cn->c->st.idle_conns--;
}

static void idle_push(struct conn *cn)
{
	struct host *h = cn->h;
	cn->iprev = NULL;
	cn->inext = h->idle;
	if (h->idle)
		h->idle->iprev = cn;
	h->idle = cn;
	cn->idle_listed = 1;
	h->nidle++;
	cn->c->st.idle_conns++;
}

static void queue_del(kvf_http_creq *r)
{
	struct host *h = r->h;
	if (!r->queued)
		return;
	if (r->qprev)
		r->qprev->qnext = r->qnext;
	else
		h->qhead = r->qnext;
	if (r->qnext)
		r->qnext->qprev = r->qprev;
	else
		h->qtail = r->qprev;
	r->qprev = r->qnext = NULL;
	r->queued = 0;
	h->nq--;
	r->c->st.queued--;
	kvf_loop_timer_stop(r->c->loop, &r->qtimer);
}

static void req_free(kvf_http_creq *r)
{
	kvf_loop_timer_stop(r->c->loop, &r->qtimer);
	kvf_buf_free(&r->wire);
	kvf_free(r);
}

static void conn_set_err(struct conn *cn, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void conn_set_err(struct conn *cn, int err, const char *fmt, ...)
{
	if (cn->err)
		return;
	cn->err = err;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cn->errmsg, sizeof(cn->errmsg), fmt, ap);
	va_end(ap);
	dirty_add(cn);
}

static int errno_code(int e)
{
	switch (e) {
	case ECONNREFUSED: return KVF_E_CONNREFUSED;
	case ECONNRESET: case EPIPE: case ENOTCONN: case ECONNABORTED: return KVF_E_CLOSED;
	case ETIMEDOUT: return KVF_E_TIMEOUT;
	case ENOMEM: case ENOBUFS: return KVF_E_NOMEM;
	default: return KVF_E_IO;
	}
}

/* ---- connections ---- */

static void conn_fd_cb(kvf_loop *loop, int fd, unsigned events, void *ud);
static void conn_timer_cb(kvf_loop *loop, kvf_timer *t, void *ud);

/* Frees the connection now. Its request (if any) must have been detached. */
static void conn_free(struct conn *cn)
{
	kvf_http_client *c = cn->c;
	struct host *h = cn->h;
	idle_del(cn);
	dirty_del(cn);
	if (cn->aprev)
		cn->aprev->anext = cn->anext;
	else
		c->conns = cn->anext;
	if (cn->anext)
		cn->anext->aprev = cn->aprev;
	kvf_loop_timer_stop(c->loop, &cn->timer);
	if (cn->fd >= 0) {
		if (cn->events != ~0u)
			kvf_loop_del_fd(c->loop, cn->fd);
		close(cn->fd);
	}
	if (cn->zombie)
		req_free(cn->zombie);
	kvf_http_parser_free(&cn->parser);
	kvf_buf_free(&cn->in);
	h->nconns--;
	c->st.open_conns--;
	kvf_free(cn);
}

/* Closes the connection now, or when its pump unwinds. */
static void conn_close(struct conn *cn)
{
	if (cn->busy) {
		cn->closing = 1;
		return;
	}
	conn_free(cn);
}

/* Opens a connection to h and assigns r to it. Failures are recorded on the
 * connection and delivered by its pump. */
static int conn_open(kvf_http_client *c, struct host *h, kvf_http_creq *r)
{
	struct conn *cn = kvf_calloc(1, sizeof(*cn));
	if (!cn)
		return KVF_E_NOMEM;
	cn->c = c;
	cn->h = h;
	cn->fd = -1;
	cn->events = ~0u;
	kvf_http_limits lim = c->o.limits;
	lim.max_body_bytes = UINT64_MAX;
	if (kvf_http_parser_init(&cn->parser, KVF_HTTP_RESPONSE, &lim)) {
		kvf_free(cn);
		return KVF_E_NOMEM;
	}
	h->nconns++;
	c->st.open_conns++;
	c->st.connects++;
	cn->anext = c->conns;
	if (c->conns)
		c->conns->aprev = cn;
	c->conns = cn;
	cn->state = C_CONNECTING;
	cn->t_start_ms = kvf_loop_now_ms(c->loop);
	cn->req = r;
	cn->nreq = 1;
	r->conn = cn;
	r->stage = KVF_HTTP_CS_CONNECT;
	r->wire_off = 0;
	r->reused = 0;
	kvf_http_parser_set_req_method(&cn->parser, r->method);

	int fd = socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int e = errno;
		c->st.connect_errors++;
		conn_set_err(cn, errno_code(e), "socket: %s", strerror(e));
		return 0;
	}
	cn->fd = fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&h->sa, h->salen) != 0 && errno != EINPROGRESS) {
		int e = errno;
		c->st.connect_errors++;
		conn_set_err(cn, errno_code(e), "connect to %s: %s", h->name, strerror(e));
		return 0;
	}
	if (kvf_loop_add_fd(c->loop, fd, KVF_EV_WRITE, conn_fd_cb, cn)) {
		conn_set_err(cn, KVF_E_IO, "connect to %s: cannot register fd", h->name);
		return 0;
	}
	cn->events = KVF_EV_WRITE;
	kvf_loop_timer_start(c->loop, &cn->timer, c->o.connect_timeout_ms, 0, conn_timer_cb, cn);
	return 0;
}

/* Writes what the socket takes. Records failures. */
static void conn_flush(struct conn *cn)
{
	kvf_http_creq *r = cn->req;
	if (!r || cn->state != C_ACTIVE || cn->err)
		return;
	while (r->wire_off < r->wire.len) {
		ssize_t n = send(cn->fd, r->wire.data + r->wire_off, r->wire.len - r->wire_off, MSG_NOSIGNAL);
		if (n > 0) {
			r->wire_off += (size_t)n;
			cn->c->st.bytes_out += (uint64_t)n;
			r->t_tx_ms = kvf_loop_now_ms(cn->c->loop);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		int e = n < 0 ? errno : EPIPE;
		conn_set_err(cn, errno_code(e), "send to %s: %s", cn->h->name, strerror(e));
		return;
	}
	if (r->stage == KVF_HTTP_CS_SEND)
		r->stage = KVF_HTTP_CS_WAIT;
}

/* Assigns r to the idle connection cn and starts writing. */
static void conn_reuse(struct conn *cn, kvf_http_creq *r)
{
	idle_del(cn);
	cn->state = C_ACTIVE;
	cn->req = r;
	cn->nreq++;
	r->conn = cn;
	r->stage = KVF_HTTP_CS_SEND;
	r->wire_off = 0;
	r->reused = 1;
	cn->c->st.reused++;
	cn->t_rx_ms = kvf_loop_now_ms(cn->c->loop);
	kvf_http_parser_reset(&cn->parser);
	kvf_http_parser_set_req_method(&cn->parser, r->method);
	conn_flush(cn);
	dirty_add(cn); /* the pump sets interest and the timer */
}

static uint64_t conn_deadline(const struct conn *cn)
{
	const kvf_http_client *c = cn->c;
	const kvf_http_creq *r = cn->req;
	switch (cn->state) {
	case C_CONNECTING:
		return cn->t_start_ms + c->o.connect_timeout_ms;
	case C_IDLE:
		return cn->t_idle_ms + c->o.idle_timeout_ms;
	case C_ACTIVE:
		if (!r)
			return 0;
		if (r->wire_off < r->wire.len) {
			uint32_t t = r->rto_ms ? r->rto_ms : r->fbt_ms;
			return t ? r->t_tx_ms + t : 0;
		}
		if (r->stage == KVF_HTTP_CS_WAIT)
			return r->fbt_ms ? r->t_tx_ms + r->fbt_ms : 0;
		if (r->paused || !r->rto_ms)
			return 0;
		return cn->t_rx_ms + r->rto_ms;
	}
	return 0;
}

static void conn_update(struct conn *cn)
{
	kvf_http_client *c = cn->c;
	unsigned want = 0;
	if (cn->state == C_CONNECTING) {
		want = KVF_EV_WRITE;
	} else if (cn->state == C_IDLE) {
		want = KVF_EV_READ;
	} else if (cn->req) {
		if (!cn->req->paused)
			want |= KVF_EV_READ;
		if (cn->req->wire_off < cn->req->wire.len)
			want |= KVF_EV_WRITE;
	}
	if (cn->fd >= 0) {
		if (cn->eof) {
			/* epoll reports hang-ups whatever the interest: stop polling. */
			if (cn->events != ~0u) {
				kvf_loop_del_fd(c->loop, cn->fd);
				cn->events = ~0u;
			}
		} else if (cn->events == ~0u) {
			if (kvf_loop_add_fd(c->loop, cn->fd, want, conn_fd_cb, cn) == 0)
				cn->events = want;
		} else if (want != cn->events) {
			kvf_loop_mod_fd(c->loop, cn->fd, want);
			cn->events = want;
		}
	}
	uint64_t dl = conn_deadline(cn);
	if (!dl) {
		kvf_loop_timer_stop(c->loop, &cn->timer);
	} else {
		uint64_t now = kvf_loop_now_ms(c->loop);
		kvf_loop_timer_start(c->loop, &cn->timer, dl > now ? dl - now : 0, 0, conn_timer_cb, cn);
	}
}

/* ---- completion and failure ---- */

static void finish_ok(struct conn *cn, kvf_http_creq *r)
{
	kvf_http_client *c = cn->c;
	struct host *h = cn->h;
	int keep = cn->parser.msg.keep_alive && !r->no_pool && r->wire_off == r->wire.len &&
		   kvf_buf_avail(&cn->in) == 0 && !cn->eof && h->nidle < c->o.max_idle_per_host;
	cn->req = NULL;
	r->conn = NULL;
	if (keep) {
		cn->state = C_IDLE;
		cn->t_idle_ms = kvf_loop_now_ms(c->loop);
		idle_push(cn);
	} else {
		conn_close(cn);
	}
	c->st.completed++;
	if (r->cb.on_done)
		r->cb.on_done(r, r->ud);
	req_free(r);
	host_dispatch(h);
}

static void enqueue_front(kvf_http_creq *r);

/* Delivers the connection's recorded error to its request (or retries the
 * request on a fresh connection) and closes the connection. */
static void deliver_failure(struct conn *cn)
{
	kvf_http_client *c = cn->c;
	struct host *h = cn->h;
	kvf_http_creq *r = cn->req;
	int err = cn->err;
	char msg[sizeof(cn->errmsg)];
	memcpy(msg, cn->errmsg, sizeof(msg));
	cn->req = NULL;
	conn_close(cn);
	if (r) {
		r->conn = NULL;
		if (r->reused && !r->retried && err == KVF_E_CLOSED &&
		    (r->stage == KVF_HTTP_CS_SEND || r->stage == KVF_HTTP_CS_WAIT)) {
			r->retried = 1;
			c->st.stale_retries++;
			enqueue_front(r);
		} else {
			c->st.failed++;
			kvf_http_cerror e = { err, r->stage, msg };
			if (r->cb.on_error)
				r->cb.on_error(r, &e, r->ud);
			req_free(r);
		}
	}
	host_dispatch(h);
}

/* ---- the pump ---- */

static void parse_input(struct conn *cn)
{
	kvf_http_creq *r = cn->req;
	while (cn->req == r && !r->paused && !cn->err) {
		size_t avail = kvf_buf_avail(&cn->in);
		const char *p = kvf_buf_head(&cn->in);
		size_t used = 0;
		kvf_http_event ev;
		int rc = kvf_http_parse(&cn->parser, p, avail, &used, &ev);
		if (rc == KVF_E_AGAIN) {
			kvf_buf_consume(&cn->in, avail);
			break;
		}
		if (rc < 0) {
			conn_set_err(cn, KVF_E_PARSE, "bad response from %s: %s", cn->h->name,
				     cn->parser.reason ? cn->parser.reason : "malformed");
			return;
		}
		int done = 0;
		switch (ev.type) {
		case KVF_HTTP_EV_HEAD: {
			int st = cn->parser.msg.status;
			if (st >= 100 && st < 200 && st != 101) {
				r->skip_1xx = 1;
				break;
			}
			r->stage = KVF_HTTP_CS_BODY;
			if (r->cb.on_head)
				r->cb.on_head(r, &cn->parser.msg, r->ud);
			break;
		}
		case KVF_HTTP_EV_BODY:
			if (r->cb.on_body && ev.len)
				r->cb.on_body(r, ev.data, ev.len, r->ud);
			break;
		case KVF_HTTP_EV_DONE:
			if (r->skip_1xx) {
				r->skip_1xx = 0;
				kvf_http_parser_reset(&cn->parser);
				kvf_http_parser_set_req_method(&cn->parser, r->method);
			} else {
				done = 1;
			}
			break;
		}
		kvf_buf_consume(&cn->in, used);
		if (cn->req != r)
			return; /* canceled from the callback */
		if (done) {
			finish_ok(cn, r);
			return;
		}
	}
}

static void handle_eof(struct conn *cn)
{
	kvf_http_creq *r = cn->req;
	if (!r || r->paused || kvf_buf_avail(&cn->in) || cn->err)
		return;
	kvf_http_event ev;
	int rc = kvf_http_parser_eof(&cn->parser, &ev);
	if (rc == 0 && ev.type == KVF_HTTP_EV_DONE && !r->skip_1xx) {
		finish_ok(cn, r);
		return;
	}
	conn_set_err(cn, KVF_E_CLOSED, "%s closed the connection %s", cn->h->name,
		     kvf_http_cstage_before_response(r->stage) ? "before answering" : "in the middle of the response");
}

static void conn_process(struct conn *cn)
{
	if (cn->busy) {
		cn->again = 1;
		return;
	}
	cn->busy = 1;
	dirty_del(cn);
	do {
		cn->again = 0;
		if (cn->err) {
			deliver_failure(cn);
			break;
		}
		if (cn->closing)
			break;
		if (cn->state == C_IDLE) {
			if (cn->eof || kvf_buf_avail(&cn->in))
				conn_close(cn); /* closed by the server, or junk */
			break;
		}
		if (cn->state != C_ACTIVE)
			break;
		if (!cn->req) {
			conn_close(cn);
			break;
		}
		conn_flush(cn);
		if (cn->err)
			continue;
		parse_input(cn);
		if (cn->err) {
			cn->again = 1;
			continue;
		}
		if (cn->eof && cn->state == C_ACTIVE)
			handle_eof(cn);
		if (cn->err)
			cn->again = 1;
	} while (cn->again && !cn->closing);
	cn->busy = 0;
	if (cn->closing) {
		conn_free(cn);
		return;
	}
	if (cn->zombie) {
		req_free(cn->zombie);
		cn->zombie = NULL;
	}
	conn_update(cn);
}

static void conn_read(struct conn *cn)
{
	kvf_http_client *c = cn->c;
	for (int i = 0; i < 4; i++) {
		char *p = kvf_buf_space(&cn->in, c->o.read_buffer_bytes);
		if (!p) {
			conn_set_err(cn, KVF_E_NOMEM, "out of memory reading from %s", cn->h->name);
			return;
		}
		ssize_t n = recv(cn->fd, p, c->o.read_buffer_bytes, 0);
		if (n > 0) {
			kvf_buf_commit(&cn->in, (size_t)n);
			c->st.bytes_in += (uint64_t)n;
			cn->t_rx_ms = kvf_loop_now_ms(c->loop);
			if (cn->req && cn->req->stage < KVF_HTTP_CS_HEAD)
				cn->req->stage = KVF_HTTP_CS_HEAD;
			if ((size_t)n < c->o.read_buffer_bytes)
				return;
			continue;
		}
		if (n == 0) {
			cn->eof = 1;
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		int e = errno;
		if (cn->state == C_IDLE) {
			cn->eof = 1;
			return;
		}
		conn_set_err(cn, errno_code(e), "recv from %s: %s", cn->h->name, strerror(e));
		return;
	}
}

static void conn_fd_cb(kvf_loop *loop, int fd, unsigned events, void *ud)
{
	struct conn *cn = ud;
	if (cn->state == C_CONNECTING) {
		int rc = kvf_net_connect_result(fd);
		if (rc) {
			cn->c->st.connect_errors++;
			conn_set_err(cn, rc == KVF_E_CONNREFUSED ? KVF_E_CONNREFUSED : rc, "connect to %s: %s",
				     cn->h->name, kvf_errmsg());
		} else {
			cn->state = C_ACTIVE;
			cn->t_rx_ms = kvf_loop_now_ms(loop);
			if (cn->req)
				cn->req->stage = KVF_HTTP_CS_SEND;
		}
		conn_process(cn);
		return;
	}
	int paused = cn->req && cn->req->paused;
	if ((events & KVF_EV_READ) && !paused)
		conn_read(cn);
	else if (events & KVF_EV_ERROR)
		conn_read(cn); /* hang-up while paused: take what is left, note the EOF */
	conn_process(cn);
}

static void conn_timer_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct conn *cn = ud;
	uint64_t dl = conn_deadline(cn);
	if (dl && kvf_loop_now_ms(loop) >= dl) {
		if (cn->state == C_IDLE) {
			conn_free(cn);
			return;
		}
		const char *what = cn->state == C_CONNECTING           ? "connect"
				   : cn->req && cn->req->stage == KVF_HTTP_CS_WAIT ? "first response byte"
				   : cn->req && cn->req->wire_off < cn->req->wire.len ? "request write"
											  : "response read";
		conn_set_err(cn, KVF_E_TIMEOUT, "%s: timed out waiting for %s", cn->h->name, what);
	}
	conn_process(cn);
}

/* ---- hosts and queue ---- */

static void qtimer_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_http_creq *r = ud;
	kvf_http_client *c = r->c;
	queue_del(r);
	c->st.failed++;
	char msg[128];
	snprintf(msg, sizeof(msg), "%s: no connection free within %u ms", r->h->name, c->o.queue_timeout_ms);
	kvf_http_cerror e = { KVF_E_TIMEOUT, KVF_HTTP_CS_QUEUED, msg };
	if (r->cb.on_error)
		r->cb.on_error(r, &e, r->ud);
	req_free(r);
}

static void enqueue(kvf_http_creq *r, int front)
{
	struct host *h = r->h;
	kvf_http_client *c = r->c;
	r->queued = 1;
	r->stage = KVF_HTTP_CS_QUEUED;
	if (front) {
		r->qprev = NULL;
		r->qnext = h->qhead;
		if (h->qhead)
			h->qhead->qprev = r;
		else
			h->qtail = r;
		h->qhead = r;
	} else {
		r->qnext = NULL;
		r->qprev = h->qtail;
		if (h->qtail)
			h->qtail->qnext = r;
		else
			h->qhead = r;
		h->qtail = r;
	}
	h->nq++;
	c->st.queued++;
	kvf_loop_timer_start(c->loop, &r->qtimer, c->o.queue_timeout_ms, 0, qtimer_cb, r);
}

static void enqueue_front(kvf_http_creq *r)
{
	enqueue(r, 1);
	kick(r->c);
}

/* Gives queued requests to idle or new connections. Runs no callback. */
static void host_dispatch(struct host *h)
{
	while (h->qhead) {
		kvf_http_creq *r = h->qhead;
		kvf_http_client *c = r->c;
		if (h->idle) {
			struct conn *cn = h->idle;
			queue_del(r);
			conn_reuse(cn, r);
			continue;
		}
		if (h->nconns >= c->o.max_conns_per_host)
			return;
		queue_del(r);
		if (conn_open(c, h, r)) {
			/* Out of memory: put it back and let the queue timeout report it. */
			enqueue(r, 1);
			return;
		}
	}
}

static void kick_cb(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_http_client *c = ud;
	c->in_kick = 1;
	for (struct host *h = c->hosts; h; h = h->next)
		host_dispatch(h);
	int n = 0;
	while (c->dirty && n++ < KICK_BATCH)
		conn_process(c->dirty);
	c->in_kick = 0;
	if (c->dirty)
		kick(c);
	else
		for (struct host *h = c->hosts; h; h = h->next)
			if (h->qhead && (h->idle || h->nconns < c->o.max_conns_per_host)) {
				kick(c);
				break;
			}
}

static int host_get(kvf_http_client *c, const char *hostport, struct host **out)
{
	for (struct host *h = c->hosts; h; h = h->next)
		if (!strcmp(h->name, hostport)) {
			*out = h;
			return 0;
		}
	char host[KVF_NET_HOST_MAX];
	uint16_t port;
	int rc = kvf_net_parse_hostport(hostport, host, sizeof(host), &port);
	if (rc)
		return rc;
	if (!port)
		return kvf_errf(KVF_E_INVAL, "upstream %s: port 0", hostport);
	struct addrinfo hints = { 0 }, *res = NULL;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	char portstr[8];
	snprintf(portstr, sizeof(portstr), "%u", port);
	int g = getaddrinfo(host[0] ? host : "127.0.0.1", portstr, &hints, &res);
	if (g || !res)
		return kvf_errf(KVF_E_INVAL, "upstream %s: cannot resolve %s: %s", hostport, host, gai_strerror(g));
	struct host *h = kvf_calloc(1, sizeof(*h));
	if (!h || !(h->name = kvf_strdup(hostport))) {
		kvf_free(h);
		freeaddrinfo(res);
		return KVF_E_NOMEM;
	}
	memcpy(&h->sa, res->ai_addr, res->ai_addrlen);
	h->salen = res->ai_addrlen;
	freeaddrinfo(res);
	h->next = c->hosts;
	c->hosts = h;
	*out = h;
	return 0;
}

/* ---- public API ---- */

int kvf_http_client_new(kvf_loop *loop, const kvf_http_client_opts *opts, kvf_http_client **out)
{
	kvf_http_client *c = kvf_calloc(1, sizeof(*c));
	if (!c)
		return kvf_errf(KVF_E_NOMEM, "http client: out of memory");
	c->loop = loop;
	if (opts)
		c->o = *opts;
	if (!c->o.max_conns_per_host)
		c->o.max_conns_per_host = 64;
	if (!c->o.max_idle_per_host)
		c->o.max_idle_per_host = 32;
	if (!c->o.max_queue_per_host)
		c->o.max_queue_per_host = 4096;
	if (!c->o.connect_timeout_ms)
		c->o.connect_timeout_ms = 1000;
	if (!c->o.queue_timeout_ms)
		c->o.queue_timeout_ms = 10000;
	if (!c->o.idle_timeout_ms)
		c->o.idle_timeout_ms = 30000;
	if (!c->o.read_buffer_bytes)
		c->o.read_buffer_bytes = 16384;
	*out = c;
	return 0;
}

void kvf_http_client_destroy(kvf_http_client *c)
{
	if (!c)
		return;
	kvf_loop_timer_stop(c->loop, &c->kick);
	struct host *h = c->hosts;
	while (h) {
		struct host *next = h->next;
		while (h->qhead) {
			kvf_http_creq *r = h->qhead;
			queue_del(r);
			req_free(r);
		}
		h = next;
	}
	while (c->conns) {
		struct conn *cn = c->conns;
		if (cn->req) {
			req_free(cn->req);
			cn->req = NULL;
		}
		conn_free(cn);
	}
	h = c->hosts;
	while (h) {
		struct host *next = h->next;
		kvf_free(h->name);
		kvf_free(h);
		h = next;
	}
	kvf_free(c);
}

static int header_forbidden(const char *name)
{
	return !strcasecmp(name, "content-length") || !strcasecmp(name, "transfer-encoding") ||
	       !strcasecmp(name, "connection");
}

int kvf_http_client_request(kvf_http_client *c, const char *hostport, const kvf_http_creq_opts *o,
			    const kvf_http_creq_cbs *cbs, void *ud, kvf_http_creq **out)
{
	static const kvf_http_creq_opts defaults = { 0 };
	if (!o)
		o = &defaults;
	const char *method = o->method ? o->method : "GET";
	const char *target = o->target ? o->target : "/";
	if (o->headers) {
		if (kvf_http_headers_valid(o->headers))
			return kvf_errf(KVF_E_INVAL, "http client: invalid request header");
		for (size_t i = 0; o->headers[i]; i += 2)
			if (header_forbidden(o->headers[i]))
				return kvf_errf(KVF_E_INVAL, "http client: header %s is set by the client", o->headers[i]);
	}
	for (const char *p = target; *p; p++)
		if ((unsigned char)*p <= ' ' || *p == 0x7f)
			return kvf_errf(KVF_E_INVAL, "http client: invalid request target");
	struct host *h;
	int rc = host_get(c, hostport, &h);
	if (rc)
		return rc;
	if (h->nq >= c->o.max_queue_per_host)
		return kvf_errf(KVF_E_OVERLOAD, "upstream %s: %u requests already waiting", hostport, h->nq);
	kvf_http_creq *r = kvf_calloc(1, sizeof(*r));
	if (!r)
		return KVF_E_NOMEM;
	r->c = c;
	r->h = h;
	r->method = kvf_http_method_from(method, strlen(method));
	if (cbs)
		r->cb = *cbs;
	r->ud = ud;
	r->fbt_ms = o->first_byte_timeout_ms;
	r->rto_ms = o->read_timeout_ms;
	r->no_pool = o->close ? 1 : 0;
	kvf_buf *w = &r->wire;
	rc = kvf_http_write_request_line(w, method, target);
	int have_host = 0;
	if (o->headers)
		for (size_t i = 0; o->headers[i]; i += 2)
			if (!strcasecmp(o->headers[i], "host"))
				have_host = 1;
	if (!rc && !have_host)
		rc = kvf_http_write_header(w, "Host", hostport);
	if (!rc && o->headers)
		rc = kvf_http_write_headers(w, o->headers);
	if (!rc && (o->body_len || r->method == KVF_HTTP_POST || r->method == KVF_HTTP_PUT ||
		    r->method == KVF_HTTP_PATCH))
		rc = kvf_http_write_headerf(w, "Content-Length", "%zu", o->body_len);
	if (!rc && o->close)
		rc = kvf_http_write_header(w, "Connection", "close");
	if (!rc)
		rc = kvf_http_write_end_head(w);
	if (!rc && o->body_len)
		rc = kvf_buf_append(w, o->body, o->body_len);
	if (rc) {
		req_free(r);
		return rc == KVF_E_NOMEM ? KVF_E_NOMEM : kvf_errf(KVF_E_INVAL, "http client: invalid request");
	}
	c->st.requests++;
	enqueue(r, 0);
	kick(c);
	if (out)
		*out = r;
	return 0;
}

void kvf_http_creq_cancel(kvf_http_creq *r)
{
	if (!r || r->zombie)
		return;
	kvf_http_client *c = r->c;
	c->st.canceled++;
	if (r->queued) {
		queue_del(r);
		req_free(r);
		return;
	}
	struct conn *cn = r->conn;
	if (!cn) {
		req_free(r);
		return;
	}
	cn->req = NULL;
	r->conn = NULL;
	if (cn->busy) {
		r->zombie = 1;
		cn->zombie = r; /* the pump on the stack may still look at it */
		cn->closing = 1;
		return;
	}
	req_free(r);
	struct host *h = cn->h;
	conn_free(cn);
	if (h->qhead)
		kick(c);
}

void kvf_http_creq_pause(kvf_http_creq *r, int paused)
{
	if (!r || r->zombie)
		return;
	int was = r->paused;
	r->paused = paused ? 1 : 0;
	if (r->conn && was != r->paused) {
		if (!paused)
			r->conn->t_rx_ms = kvf_loop_now_ms(r->c->loop);
		dirty_add(r->conn);
	}
}

int kvf_http_creq_stage(const kvf_http_creq *r) { return r->stage; }
int kvf_http_creq_reused(const kvf_http_creq *r) { return r->reused; }

void kvf_http_client_stats_get(const kvf_http_client *c, kvf_http_client_stats *out)
{
	*out = c->st;
}

void kvf_http_client_close_idle(kvf_http_client *c, const char *hostport)
{
	for (struct host *h = c->hosts; h; h = h->next)
		if (!hostport || !strcmp(h->name, hostport))
			while (h->idle)
				conn_free(h->idle);
}
