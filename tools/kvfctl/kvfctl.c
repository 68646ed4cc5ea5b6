/*
 * kvfctl: command-line client for a daemon's admin socket.
 *
 *   kvfctl -s /run/kvfabric/gateway.sock show stats
 *   kvfctl -s SOCK 'show routes json'
 *   kvfctl -s SOCK            (interactive when stdin is a terminal,
 *                              otherwise one command per stdin line)
 *
 * Sends each command as one line and prints the reply up to the empty line
 * that ends it. Exit status: 0 when every reply succeeded, 1 when a reply was
 * an "error: ..." line, 2 for usage or connection problems.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/kvf_buf.h"
#include "common/kvf_err.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"
#include "common/kvf_version.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: kvfctl -s SOCKET [-t SECONDS] [COMMAND...]\n"
		   "  -s, --socket PATH   the daemon's admin socket (or KVF_ADMIN_SOCKET)\n"
		   "  -t, --timeout SEC   give up on a reply after SEC seconds (default 10)\n"
		   "  COMMAND             e.g. 'show stats', 'show stats json', 'help';\n"
		   "                      without one, commands are read from stdin\n");
}

/* Sends one command and prints its reply. Returns 0, 1 (error reply) or 2. */
static int run_command(int fd, const char *cmd, int timeout_ms, kvf_buf *in)
{
	size_t len = strlen(cmd);
	if (send(fd, cmd, len, MSG_NOSIGNAL) != (ssize_t)len || send(fd, "\n", 1, MSG_NOSIGNAL) != 1) {
		fprintf(stderr, "kvfctl: send: %s\n", strerror(errno));
		return 2;
	}
	uint64_t deadline = kvf_now_ms() + (uint64_t)timeout_ms;
	for (;;) {
		/* A reply is complete at the first empty line. */
		char *start = kvf_buf_head(in);
		size_t avail = kvf_buf_avail(in);
		char *end = NULL;
		if (avail >= 1 && start[0] == '\n')
			end = start;
		else
			for (size_t i = 1; i < avail; i++)
				if (start[i] == '\n' && start[i - 1] == '\n') {
					end = start + i;
					break;
				}
		if (end) {
			size_t n = (size_t)(end - start);
			fwrite(start, 1, n, stdout);
			int failed = n >= 6 && strncmp(start, "error:", 6) == 0;
			kvf_buf_consume(in, n + 1);
			fflush(stdout);
			return failed ? 1 : 0;
		}
		int64_t left = (int64_t)deadline - (int64_t)kvf_now_ms();
		if (left <= 0) {
			fprintf(stderr, "kvfctl: no reply within %d ms\n", timeout_ms);
			return 2;
		}
		struct pollfd p = { fd, POLLIN, 0 };
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		char *space = kvf_buf_space(in, 65536);
		if (!space) {
			fprintf(stderr, "kvfctl: out of memory\n");
			return 2;
		}
		ssize_t r = recv(fd, space, 65536, 0);
		if (r <= 0) {
			/* print what came before the close (the buffer may have moved) */
			if (kvf_buf_avail(in))
				fwrite(kvf_buf_head(in), 1, kvf_buf_avail(in), stdout);
			if (strcmp(cmd, "quit") == 0)
				return 0;
			fprintf(stderr, "kvfctl: connection closed by the daemon\n");
			return 2;
		}
		kvf_buf_commit(in, (size_t)r);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = getenv("KVF_ADMIN_SOCKET");
	int timeout_ms = 10000, c;
	while ((c = getopt_long(argc, argv, "+s:t:h", opts, NULL)) != -1) {
		switch (c) {
		case 's': sock = optarg; break;
		case 't': timeout_ms = (int)(atof(optarg) * 1000); break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("kvfctl %s\n", KVF_VERSION); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!sock) {
		usage(stderr);
		return 2;
	}
	if (timeout_ms <= 0)
		timeout_ms = 10000;
	int fd;
	if (kvf_net_connect_unix(sock, &fd)) {
		fprintf(stderr, "kvfctl: %s\n", kvf_errmsg());
		return 2;
	}
	kvf_buf in = KVF_BUF_INIT;
	int rc = 0;
	if (optind < argc) {
		/* The words form one command line. */
		kvf_buf cmd = KVF_BUF_INIT;
		for (int i = optind; i < argc; i++) {
			if (i > optind)
				kvf_buf_putc(&cmd, ' ');
			int quote = strchr(argv[i], ' ') != NULL && argc - optind > 1;
			if (quote)
				kvf_buf_putc(&cmd, '"');
			kvf_buf_puts(&cmd, argv[i]);
			if (quote)
				kvf_buf_putc(&cmd, '"');
		}
		rc = run_command(fd, cmd.data, timeout_ms, &in);
		kvf_buf_free(&cmd);
	} else {
		int tty = isatty(STDIN_FILENO);
		char *line = NULL;
		size_t cap = 0;
		for (;;) {
			if (tty) {
				fputs("kvf> ", stdout);
				fflush(stdout);
			}
			ssize_t n = getline(&line, &cap, stdin);
			if (n < 0)
				break;
			while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
				line[--n] = '\0';
			if (n == 0)
				continue;
			int r = run_command(fd, line, timeout_ms, &in);
			if (r > rc)
				rc = r;
			if (r == 2 || strcmp(line, "quit") == 0)
				break;
		}
		free(line);
	}
	kvf_buf_free(&in);
	close(fd);
	return rc;
}
