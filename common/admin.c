/*
 * admin.c: the admin socket server and command dispatch.
 *
 * Commands are matched by their longest word prefix over every registered
 * table, so "show stats json" finds {"show","stats"} with argv {"json"}.
 * Replies are assembled in a buffer, cleaned so they contain no empty line
 * (the empty line ends a reply), and written with EPOLLOUT back-pressure.
 */
#include "common/kvf_admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"

#define KVF_ADMIN_MAX_ARGS 32
#define KVF_ADMIN_MAX_CLIENTS 64
#define KVF_ADMIN_MAX_OUT (64u << 20) /* a client that stops reading is dropped */

struct table {
	const kvf_admin_cmd *cmds;
	size_t n;
	void *ud;
};

struct kvf_admin_out {
	kvf_buf buf;
	int json;
	int failed;
};

struct client {
	struct client *next;
	kvf_admin *admin;
	int fd;
	kvf_buf in;
	kvf_buf out;
	int discarding; /* inside an over-long line: drop until newline */
	int closing;    /* close once out is flushed */
};

struct kvf_admin {
	kvf_loop *loop;
	int fd;
	char *path;
	struct table *tables;
	size_t ntables, cap;
	struct client *clients;
	size_t nclients;
};

static int cmd_help(kvf_admin_out *out, int argc, char **argv, void *ud);
static int cmd_set_loglevel(kvf_admin_out *out, int argc, char **argv, void *ud);

static const kvf_admin_cmd builtin_cmds[] = {
	{ { "help" }, "help", "list the commands", cmd_help },
	{ { "quit" }, "quit", "close this connection", NULL },
	{ { "set", "loglevel" }, "set loglevel error|warn|info|debug|trace", "change the log level", cmd_set_loglevel },
};

/* ---- output ---- */

int kvf_admin_printf(kvf_admin_out *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int rc = kvf_buf_vprintf(&out->buf, fmt, ap);
	va_end(ap);
	return rc;
}

kvf_buf *kvf_admin_buf(kvf_admin_out *out)
{
	return &out->buf;
}

int kvf_admin_want_json(const kvf_admin_out *out)
{
	return out->json;
}

int kvf_admin_error(kvf_admin_out *out, const char *fmt, ...)
{
	kvf_buf_reset(&out->buf);
	kvf_buf_puts(&out->buf, "error: ");
	va_list ap;
	va_start(ap, fmt);
	kvf_buf_vprintf(&out->buf, fmt, ap);
	va_end(ap);
	out->failed = 1;
	return KVF_E_INVAL;
}

/* ---- dispatch ---- */

/* Splits line into words; "double quoted" words may hold spaces. */
static int tokenize(char *line, char **argv, int max)
{
	int argc = 0;
	char *p = line;
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			return argc;
		if (argc == max)
			return -1;
		if (*p == '"') {
			char *end = strchr(p + 1, '"');
			if (!end)
				return -2;
			*end = '\0';
			argv[argc++] = p + 1;
			p = end + 1;
			continue;
		}
		argv[argc++] = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		if (*p)
			*p++ = '\0';
	}
}

static size_t nwords(const kvf_admin_cmd *c)
{
	size_t n = 0;
	while (n < KVF_ADMIN_MAX_WORDS && c->words[n])
		n++;
	return n;
}

static const kvf_admin_cmd *lookup(kvf_admin *a, int argc, char **argv, void **ud, size_t *used)
{
	const kvf_admin_cmd *best = NULL;
	size_t best_n = 0;
	for (size_t t = 0; t < a->ntables; t++) {
		for (size_t i = 0; i < a->tables[t].n; i++) {
			const kvf_admin_cmd *c = &a->tables[t].cmds[i];
			size_t n = nwords(c);
			if (n == 0 || n > (size_t)argc || n <= best_n)
				continue;
			size_t k = 0;
			while (k < n && strcmp(c->words[k], argv[k]) == 0)
				k++;
			if (k == n) {
				best = c;
				best_n = n;
				*ud = a->tables[t].ud;
			}
		}
	}
	*used = best_n;
	return best;
}

/* Runs one command (no ';'); returns 1 for quit. */
static int run_one(kvf_admin *a, char *line, kvf_admin_out *out, int *rc_out)
{
	char *argv[KVF_ADMIN_MAX_ARGS];
	int argc = tokenize(line, argv, KVF_ADMIN_MAX_ARGS);
	*rc_out = 0;
	if (argc == -1) {
		*rc_out = kvf_admin_error(out, "too many arguments (at most %d)", KVF_ADMIN_MAX_ARGS);
		return 0;
	}
	if (argc == -2) {
		*rc_out = kvf_admin_error(out, "unterminated quote");
		return 0;
	}
	if (argc == 0)
		return 0;
	void *ud = NULL;
	size_t used;
	const kvf_admin_cmd *c = lookup(a, argc, argv, &ud, &used);
	if (!c) {
		*rc_out = kvf_admin_error(out, "unknown command '%s'; try 'help'", argv[0]);
		return 0;
	}
	if (!c->fn)
		return 1; /* quit */
	int rest = argc - (int)used;
	char **rargv = argv + used;
	out->json = 0;
	if (rest > 0 && strcmp(rargv[rest - 1], "json") == 0) {
		out->json = 1;
		rest--;
	}
	int rc = c->fn(out, rest, rargv, ud);
	if (rc && !out->failed)
		kvf_admin_error(out, "%s", kvf_errmsg());
	*rc_out = rc;
	return 0;
}

/* Removes empty lines (they would end the reply early) and ensures the
 * reply ends with exactly one newline (or is empty). */
static void clean_reply(kvf_buf *b)
{
	size_t w = 0;
	for (size_t r = 0; r < b->len; r++) {
		if (b->data[r] == '\n' && (w == 0 || b->data[w - 1] == '\n'))
			continue;
		b->data[w++] = b->data[r];
	}
	if (w && b->data[w - 1] != '\n') {
		b->len = w;
		kvf_buf_putc(b, '\n');
		return;
	}
	b->len = w;
	if (b->data)
		b->data[w] = '\0';
}

/* Runs a whole line (';'-separated commands); appends replies to reply.
 * Returns 1 when the client asked to quit. */
static int run_line(kvf_admin *a, char *line, kvf_buf *reply, int *rc_out)
{
	int quit = 0;
	*rc_out = 0;
	char *save = NULL;
	for (char *cmd = strtok_r(line, ";", &save); cmd && !quit; cmd = strtok_r(NULL, ";", &save)) {
		kvf_admin_out out = { KVF_BUF_INIT, 0, 0 };
		int rc;
		quit = run_one(a, cmd, &out, &rc);
		if (rc)
			*rc_out = rc;
		clean_reply(&out.buf);
		if (out.buf.len)
			kvf_buf_append(reply, out.buf.data, out.buf.len);
		kvf_buf_free(&out.buf);
	}
	return quit;
}

int kvf_admin_exec(kvf_admin *a, const char *line, kvf_buf *out)
{
	char *copy = kvf_strdup(line);
	if (!copy)
		return kvf_errf(KVF_E_NOMEM, "admin: out of memory");
	int rc;
	run_line(a, copy, out, &rc);
	kvf_free(copy);
	return rc;
}

static int cmd_help(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_admin *a = ud;
	for (size_t t = 0; t < a->ntables; t++)
		for (size_t i = 0; i < a->tables[t].n; i++)
			kvf_admin_printf(out, "  %-44s %s\n", a->tables[t].cmds[i].usage, a->tables[t].cmds[i].help);
	return 0;
}

static int cmd_set_loglevel(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	int level;
	if (argc != 1)
		return kvf_admin_error(out, "usage: set loglevel error|warn|info|debug|trace");
	if (kvf_log_level_parse(argv[0], &level))
		return kvf_admin_error(out, "%s", kvf_errmsg());
	kvf_log_set_level(level);
	kvf_admin_printf(out, "loglevel %s\n", kvf_log_level_name(level));
	return 0;
}

/* ---- connections ---- */

static void client_close(struct client *c)
{
	kvf_admin *a = c->admin;
	for (struct client **pp = &a->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	a->nclients--;
	kvf_loop_del_fd(a->loop, c->fd);
	close(c->fd);
	kvf_buf_free(&c->in);
	kvf_buf_free(&c->out);
	kvf_free(c);
}

/* Writes what it can; returns -1 when the client was closed. */
static int client_flush(struct client *c)
{
	while (kvf_buf_avail(&c->out)) {
		ssize_t n = send(c->fd, kvf_buf_head(&c->out), kvf_buf_avail(&c->out), MSG_NOSIGNAL);
		if (n > 0) {
			kvf_buf_consume(&c->out, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			break;
		client_close(c);
		return -1;
	}
	if (!kvf_buf_avail(&c->out) && c->closing) {
		client_close(c);
		return -1;
	}
	kvf_loop_mod_fd(c->admin->loop, c->fd, KVF_EV_READ | (kvf_buf_avail(&c->out) ? KVF_EV_WRITE : 0));
	return 0;
}

static void client_process(struct client *c)
{
	for (;;) {
		char *head = kvf_buf_head(&c->in);
		size_t avail = kvf_buf_avail(&c->in);
		char *nl = memchr(head, '\n', avail);
		if (!nl) {
			if (avail > KVF_ADMIN_LINE_MAX) {
				/* Over-long line: answer once, skip the rest of it. */
				if (!c->discarding)
					kvf_buf_printf(&c->out, "error: line longer than %d bytes\n\n", KVF_ADMIN_LINE_MAX);
				c->discarding = 1;
				kvf_buf_consume(&c->in, avail);
			}
			return;
		}
		*nl = '\0';
		size_t linelen = (size_t)(nl - head) + 1; /* bytes to consume */
		size_t len = linelen - 1;
		if (len && head[len - 1] == '\r')
			head[--len] = '\0';
		if (c->discarding || len > KVF_ADMIN_LINE_MAX) {
			if (!c->discarding)
				kvf_buf_printf(&c->out, "error: line longer than %d bytes\n\n", KVF_ADMIN_LINE_MAX);
			c->discarding = 0;
			kvf_buf_consume(&c->in, linelen);
			continue;
		}
		int rc;
		int quit = run_line(c->admin, head, &c->out, &rc);
		kvf_buf_consume(&c->in, linelen);
		if (quit) {
			c->closing = 1;
			return;
		}
		kvf_buf_putc(&c->out, '\n'); /* the empty line ends the reply */
		if (c->out.len > KVF_ADMIN_MAX_OUT) {
			c->closing = 1;
			return;
		}
	}
}

static void on_client(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	struct client *c = ud;
	if (ev & KVF_EV_READ) {
		char *p = kvf_buf_space(&c->in, 4096);
		if (!p) {
			client_close(c);
			return;
		}
		ssize_t n = recv(fd, p, 4096, 0);
		if (n > 0) {
			kvf_buf_commit(&c->in, (size_t)n);
			client_process(c);
		} else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
			/* Peer finished sending: run a last unterminated line, answer,
			 * then close. */
			if (n == 0 && kvf_buf_avail(&c->in) && !c->closing) {
				kvf_buf_putc(&c->in, '\n');
				client_process(c);
			}
			c->closing = 1;
		}
	}
	client_flush(c);
}

static void on_accept(kvf_loop *loop, int fd, unsigned ev, void *ud)
{
	kvf_admin *a = ud;
	for (;;) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0)
			return;
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
		    (cred.uid != 0 && cred.uid != geteuid())) {
			static const char msg[] = "error: permission denied\n\n";
			ssize_t w = send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
			(void)w;
			KVF_LOG_RL(KVF_LOG_WARN, 5, 60000, "admin", "peer refused", "uid=%u", (unsigned)cred.uid);
			close(cfd);
			continue;
		}
		if (a->nclients >= KVF_ADMIN_MAX_CLIENTS) {
			static const char msg[] = "error: too many admin connections\n\n";
			ssize_t w = send(cfd, msg, sizeof(msg) - 1, MSG_NOSIGNAL);
			(void)w;
			close(cfd);
			continue;
		}
		struct client *c = kvf_calloc(1, sizeof(*c));
		if (!c) {
			close(cfd);
			continue;
		}
		c->admin = a;
		c->fd = cfd;
		if (kvf_loop_add_fd(loop, cfd, KVF_EV_READ, on_client, c) != 0) {
			close(cfd);
			kvf_free(c);
			continue;
		}
		c->next = a->clients;
		a->clients = c;
		a->nclients++;
	}
}

/* ---- lifecycle ---- */

int kvf_admin_register(kvf_admin *a, const kvf_admin_cmd *cmds, size_t n, void *ud)
{
	if (kvf_grow((void **)&a->tables, &a->cap, a->ntables + 1, sizeof(*a->tables)))
		return kvf_errf(KVF_E_NOMEM, "admin: out of memory");
	a->tables[a->ntables++] = (struct table){ cmds, n, ud };
	return 0;
}

int kvf_admin_new(kvf_loop *loop, const char *path, kvf_admin **out)
{
	kvf_admin *a = kvf_calloc(1, sizeof(*a));
	if (!a)
		return kvf_errf(KVF_E_NOMEM, "admin: out of memory");
	a->loop = loop;
	a->fd = -1;
	int rc;
	if (!(a->path = kvf_strdup(path))) {
		rc = kvf_errf(KVF_E_NOMEM, "admin: out of memory");
		goto err_free;
	}
	if ((rc = kvf_admin_register(a, builtin_cmds, sizeof(builtin_cmds) / sizeof(builtin_cmds[0]), a)))
		goto err_free;
	if ((rc = kvf_net_listen_unix(path, 0600, 16, &a->fd)))
		goto err_free;
	if ((rc = kvf_loop_add_fd(loop, a->fd, KVF_EV_READ, on_accept, a)))
		goto err_close;
	*out = a;
	return 0;

err_close:
	close(a->fd);
	unlink(path);
err_free:
	kvf_free(a->tables);
	kvf_free(a->path);
	kvf_free(a);
	return rc;
}

void kvf_admin_destroy(kvf_admin *a)
{
	if (!a)
		return;
	while (a->clients)
		client_close(a->clients);
	kvf_loop_del_fd(a->loop, a->fd);
	close(a->fd);
	unlink(a->path);
	kvf_free(a->path);
	kvf_free(a->tables);
	kvf_free(a);
}

size_t kvf_admin_clients(const kvf_admin *a)
{
	return a->nclients;
}
