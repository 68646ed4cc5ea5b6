/*
 * http_server.c: HTTP/1.1 server on a kvf_loop.
 *
 * One connection = one fd, an input and an output kvf_buf, one kvf_timer and
 * a small ring of request slots (max_pipeline). Slots come from a per-server
 * pool, each holding a parser (which owns the head copy) and a body buffer,
 * so a request costs no allocation once the pool and buffers are warm.
 *
 * Everything a connection does goes through one non-reentrant pump,
 * conn_advance(): parse buffered input into slots, hand the head slot to the
 * handler, send 100 Continue or a pending error answer, flush output, decide
 * on closing, then set epoll interest and the timer. Calls made by the
 * handler (respond, send, end) only change state and kick the pump; when the
 * pump is already on the stack they set `again` and it loops, so handlers may
 * answer synchronously or later without recursion.
 *
 * A connection that dies (reset, EOF while a request is being answered, send
 * timeout) closes its fd at once but is reaped from a zero-delay timer: that
 * is where on_close runs, never inside a kvf_http_* call the handler made.
 * The connection's memory lives until the handler finishes its request.
 */
#include "common/kvf_http.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"

#define POOL_MAX 64                   /* request slots kept for reuse */
#define ACCEPT_BURST 64               /* accepts per listener event */
#define ACCEPT_RETRY_MS 100           /* after EMFILE and friends */
#define SHRINK_BYTES (1u << 20)       /* buffers above this are freed when idle */
#define OUT_HIGH_BYTES (256u << 10)   /* no new request dispatched above this output */

enum { RS_RECV = 1, RS_READY, RS_ACTIVE };
enum { FR_LENGTH = 1, FR_CHUNKED, FR_CLOSE };

struct conn;

struct kvf_http_req {
	struct conn *c;
	kvf_http_req *next_free;
	kvf_http_parser parser;
	kvf_buf body;
	int state;
	uint64_t t_start_ms;  /* first byte of this request (or accept) */
	uint64_t t_last_ms;   /* last body byte */
	unsigned continue_pending : 1, started : 1, head_only : 1, resp_close : 1;
	unsigned want_close : 1, closed : 1, close_notified : 1;
	int framing;
	int status;
	uint64_t cl_left;
	kvf_http_req_cb on_close, on_drain;
	void *close_ud, *drain_ud;
};

struct conn {
	kvf_http_server *s;
	struct conn *prev, *next;
	int fd;
	unsigned events;      /* registered KVF_EV_* */
	kvf_buf in, out;
	kvf_timer timer;
	uint64_t deadline_ms; /* what the timer is armed for; 0 = none */
	uint64_t t_accept_ms, t_idle_ms, t_tx_ms, linger_until_ms;
	uint32_t q_head, q_len;
	uint32_t nreq;        /* requests started on this connection */
	int busy;             /* pump or reaper on the stack: do not free */
	unsigned dead : 1, peer_eof : 1, no_more : 1, close_after : 1, lingering : 1;
	unsigned blocked : 1, drained : 1, again : 1, advancing : 1, err_sent : 1;
	unsigned reaped : 1, timer_is_reap : 1;
	int err_status;
	const char *err_reason;
	char peer[64];
	kvf_http_req *q[];    /* [max_pipeline] ring */
};

struct kvf_http_server {
	kvf_loop *loop;
	kvf_http_handler handler;
	void *ud;
	kvf_http_server_opts o;
	char *server_name;
	int lfd;
	uint16_t port;
	unsigned accept_paused : 1, stopping : 1, done_called : 1;
	kvf_timer accept_timer, done_timer;
	kvf_http_server_cb done;
	void *done_ud;
	struct conn *conns;
	uint64_t nconns;      /* allocated connections, dead ones included */
	kvf_http_req *pool;
	uint32_t pool_n;
	kvf_http_server_stats st;
	kvf_buf scratch;
	time_t date_t;
	char date[40];
};

static void conn_advance(struct conn *c);
static void conn_abort(struct conn *c);
static void conn_maybe_free(struct conn *c);
static void on_conn_timer(kvf_loop *loop, kvf_timer *t, void *ud);

/* ---- small helpers ---- */

static uint64_t now_ms(const kvf_http_server *s)
{
	return kvf_loop_now_ms(s->loop);
}

static kvf_http_req *q_at(const struct conn *c, uint32_t i)
{
	return c->q[(c->q_head + i) % c->s->o.max_pipeline];
}

static kvf_http_req *q_front(const struct conn *c)
{
	return c->q_len ? q_at(c, 0) : NULL;
}

static kvf_http_req *q_tail(const struct conn *c)
{
	return c->q_len ? q_at(c, c->q_len - 1) : NULL;
}

static const char *http_date(kvf_http_server *s)
{
	time_t t = time(NULL);
	if (t != s->date_t) {
		struct tm tm;
		gmtime_r(&t, &tm);
		strftime(s->date, sizeof(s->date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		s->date_t = t;
	}
	return s->date;
}

/* ---- request slot pool ---- */

static kvf_http_req *slot_get(kvf_http_server *s)
{
	kvf_http_req *r = s->pool;
	if (r) {
		s->pool = r->next_free;
		s->pool_n--;
		return r;
	}
	r = kvf_calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	if (kvf_http_parser_init(&r->parser, KVF_HTTP_REQUEST, &s->o.limits) != 0) {
		kvf_free(r);
		return NULL;
	}
	kvf_buf_init(&r->body);
	return r;
}

static void slot_free(kvf_http_req *r)
{
	kvf_http_parser_free(&r->parser);
	kvf_buf_free(&r->body);
	kvf_free(r);
}

static void slot_put(kvf_http_server *s, kvf_http_req *r)
{
	kvf_http_parser_reset(&r->parser);
	if (r->body.cap > SHRINK_BYTES)
		kvf_buf_free(&r->body);
	else
		kvf_buf_reset(&r->body);
	kvf_http_parser p = r->parser;
	kvf_buf b = r->body;
	memset(r, 0, sizeof(*r));
	r->parser = p;
	r->body = b;
	if (s->pool_n >= POOL_MAX) {
		slot_free(r);
		return;
	}
	r->next_free = s->pool;
	s->pool = r;
	s->pool_n++;
}

/* ---- connection lifecycle ---- */

static void resume_accept(kvf_http_server *s);

static void conn_close_fd(struct conn *c)
{
	kvf_http_server *s = c->s;
	if (c->fd < 0)
		return;
	kvf_loop_del_fd(s->loop, c->fd);
	close(c->fd);
	c->fd = -1;
	s->st.open_conns--;
	if (s->accept_paused && !s->stopping && s->st.open_conns < s->o.max_conns)
		resume_accept(s);
}

/* Drops queued requests from the back, stopping at an ACTIVE front. */
static void conn_drop_queued(struct conn *c)
{
	while (c->q_len) {
		kvf_http_req *r = q_tail(c);
		if (r->state == RS_ACTIVE)
			break;
		c->q_len--;
		slot_put(c->s, r);
	}
}

/* The connection is gone (or being closed by us): close the fd now, reap
 * from a zero-delay timer so on_close never runs inside a caller's call. */
static void conn_abort(struct conn *c)
{
	if (c->dead)
		return;
	c->dead = 1;
	kvf_http_req *f = q_front(c);
	if (f && f->state == RS_ACTIVE) {
		f->closed = 1;
		c->s->st.client_aborts++;
	}
	conn_drop_queued(c);
	conn_close_fd(c);
	kvf_buf_free(&c->in);
	kvf_buf_free(&c->out);
	c->timer_is_reap = 1;
	c->deadline_ms = 0;
	kvf_loop_timer_start(c->s->loop, &c->timer, 0, 0, on_conn_timer, c);
}

static void on_done_timer(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_http_server *s = ud;
	if (s->done)
		s->done(s, s->done_ud); /* may destroy s */
}

static void check_done(kvf_http_server *s)
{
	if (s->stopping && s->nconns == 0 && !s->done_called && s->done) {
		s->done_called = 1;
		kvf_loop_timer_start(s->loop, &s->done_timer, 0, 0, on_done_timer, s);
	}
}

static void conn_unlink(struct conn *c)
{
	kvf_http_server *s = c->s;
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
}

static void conn_maybe_free(struct conn *c)
{
	if (!c->dead || c->busy || !c->reaped || c->q_len)
		return;
	kvf_http_server *s = c->s;
	kvf_loop_timer_stop(s->loop, &c->timer);
	conn_unlink(c);
	kvf_free(c);
	check_done(s);
}

static void conn_reap(struct conn *c)
{
	c->busy++;
	kvf_http_req *f = q_front(c);
	if (f && f->state == RS_ACTIVE && !f->close_notified) {
		f->close_notified = 1;
		if (f->on_close)
			f->on_close(f, f->close_ud); /* may kvf_http_end(f) */
	}
	c->reaped = 1;
	c->busy--;
	conn_maybe_free(c);
}

/* ---- pump stages ---- */

static void count_error(kvf_http_server *s, int status)
{
	switch (status) {
	case 400: s->st.err_400++; break;
	case 408: s->st.err_408++; return;
	case 413: s->st.err_413++; break;
	case 414: s->st.err_414++; break;
	case 431: s->st.err_431++; break;
	case 501: s->st.err_501++; break;
	case 505: s->st.err_505++; break;
	default: break;
	}
	s->st.parse_errors++;
}

static const char *conn_peer(struct conn *c)
{
	if (!c->peer[0]) {
		if (c->fd >= 0)
			kvf_net_peer_name(c->fd, c->peer, sizeof(c->peer));
		else
			snprintf(c->peer, sizeof(c->peer), "?");
	}
	return c->peer;
}

/* A request could not be read: answer status once the queue ahead is done,
 * then close. */
static void conn_set_error(struct conn *c, int status, const char *reason)
{
	c->err_status = status;
	c->err_reason = reason;
	c->no_more = 1;
	count_error(c->s, status);
	KVF_LOG_RL(KVF_LOG_INFO, 10, 1000, "http", "bad request", "peer=%s status=%d reason=\"%s\"",
		   conn_peer(c), status, reason ? reason : "");
}

static void conn_write_error(struct conn *c)
{
	kvf_http_server *s = c->s;
	int st = c->err_status;
	kvf_buf *b = &s->scratch, *o = &c->out;
	kvf_buf_reset(b);
	kvf_http_write_json_error(b, c->err_reason ? c->err_reason : kvf_http_status_reason(st),
				  kvf_http_error_type(st), NULL);
	kvf_http_write_status_line(o, st, NULL);
	kvf_buf_printf(o, "Date: %s\r\n", http_date(s));
	if (s->server_name)
		kvf_http_write_header(o, "Server", s->server_name);
	kvf_buf_printf(o, "Content-Type: application/json\r\nContent-Length: %zu\r\n"
			  "Connection: close\r\n\r\n", b->len);
	kvf_buf_append(o, b->data, b->len);
	c->err_sent = 1;
	c->close_after = 1;
	s->st.responses[st / 100 <= 5 ? st / 100 : 0]++;
}

static size_t queued_body_bytes(const struct conn *c)
{
	size_t n = 0;
	for (uint32_t i = 0; i < c->q_len; i++) {
		const kvf_http_req *r = q_at(c, i);
		if (r->state == RS_READY)
			n += r->body.len;
	}
	return n;
}

/* Parses buffered input into request slots. */
static void conn_parse(struct conn *c)
{
	kvf_http_server *s = c->s;
	uint32_t maxq = s->o.max_pipeline;
	while (!c->no_more) {
		kvf_http_req *r = q_tail(c);
		size_t avail = kvf_buf_avail(&c->in);
		if (!r || r->state != RS_RECV) {
			if (avail == 0 || c->q_len >= maxq ||
			    queued_body_bytes(c) > s->o.limits.max_body_bytes)
				break;
			r = slot_get(s);
			if (!r) {
				conn_set_error(c, 503, "out of memory");
				break;
			}
			r->c = c;
			r->state = RS_RECV;
			r->t_start_ms = c->nreq == 0 ? c->t_accept_ms : now_ms(s);
			c->nreq++;
			c->q[(c->q_head + c->q_len) % maxq] = r;
			c->q_len++;
		} else if (avail == 0 && !kvf_http_parser_head_done(&r->parser)) {
			break;
		}
		size_t used = 0;
		kvf_http_event ev;
		int rc = kvf_http_parse(&r->parser, kvf_buf_head(&c->in), avail, &used, &ev);
		if (rc == KVF_E_AGAIN) {
			kvf_buf_consume(&c->in, used);
			break;
		}
		if (rc < 0) {
			int st = r->parser.status ? r->parser.status : 400;
			const char *why = r->parser.reason;
			c->q_len--;
			slot_put(s, r);
			conn_set_error(c, st, why);
			break;
		}
		if (ev.type == KVF_HTTP_EV_HEAD) {
			r->t_last_ms = now_ms(s);
			if (r->parser.msg.expect_continue && r->parser.msg.body_kind != KVF_HTTP_BODY_NONE)
				r->continue_pending = 1;
		} else if (ev.type == KVF_HTTP_EV_BODY) {
			r->continue_pending = 0; /* the client sends anyway */
			r->t_last_ms = now_ms(s);
			if (kvf_buf_append(&r->body, ev.data, ev.len) != 0) {
				c->q_len--;
				slot_put(s, r);
				conn_set_error(c, 503, "out of memory");
				break;
			}
		} else {
			r->state = RS_READY;
			if (!r->parser.msg.keep_alive)
				c->no_more = 1; /* nothing after a closing request is read */
		}
		kvf_buf_consume(&c->in, used);
	}
}

/* Hands the front request to the handler, or answers 100 Continue for it,
 * or writes the pending error once nothing is queued ahead of it. */
static void conn_dispatch(struct conn *c)
{
	kvf_http_server *s = c->s;
	kvf_http_req *r = q_front(c);
	if (!r) {
		if (c->err_status && !c->err_sent)
			conn_write_error(c);
		return;
	}
	if (r->state == RS_RECV) {
		if (r->continue_pending) {
			kvf_buf_puts(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
			r->continue_pending = 0;
			s->st.continues++;
		}
		return;
	}
	if (r->state != RS_READY)
		return;
	if (kvf_buf_avail(&c->out) > OUT_HIGH_BYTES)
		return; /* the client is not reading: hold pipelined work */
	r->state = RS_ACTIVE;
	s->st.requests++;
	s->st.active_reqs++;
	s->handler(r, s->ud); /* may finish r (and recycle it) before returning */
}

/* Writes buffered output; `drained` marks "was non-empty, now all sent". */
static void conn_flush(struct conn *c)
{
	kvf_http_server *s = c->s;
	if (!kvf_buf_avail(&c->out))
		return;
	while (kvf_buf_avail(&c->out)) {
		ssize_t n = send(c->fd, kvf_buf_head(&c->out), kvf_buf_avail(&c->out), MSG_NOSIGNAL);
		if (n > 0) {
			kvf_buf_consume(&c->out, (size_t)n);
			s->st.bytes_out += (uint64_t)n;
			c->t_tx_ms = now_ms(s);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->blocked) {
				c->blocked = 1;
				c->t_tx_ms = now_ms(s);
			}
			return;
		}
		conn_abort(c);
		return;
	}
	c->blocked = 0;
	c->drained = 1;
	if (c->out.cap > SHRINK_BYTES)
		kvf_buf_free(&c->out);
}

static void conn_drain_cb(struct conn *c)
{
	if (!c->drained)
		return;
	c->drained = 0;
	kvf_http_req *r = q_front(c);
	if (r && r->state == RS_ACTIVE && !r->closed && r->on_drain)
		r->on_drain(r, r->drain_ud);
	else if (r && r->state == RS_READY && kvf_buf_avail(&c->out) <= OUT_HIGH_BYTES)
		c->again = 1; /* dispatch held back by output, which is gone now */
}

static void conn_check_close(struct conn *c)
{
	kvf_http_server *s = c->s;
	kvf_http_req *f = q_front(c);
	int active = f && f->state == RS_ACTIVE;
	if (c->peer_eof && !c->lingering) {
		/* EOF from the client: a request being answered is abandoned
		 * (nginx's "client prematurely closed connection"); an
		 * incomplete one is dropped; complete ones still go to the
		 * handler (a synchronous answer reaches a half-closed client),
		 * and answers already queued go out before the close. */
		if (active) {
			conn_abort(c);
			return;
		}
		kvf_http_req *t = q_tail(c);
		if (t && t->state == RS_RECV) {
			c->q_len--;
			slot_put(s, t);
		}
		c->no_more = 1;
		if (c->q_len) {
			/* dispatch the next one now, or once output drains */
			if (kvf_buf_avail(&c->out) <= OUT_HIGH_BYTES)
				c->again = 1;
			return;
		}
		c->close_after = 1;
	}
	if (!c->close_after || active)
		return;
	if (c->q_len) {
		conn_drop_queued(c);
		c->again = 1; /* a pending error answer goes out first */
		return;
	}
	if (c->err_status && !c->err_sent) {
		c->again = 1;
		return;
	}
	if (kvf_buf_avail(&c->out))
		return;
	if (c->peer_eof) {
		conn_abort(c);
		return;
	}
	/* Lingering close: stop sending, read and drop what the client still
	 * sends until it closes or linger_ms pass, so our answer is not lost to
	 * a reset. */
	shutdown(c->fd, SHUT_WR);
	c->lingering = 1;
	c->linger_until_ms = now_ms(s) + s->o.linger_ms;
	kvf_buf_reset(&c->in);
}

enum { TK_NONE, TK_LINGER, TK_SEND, TK_FIRST, TK_IDLE, TK_HEAD, TK_BODY };

/* When the connection's current phase times out (0: never) and which phase. */
static uint64_t conn_deadline(const struct conn *c, int *kind)
{
	const kvf_http_server_opts *o = &c->s->o;
	int k = TK_NONE;
	uint64_t dl = 0;
	kvf_http_req *t = q_tail(c);
	if (c->lingering) {
		k = TK_LINGER;
		dl = c->linger_until_ms;
	} else if (c->blocked && kvf_buf_avail(&c->out)) {
		k = TK_SEND;
		dl = c->t_tx_ms + o->send_timeout_ms;
	} else if (t && t->state == RS_RECV) {
		if (!kvf_http_parser_head_done(&t->parser)) {
			k = TK_HEAD;
			dl = t->t_start_ms + o->header_timeout_ms;
		} else {
			k = TK_BODY;
			dl = t->t_last_ms + o->body_timeout_ms;
		}
	} else if (c->q_len == 0 && !c->close_after) {
		if (c->nreq == 0) {
			k = TK_FIRST;
			dl = c->t_accept_ms + o->header_timeout_ms;
		} else {
			k = TK_IDLE;
			dl = c->t_idle_ms + o->idle_timeout_ms;
		}
	}
	if (kind)
		*kind = k;
	return dl;
}

static void conn_arm(struct conn *c, uint64_t dl)
{
	uint64_t now = now_ms(c->s);
	c->deadline_ms = dl;
	kvf_loop_timer_start(c->s->loop, &c->timer, dl > now ? dl - now : 0, 0, on_conn_timer, c);
}

static void conn_update_io(struct conn *c)
{
	kvf_http_server *s = c->s;
	unsigned ev = 0;
	if (c->lingering ||
	    (!c->peer_eof && kvf_buf_avail(&c->in) < 4 * (size_t)s->o.read_buffer_bytes))
		ev |= KVF_EV_READ;
	if (c->blocked && kvf_buf_avail(&c->out))
		ev |= KVF_EV_WRITE;
	if (ev != c->events && kvf_loop_mod_fd(s->loop, c->fd, ev) == 0)
		c->events = ev;
	uint64_t dl = conn_deadline(c, NULL);
	if (!dl) {
		kvf_loop_timer_stop(s->loop, &c->timer);
		c->deadline_ms = 0;
		return;
	}
	/* An armed timer due no later than the new deadline just re-checks when
	 * it fires: rolling timeouts cost no heap operation per read. */
	if (kvf_timer_armed(&c->timer) && c->deadline_ms && c->deadline_ms <= dl)
		return;
	conn_arm(c, dl);
}

static void conn_advance(struct conn *c)
{
	if (c->advancing) {
		c->again = 1;
		return;
	}
	c->advancing = 1;
	c->busy++;
	do {
		c->again = 0;
		if (!c->dead)
			conn_parse(c);
		if (!c->dead)
			conn_dispatch(c);
		/* Pipelined answers ready back to back go out in one send(). */
		kvf_http_req *f = q_front(c);
		int more = c->again && f && f->state == RS_READY &&
			   kvf_buf_avail(&c->out) <= OUT_HIGH_BYTES;
		if (!c->dead && !more)
			conn_flush(c);
		if (!c->dead)
			conn_drain_cb(c);
		if (!c->dead)
			conn_check_close(c);
	} while (c->again && !c->dead);
	if (!c->dead)
		conn_update_io(c);
	c->advancing = 0;
	c->busy--;
	conn_maybe_free(c);
}

/* Output was added by the handler: flush now, or let the running pump do it. */
static void conn_kick(struct conn *c)
{
	if (c->dead)
		return;
	if (c->advancing)
		c->again = 1;
	else
		conn_advance(c);
}

/* ---- events ---- */

static void on_conn_timer(kvf_loop *loop, kvf_timer *t, void *ud)
{
	struct conn *c = ud;
	if (c->dead) {
		conn_reap(c);
		return;
	}
	kvf_http_server *s = c->s;
	c->deadline_ms = 0;
	int kind;
	uint64_t dl = conn_deadline(c, &kind);
	if (!dl)
		return;
	if (dl > now_ms(s)) {
		conn_arm(c, dl);
		return;
	}
	switch (kind) {
	case TK_LINGER:
		conn_abort(c);
		return;
	case TK_SEND:
	case TK_FIRST:
	case TK_IDLE:
		s->st.timeouts++;
		conn_abort(c);
		return;
	default: {
		/* Header or body too slow (slowloris): 408 when nothing is queued
		 * ahead, else finish what is queued and close. */
		s->st.timeouts++;
		kvf_http_req *tail = q_tail(c);
		c->q_len--;
		slot_put(s, tail);
		if (c->q_len == 0)
			conn_set_error(c, 408, kind == TK_HEAD ? "request header timeout"
							       : "request body timeout");
		c->no_more = 1;
		c->close_after = 1;
		conn_advance(c);
	}
	}
}

static void conn_read(struct conn *c)
{
	kvf_http_server *s = c->s;
	if (c->lingering) {
		char junk[4096];
		for (int i = 0; i < 16; i++) {
			ssize_t n = recv(c->fd, junk, sizeof(junk), 0);
			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return;
			conn_abort(c); /* EOF or error: the client is done */
			return;
		}
		return;
	}
	size_t rb = s->o.read_buffer_bytes, cap = 4 * rb;
	while (kvf_buf_avail(&c->in) < cap) {
		char *p = kvf_buf_space(&c->in, rb);
		if (!p) {
			conn_abort(c);
			return;
		}
		ssize_t n = recv(c->fd, p, rb, 0);
		if (n > 0) {
			kvf_buf_commit(&c->in, (size_t)n);
			s->st.bytes_in += (uint64_t)n;
			if ((size_t)n < rb)
				break;
			continue;
		}
		if (n == 0) {
			c->peer_eof = 1;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		conn_abort(c); /* reset by peer and friends */
		return;
	}
}

static void on_conn_event(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct conn *c = ud;
	c->busy++;
	if (ev & KVF_EV_READ)
		conn_read(c);
	else if ((ev & KVF_EV_ERROR) && !(ev & KVF_EV_WRITE))
		conn_abort(c); /* hang-up with nothing to read or write */
	c->busy--;
	if (!c->dead)
		conn_advance(c); /* flushes on KVF_EV_WRITE too */
	else
		conn_maybe_free(c);
}

static int conn_new(kvf_http_server *s, int fd)
{
	struct conn *c = kvf_calloc(1, sizeof(*c) + s->o.max_pipeline * sizeof(kvf_http_req *));
	if (!c)
		return kvf_errf(KVF_E_NOMEM, "http: connection");
	c->s = s;
	c->fd = fd;
	kvf_buf_init(&c->in);
	kvf_buf_init(&c->out);
	kvf_net_set_nodelay(fd, 1); /* fails harmlessly on Unix sockets */
	kvf_err_clear();
	c->t_accept_ms = c->t_idle_ms = c->t_tx_ms = now_ms(s);
	int rc = kvf_loop_add_fd(s->loop, fd, KVF_EV_READ, on_conn_event, c);
	if (rc) {
		kvf_free(c);
		return rc;
	}
	c->events = KVF_EV_READ;
	c->next = s->conns;
	if (s->conns)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	s->st.accepted++;
	s->st.open_conns++;
	conn_update_io(c);
	return 0;
}

/* ---- listener ---- */

static void on_accept_timer(kvf_loop *loop, kvf_timer *t, void *ud)
{
	kvf_http_server *s = ud;
	if (!s->stopping && s->st.open_conns < s->o.max_conns)
		resume_accept(s);
}

static void pause_accept(kvf_http_server *s, uint32_t retry_ms)
{
	if (!s->accept_paused && kvf_loop_mod_fd(s->loop, s->lfd, 0) == 0)
		s->accept_paused = 1;
	if (retry_ms)
		kvf_loop_timer_start(s->loop, &s->accept_timer, retry_ms, 0, on_accept_timer, s);
}

static void resume_accept(kvf_http_server *s)
{
	kvf_loop_timer_stop(s->loop, &s->accept_timer);
	if (s->accept_paused && s->lfd >= 0 && kvf_loop_mod_fd(s->loop, s->lfd, KVF_EV_READ) == 0)
		s->accept_paused = 0;
}

static void on_accept(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	kvf_http_server *s = ud;
	for (int i = 0; i < ACCEPT_BURST; i++) {
		if (s->st.open_conns >= s->o.max_conns) {
			pause_accept(s, 0);
			return;
		}
		int cfd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			int e = errno;
			if (e == EAGAIN || e == EWOULDBLOCK)
				return;
			if (e == EINTR || e == ECONNABORTED || e == EPROTO)
				continue;
			s->st.accept_errors++;
			KVF_LOG_RL(KVF_LOG_WARN, 5, 10000, "http", "accept failed", "err=\"%s\"",
				   strerror(e));
			if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM)
				pause_accept(s, ACCEPT_RETRY_MS);
			return;
		}
		if (conn_new(s, cfd) != 0) {
			close(cfd);
			s->st.accept_errors++;
		}
	}
}

/* ---- server ---- */

int kvf_http_server_new(kvf_loop *loop, const kvf_http_server_opts *opts,
			kvf_http_handler handler, void *ud, kvf_http_server **out)
{
	if (!loop || !opts || !handler || !out || (!opts->listen && opts->listen_fd <= 0))
		return kvf_errf(KVF_E_INVAL, "http: server needs a loop, a handler and a listen address");
	kvf_http_server *s = kvf_calloc(1, sizeof(*s));
	if (!s)
		return kvf_errf(KVF_E_NOMEM, "http: server");
	int rc;
	s->loop = loop;
	s->handler = handler;
	s->ud = ud;
	s->o = *opts;
	s->o.listen = NULL; /* not kept: the caller's string */
	s->o.server_name = NULL;
	s->o.limits = kvf_http_limits_resolve(&opts->limits);
	if (!s->o.backlog)
		s->o.backlog = 511;
	if (!s->o.header_timeout_ms)
		s->o.header_timeout_ms = 10000;
	if (!s->o.body_timeout_ms)
		s->o.body_timeout_ms = 30000;
	if (!s->o.idle_timeout_ms)
		s->o.idle_timeout_ms = 60000;
	if (!s->o.send_timeout_ms)
		s->o.send_timeout_ms = 60000;
	if (!s->o.linger_ms)
		s->o.linger_ms = 2000;
	if (!s->o.max_conns)
		s->o.max_conns = 1024;
	if (!s->o.max_pipeline)
		s->o.max_pipeline = 16;
	if (!s->o.read_buffer_bytes)
		s->o.read_buffer_bytes = 16384;
	if (s->o.read_buffer_bytes < 512)
		s->o.read_buffer_bytes = 512;
	kvf_buf_init(&s->scratch);
	if (opts->server_name && !(s->server_name = kvf_strdup(opts->server_name))) {
		rc = kvf_errf(KVF_E_NOMEM, "http: server name");
		goto err_free;
	}
	if (opts->listen_fd > 0) {
		s->lfd = opts->listen_fd;
		if ((rc = kvf_net_set_nonblock(s->lfd, 1)) != 0)
			goto err_free;
	} else if ((rc = kvf_net_listen_tcp(opts->listen, s->o.backlog, &s->lfd)) != 0) {
		goto err_free;
	}
	if (kvf_net_local_port(s->lfd, &s->port) != 0) {
		s->port = 0; /* a Unix socket */
		kvf_err_clear();
	}
	if ((rc = kvf_loop_add_fd(loop, s->lfd, KVF_EV_READ, on_accept, s)) != 0)
		goto err_close;
	KVF_INFO("http", "listening", "addr=\"%s\" port=%u", opts->listen ? opts->listen : "(fd)",
		 s->port);
	*out = s;
	return 0;

err_close:
	close(s->lfd);
err_free:
	kvf_free(s->server_name);
	kvf_free(s);
	return rc;
}

uint16_t kvf_http_server_port(const kvf_http_server *s)
{
	return s->port;
}

void kvf_http_server_stats_get(const kvf_http_server *s, kvf_http_server_stats *out)
{
	*out = s->st;
}

static void close_listener(kvf_http_server *s)
{
	kvf_loop_timer_stop(s->loop, &s->accept_timer);
	if (s->lfd >= 0) {
		kvf_loop_del_fd(s->loop, s->lfd);
		close(s->lfd);
		s->lfd = -1;
	}
}

void kvf_http_server_shutdown(kvf_http_server *s, kvf_http_server_cb done, void *ud)
{
	if (!s || s->stopping)
		return;
	s->stopping = 1;
	s->done = done;
	s->done_ud = ud;
	close_listener(s);
	for (struct conn *c = s->conns, *next; c; c = next) {
		next = c->next;
		if (c->dead)
			continue;
		kvf_http_req *f = q_front(c);
		if ((f && f->state == RS_ACTIVE) || kvf_buf_avail(&c->out)) {
			/* finish the answer being given, then close */
			conn_drop_queued(c);
			c->no_more = 1;
			c->close_after = 1;
			conn_kick(c);
		} else {
			conn_abort(c);
		}
	}
	check_done(s);
}

void kvf_http_server_destroy(kvf_http_server *s)
{
	if (!s)
		return;
	s->stopping = 1;
	close_listener(s);
	kvf_loop_timer_stop(s->loop, &s->done_timer);
	while (s->conns) {
		struct conn *c = s->conns;
		c->busy++;
		kvf_http_req *f = q_front(c);
		int notify = f && f->state == RS_ACTIVE && !f->close_notified;
		if (!c->dead) {
			c->dead = 1;
			if (f && f->state == RS_ACTIVE)
				f->closed = 1;
			conn_close_fd(c);
		}
		if (notify) {
			f->close_notified = 1;
			if (f->on_close)
				f->on_close(f, f->close_ud); /* may finish f: c is busy, kept */
		}
		while (c->q_len) {
			kvf_http_req *r = q_tail(c);
			c->q_len--;
			if (r->state == RS_ACTIVE)
				s->st.active_reqs--;
			slot_free(r);
		}
		kvf_loop_timer_stop(s->loop, &c->timer);
		kvf_buf_free(&c->in);
		kvf_buf_free(&c->out);
		conn_unlink(c);
		kvf_free(c);
	}
	while (s->pool) {
		kvf_http_req *r = s->pool;
		s->pool = r->next_free;
		slot_free(r);
	}
	kvf_buf_free(&s->scratch);
	kvf_free(s->server_name);
	kvf_free(s);
}

/* ---- request accessors ---- */

const kvf_http_msg *kvf_http_req_msg(const kvf_http_req *req)
{
	return &req->parser.msg;
}

int kvf_http_req_method(const kvf_http_req *req)
{
	return req->parser.msg.method;
}

kvf_http_str kvf_http_req_path(const kvf_http_req *req)
{
	return req->parser.msg.path;
}

kvf_http_str kvf_http_req_query(const kvf_http_req *req)
{
	return req->parser.msg.query;
}

int kvf_http_req_header(const kvf_http_req *req, const char *name, kvf_http_str *out)
{
	return kvf_http_msg_header(&req->parser.msg, name, out);
}

const char *kvf_http_req_body(const kvf_http_req *req, size_t *len)
{
	if (len)
		*len = req->body.len;
	return req->body.data ? req->body.data : "";
}

const char *kvf_http_req_peer(kvf_http_req *req)
{
	return conn_peer(req->c);
}

kvf_http_server *kvf_http_req_server(const kvf_http_req *req)
{
	return req->c->s;
}

int kvf_http_req_closed(const kvf_http_req *req)
{
	return req->closed;
}

void kvf_http_req_on_close(kvf_http_req *req, kvf_http_req_cb cb, void *ud)
{
	req->on_close = cb;
	req->close_ud = ud;
}

void kvf_http_req_on_drain(kvf_http_req *req, kvf_http_req_cb cb, void *ud)
{
	req->on_drain = cb;
	req->drain_ud = ud;
}

size_t kvf_http_req_pending(const kvf_http_req *req)
{
	return req->closed ? 0 : kvf_buf_avail(&req->c->out);
}

void kvf_http_req_set_close(kvf_http_req *req)
{
	req->want_close = 1;
	if (req->started)
		req->resp_close = 1;
}

/* ---- responding ---- */

static int is_active(const kvf_http_req *r)
{
	return r && r->state == RS_ACTIVE;
}

/* Pops the finished front request and moves the connection on. */
static void finish_req(kvf_http_req *r)
{
	struct conn *c = r->c;
	kvf_http_server *s = c->s;
	s->st.active_reqs--;
	if (!c->dead) {
		s->st.responses[r->status / 100 <= 5 ? r->status / 100 : 0]++;
		if (r->resp_close) {
			c->no_more = 1;
			c->close_after = 1;
		}
	}
	c->q_head = (c->q_head + 1) % s->o.max_pipeline;
	c->q_len--;
	slot_put(s, r);
	if (c->dead) {
		conn_maybe_free(c);
		return;
	}
	c->t_idle_ms = now_ms(s);
	conn_kick(c);
}

/* Extra headers must leave framing to the server. */
static int check_headers(const char *const *kv, const char *ctype)
{
	int rc = kvf_http_headers_valid(kv);
	if (rc)
		return rc;
	for (size_t i = 0; kv && kv[i]; i += 2) {
		kvf_http_str n = { kv[i], strlen(kv[i]) };
		if (kvf_http_str_ieq(n, "content-length") || kvf_http_str_ieq(n, "transfer-encoding") ||
		    kvf_http_str_ieq(n, "connection"))
			return kvf_errf(KVF_E_INVAL, "http: header '%s' is set by the server", kv[i]);
	}
	if (ctype && (strchr(ctype, '\r') || strchr(ctype, '\n')))
		return kvf_errf(KVF_E_INVAL, "http: CR or LF in content type");
	return 0;
}

static void write_head(kvf_http_req *r, int status, const char *ctype, const char *const *headers,
		       int framing, uint64_t cl)
{
	struct conn *c = r->c;
	kvf_http_server *s = c->s;
	kvf_buf *o = &c->out;
	const kvf_http_msg *m = &r->parser.msg;
	int ka = m->keep_alive && !r->want_close && !s->stopping && !c->err_status &&
		 framing != FR_CLOSE;
	int no_body_status = status == 204 || status == 304;
	r->resp_close = !ka;
	r->status = status;
	r->framing = framing;
	r->head_only = m->method == KVF_HTTP_HEAD || no_body_status;
	r->started = 1;
	kvf_http_write_status_line(o, status, NULL);
	kvf_buf_printf(o, "Date: %s\r\n", http_date(s));
	if (s->server_name)
		kvf_http_write_header(o, "Server", s->server_name);
	if (ctype)
		kvf_http_write_header(o, "Content-Type", ctype);
	if (!no_body_status) {
		if (framing == FR_LENGTH)
			kvf_buf_printf(o, "Content-Length: %llu\r\n", (unsigned long long)cl);
		else if (framing == FR_CHUNKED)
			kvf_buf_puts(o, "Transfer-Encoding: chunked\r\n");
	}
	if (!ka)
		kvf_buf_puts(o, "Connection: close\r\n");
	else if (m->version == 10)
		kvf_buf_puts(o, "Connection: keep-alive\r\n");
	kvf_http_write_headers(o, headers);
	kvf_buf_puts(o, "\r\n");
}

static const char bad_response_body[] =
	"{\"error\":{\"message\":\"the server produced an invalid response\","
	"\"type\":\"server_error\",\"param\":null,\"code\":null}}";

int kvf_http_respond(kvf_http_req *r, int status, const char *content_type,
		     const char *const *headers, const void *body, size_t len)
{
	if (!is_active(r))
		return kvf_errf(KVF_E_STATE, "http: respond on a finished request");
	struct conn *c = r->c;
	if (r->closed) {
		finish_req(r);
		return kvf_errf(KVF_E_CLOSED, "http: client went away");
	}
	if (r->started) {
		/* Framing cannot be repaired: close so the client sees the cut. */
		r->resp_close = 1;
		finish_req(r);
		return kvf_errf(KVF_E_STATE, "http: respond after begin");
	}
	int rc = 0;
	if (status < 200 || status > 999)
		rc = kvf_errf(KVF_E_INVAL, "http: response status %d", status);
	else
		rc = check_headers(headers, content_type);
	if (rc) {
		KVF_LOG_RL(KVF_LOG_WARN, 5, 1000, "http", "invalid response", "status=%d err=\"%s\"",
			   status, kvf_errmsg());
		status = 500;
		content_type = "application/json";
		headers = NULL;
		body = bad_response_body;
		len = sizeof(bad_response_body) - 1;
	}
	write_head(r, status, content_type, headers, FR_LENGTH, len);
	if (!r->head_only)
		kvf_buf_append(&c->out, body, len);
	finish_req(r);
	if (!rc && c->dead)
		rc = kvf_errf(KVF_E_CLOSED, "http: client went away");
	return rc;
}

int kvf_http_respond_error(kvf_http_req *r, int status, const char *message)
{
	if (!is_active(r))
		return kvf_errf(KVF_E_STATE, "http: respond on a finished request");
	char small[512];
	kvf_buf b = KVF_BUF_INIT;
	kvf_http_write_json_error(&b, message, kvf_http_error_type(status), NULL);
	int rc;
	if (b.oom) {
		rc = kvf_http_respond(r, status, "application/json", NULL, "{}", 2);
	} else if (b.len < sizeof(small)) {
		memcpy(small, b.data, b.len);
		size_t n = b.len;
		kvf_buf_free(&b);
		return kvf_http_respond(r, status, "application/json", NULL, small, n);
	} else {
		rc = kvf_http_respond(r, status, "application/json", NULL, b.data, b.len);
	}
	kvf_buf_free(&b);
	return rc;
}

int kvf_http_begin(kvf_http_req *r, int status, const char *content_type,
		   const char *const *headers, int64_t content_length)
{
	if (!is_active(r) || r->started)
		return kvf_errf(KVF_E_STATE, "http: begin on a finished or begun request");
	if (r->closed)
		return kvf_errf(KVF_E_CLOSED, "http: client went away");
	if (status < 200 || status > 999)
		return kvf_errf(KVF_E_INVAL, "http: response status %d", status);
	int rc = check_headers(headers, content_type);
	if (rc)
		return rc;
	int fr = content_length >= 0 ? FR_LENGTH
		 : r->parser.msg.version >= 11 ? FR_CHUNKED : FR_CLOSE;
	write_head(r, status, content_type, headers, fr,
		   content_length >= 0 ? (uint64_t)content_length : 0);
	r->cl_left = content_length >= 0 && !r->head_only ? (uint64_t)content_length : 0;
	conn_kick(r->c);
	return r->closed ? kvf_errf(KVF_E_CLOSED, "http: client went away") : 0;
}

int kvf_http_begin_sse(kvf_http_req *r, const char *const *headers)
{
	const char *base[] = { "Cache-Control", "no-cache", NULL };
	if (!headers)
		return kvf_http_begin(r, 200, "text/event-stream", base, -1);
	/* Cache-Control first, then the caller's headers. */
	size_t n = 0;
	while (headers[n])
		n += 2;
	if (n > 64)
		return kvf_errf(KVF_E_INVAL, "http: too many extra headers");
	const char *all[2 + 64 + 1];
	all[0] = "Cache-Control";
	all[1] = "no-cache";
	memcpy(all + 2, headers, n * sizeof(*all));
	all[2 + n] = NULL;
	return kvf_http_begin(r, 200, "text/event-stream", all, -1);
}

static int stream_check(const kvf_http_req *r)
{
	if (!is_active(r) || !r->started)
		return kvf_errf(KVF_E_STATE, "http: send before begin or after end");
	if (r->closed)
		return kvf_errf(KVF_E_CLOSED, "http: client went away");
	return 0;
}

static int stream_done(kvf_http_req *r)
{
	struct conn *c = r->c;
	if (c->out.oom) {
		conn_abort(c);
		return kvf_errf(KVF_E_NOMEM, "http: output buffer");
	}
	conn_kick(c);
	return r->closed ? kvf_errf(KVF_E_CLOSED, "http: client went away") : 0;
}

int kvf_http_send(kvf_http_req *r, const void *data, size_t len)
{
	int rc = stream_check(r);
	if (rc)
		return rc;
	if (r->head_only || len == 0)
		return 0;
	kvf_buf *o = &r->c->out;
	if (r->framing == FR_LENGTH) {
		if (len > r->cl_left)
			return kvf_errf(KVF_E_RANGE, "http: %zu bytes beyond Content-Length", len);
		r->cl_left -= len;
		kvf_buf_append(o, data, len);
	} else if (r->framing == FR_CHUNKED) {
		kvf_http_write_chunk(o, data, len);
	} else {
		kvf_buf_append(o, data, len);
	}
	return stream_done(r);
}

int kvf_http_send_sse(kvf_http_req *r, const char *event, const char *id, const char *data,
		      size_t len)
{
	int rc = stream_check(r);
	if (rc)
		return rc;
	kvf_buf *o = &r->c->out;
	size_t before = o->len - o->off;
	if (r->head_only) {
		kvf_buf *scratch = &r->c->s->scratch;
		kvf_buf_reset(scratch);
		return kvf_http_write_sse(scratch, event, id, data, len); /* validation only */
	}
	if (r->framing == FR_CHUNKED) {
		rc = kvf_http_write_sse_chunk(o, event, id, data, len);
	} else {
		if (r->framing == FR_LENGTH && kvf_http_sse_size(event, id, data, len) > r->cl_left)
			return kvf_errf(KVF_E_RANGE, "http: event beyond Content-Length");
		rc = kvf_http_write_sse(o, event, id, data, len);
		if (!rc && r->framing == FR_LENGTH)
			r->cl_left -= (o->len - o->off) - before;
	}
	if (rc == KVF_E_INVAL)
		return rc;
	return stream_done(r);
}

int kvf_http_send_sse_comment(kvf_http_req *r, const char *text)
{
	int rc = stream_check(r);
	if (rc)
		return rc;
	kvf_buf *scratch = &r->c->s->scratch;
	kvf_buf_reset(scratch);
	if ((rc = kvf_http_write_sse_comment(scratch, text)) != 0)
		return rc;
	return kvf_http_send(r, scratch->data, scratch->len);
}

int kvf_http_end(kvf_http_req *r)
{
	if (!is_active(r))
		return kvf_errf(KVF_E_STATE, "http: end on a finished request");
	if (r->closed) {
		finish_req(r);
		return kvf_errf(KVF_E_CLOSED, "http: client went away");
	}
	if (!r->started) {
		kvf_http_respond_error(r, 500, "the response ended before it began");
		return kvf_errf(KVF_E_STATE, "http: end before begin");
	}
	int rc = 0;
	if (!r->head_only) {
		if (r->framing == FR_CHUNKED) {
			kvf_http_write_last_chunk(&r->c->out);
		} else if (r->framing == FR_LENGTH && r->cl_left) {
			r->resp_close = 1;
			rc = kvf_errf(KVF_E_RANGE, "http: body %llu bytes short of Content-Length",
				      (unsigned long long)r->cl_left);
		}
	}
	finish_req(r);
	return rc;
}
