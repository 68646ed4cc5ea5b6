/* Unit tests for common/admin.c over a real Unix socket. */
#include "common/kvf_admin.h"
#include "common/kvf_err.h"
#include "common/kvf_log.h"
#include "common/kvf_net.h"
#include "common/kvf_time.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

static int cmd_echo(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	(*(int *)ud)++;
	if (kvf_admin_want_json(out)) {
		kvf_admin_printf(out, "{\"argc\":%d}\n", argc);
		return 0;
	}
	for (int i = 0; i < argc; i++)
		kvf_admin_printf(out, "arg%d=%s\n", i, argv[i]);
	kvf_admin_printf(out, "\n\n"); /* empty lines must not end the reply early */
	kvf_admin_printf(out, "done");  /* no trailing newline: the server adds it */
	return 0;
}

static int cmd_fail(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	kvf_admin_printf(out, "partial output\n");
	return kvf_errf(KVF_E_NOTFOUND, "no such worker '%s'", argc ? argv[0] : "");
}

static int cmd_big(kvf_admin_out *out, int argc, char **argv, void *ud)
{
	for (int i = 0; i < 100000; i++)
		kvf_admin_printf(out, "line %06d xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n", i);
	return 0;
}

static const kvf_admin_cmd test_cmds[] = {
	{ { "show", "echo" }, "show echo [ARGS...] [json]", "print the arguments", cmd_echo },
	{ { "show", "fail" }, "show fail NAME", "always fails", cmd_fail },
	{ { "show", "big" }, "show big", "a large reply", cmd_big },
};

struct fx {
	kvf_loop *loop;
	kvf_admin *admin;
	char path[64];
	int calls;
};

static void fx_init(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->path, sizeof(f->path), "/tmp/kvf-admin-test-%d.sock", (int)getpid());
	assert_int_equal(kvf_loop_new(&f->loop), 0);
	assert_int_equal(kvf_admin_new(f->loop, f->path, &f->admin), 0);
	assert_int_equal(kvf_admin_register(f->admin, test_cmds, 3, &f->calls), 0);
}

static void fx_fini(struct fx *f)
{
	kvf_admin_destroy(f->admin);
	kvf_admin_destroy(NULL);
	kvf_loop_destroy(f->loop);
	assert_int_equal(access(f->path, F_OK), -1); /* socket file removed */
}

static int connect_client(struct fx *f)
{
	int fd;
	assert_int_equal(kvf_net_connect_unix(f->path, &fd), 0);
	kvf_net_set_nonblock(fd, 1);
	return fd;
}

/* Sends req and drives the loop until a full reply (ending "\n\n") or EOF.
 * Returns the reply without its final empty line, or NULL on EOF. */
static char *roundtrip(struct fx *f, int fd, const char *req, char *buf, size_t cap)
{
	if (req)
		assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
	size_t len = 0;
	uint64_t start = kvf_now_ms();
	while (kvf_now_ms() - start < 5000) {
		kvf_loop_run_once(f->loop, 5);
		ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n == 0)
			return len ? buf : NULL;
		if (n > 0) {
			len += (size_t)n;
			buf[len] = 0;
			if ((len == 1 && buf[0] == '\n') || (len >= 2 && strcmp(buf + len - 2, "\n\n") == 0)) {
				buf[len - 1] = 0;
				return buf;
			}
		}
	}
	fail_msg("no reply to %s", req ? req : "(nothing)");
	return NULL;
}

static void test_commands(void **state)
{
	struct fx f;
	fx_init(&f);
	struct stat st;
	assert_int_equal(stat(f.path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);

	int fd = connect_client(&f);
	char buf[8192];
	char *r = roundtrip(&f, fd, "help\n", buf, sizeof(buf));
	assert_non_null(strstr(r, "show echo [ARGS...] [json]"));
	assert_non_null(strstr(r, "set loglevel"));

	r = roundtrip(&f, fd, "show echo a \"b c\"\n", buf, sizeof(buf));
	assert_string_equal(r, "arg0=a\narg1=b c\ndone\n");
	assert_int_equal(f.calls, 1);

	r = roundtrip(&f, fd, "show echo x y json\r\n", buf, sizeof(buf));
	assert_string_equal(r, "{\"argc\":2}\n");

	/* errors: one line, connection still usable */
	r = roundtrip(&f, fd, "frobnicate now\n", buf, sizeof(buf));
	assert_string_equal(r, "error: unknown command 'frobnicate'; try 'help'\n");
	r = roundtrip(&f, fd, "show fail w7\n", buf, sizeof(buf));
	assert_string_equal(r, "error: no such worker 'w7'\n");
	r = roundtrip(&f, fd, "show echo \"open\n", buf, sizeof(buf));
	assert_string_equal(r, "error: unterminated quote\n");
	r = roundtrip(&f, fd, "set loglevel shouty\n", buf, sizeof(buf));
	assert_non_null(strstr(r, "error: unknown log level"));
	r = roundtrip(&f, fd, "set loglevel debug\n", buf, sizeof(buf));
	assert_string_equal(r, "loglevel debug\n");
	assert_int_equal(kvf_log_level_cur, KVF_LOG_DEBUG);
	kvf_log_set_level(KVF_LOG_INFO);

	/* an empty line answers an empty reply */
	r = roundtrip(&f, fd, "\n", buf, sizeof(buf));
	assert_string_equal(r, "");

	/* several commands on a line */
	r = roundtrip(&f, fd, "show echo 1 json; show echo 2 json\n", buf, sizeof(buf));
	assert_string_equal(r, "{\"argc\":1}\n{\"argc\":1}\n");

	/* an over-long line is refused once and the next command works */
	static char longline[KVF_ADMIN_LINE_MAX * 3];
	memset(longline, 'x', sizeof(longline) - 2);
	longline[sizeof(longline) - 2] = '\n';
	longline[sizeof(longline) - 1] = 0;
	r = roundtrip(&f, fd, longline, buf, sizeof(buf));
	assert_non_null(strstr(r, "error: line longer than"));
	r = roundtrip(&f, fd, "show echo ok json\n", buf, sizeof(buf));
	assert_string_equal(r, "{\"argc\":1}\n");

	assert_int_equal(kvf_admin_clients(f.admin), 1);
	r = roundtrip(&f, fd, "quit\n", buf, sizeof(buf));
	assert_null(r);
	kvf_loop_run_once(f.loop, 0);
	assert_int_equal(kvf_admin_clients(f.admin), 0);
	close(fd);
	fx_fini(&f);
}

/* A client that half-closes after an unterminated command (socat style). */
static void test_eof_and_big(void **state)
{
	struct fx f;
	fx_init(&f);
	int fd = connect_client(&f);
	assert_int_equal(send(fd, "show echo last json", 19, 0), 19);
	shutdown(fd, SHUT_WR);
	char buf[256];
	char *r = roundtrip(&f, fd, NULL, buf, sizeof(buf));
	assert_non_null(r);
	assert_string_equal(r, "{\"argc\":1}\n");
	close(fd);

	/* a 6 MB reply arrives whole through back-pressure */
	fd = connect_client(&f);
	static char big[8 << 20];
	assert_int_equal(send(fd, "show big\n", 9, 0), 9);
	size_t len = 0;
	uint64_t start = kvf_now_ms();
	while (kvf_now_ms() - start < 10000) {
		kvf_loop_run_once(f.loop, 1);
		ssize_t n = recv(fd, big + len, sizeof(big) - 1 - len, 0);
		if (n > 0)
			len += (size_t)n;
		if (len >= 2 && big[len - 1] == '\n' && big[len - 2] == '\n')
			break;
	}
	big[len] = 0;
	assert_int_equal(len, 100000 * 61 + 1);
	assert_non_null(strstr(big, "line 099999 "));
	close(fd);
	fx_fini(&f);
}

static void test_exec_and_peer(void **state)
{
	struct fx f;
	fx_init(&f);
	kvf_buf out = KVF_BUF_INIT;
	assert_int_equal(kvf_admin_exec(f.admin, "show echo q json", &out), 0);
	assert_string_equal(out.data, "{\"argc\":1}\n");
	kvf_buf_reset(&out);
	assert_int_equal(kvf_admin_exec(f.admin, "show fail", &out), KVF_E_NOTFOUND);
	kvf_buf_free(&out);

	/* Another user cannot use the socket (only testable as root). */
	if (geteuid() == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			if (setuid(65534) != 0)
				_exit(3);
			int fd;
			int rc = kvf_net_connect_unix(f.path, &fd);
			_exit(rc == KVF_E_ACCESS ? 0 : 1);
		}
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	fx_fini(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_eof_and_big),
		cmocka_unit_test(test_exec_and_peer),
	};
	return cmocka_run_group_tests_name("admin", tests, NULL, NULL);
}
