/*
 * kvf_admin.h: the admin socket every daemon serves (HAProxy's CLI in spirit).
 *
 * A Unix stream socket, mode 0600, whose peers must run as the daemon's
 * user or root (SO_PEERCRED). The protocol is lines: the client sends one
 * command per line (several may be joined with ';'); the daemon answers with
 * zero or more non-empty lines followed by one empty line. A failed command
 * answers a single line "error: <message>". The connection stays open for the
 * next command until the client sends "quit" or closes its side; so both
 * `kvfctl -s SOCK show stats` and `echo 'show stats' | socat - UNIX:SOCK` work.
 *
 * Modules register keyword tables: the words that select a command, its usage
 * line and one line of help, and a handler. A trailing "json" argument asks
 * for JSON output where a command supports it (kvf_admin_want_json()).
 * Everything runs on the owning loop's thread.
 */
#ifndef KVF_ADMIN_H
#define KVF_ADMIN_H

#include <stddef.h>

#include "common/kvf_buf.h"
#include "common/kvf_loop.h"

#define KVF_ADMIN_MAX_WORDS 4
#define KVF_ADMIN_LINE_MAX 4096

typedef struct kvf_admin kvf_admin;
typedef struct kvf_admin_out kvf_admin_out;

/* argv: the arguments after the command words ("json" removed when it was
 * the last one). Return 0, or kvf_admin_error(...). */
typedef int (*kvf_admin_fn)(kvf_admin_out *out, int argc, char **argv, void *ud);

typedef struct kvf_admin_cmd {
	const char *words[KVF_ADMIN_MAX_WORDS]; /* {"show", "stats"}: NULL-terminated if shorter */
	const char *usage;                      /* "show stats [json]" */
	const char *help;                       /* one line */
	kvf_admin_fn fn;
} kvf_admin_cmd;

/* Listens on path (a stale socket is replaced). The loop is borrowed. */
int kvf_admin_new(kvf_loop *loop, const char *path, kvf_admin **out);
/* Closes every connection and removes the socket file. NULL ok. */
void kvf_admin_destroy(kvf_admin *a);

/* Registers a table (borrowed: static) whose handlers get ud. */
int kvf_admin_register(kvf_admin *a, const kvf_admin_cmd *cmds, size_t n, void *ud);

/* Runs one command line as if a client sent it; the reply (without the final
 * empty line) is appended to out. Returns the handler's result. */
int kvf_admin_exec(kvf_admin *a, const char *line, kvf_buf *out);

/* Output of the running command. */
int kvf_admin_printf(kvf_admin_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
kvf_buf *kvf_admin_buf(kvf_admin_out *out);
int kvf_admin_want_json(const kvf_admin_out *out);
/* Replaces any output with "error: <message>"; returns KVF_E_INVAL. */
int kvf_admin_error(kvf_admin_out *out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Number of open client connections (for show info and tests). */
size_t kvf_admin_clients(const kvf_admin *a);

#endif
