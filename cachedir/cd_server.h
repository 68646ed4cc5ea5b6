/*
 * cd_server.h: the cachedir service on one kvf_loop: the protocol listener,
 * connections, worker sessions and leases, lookups, WATCH subscribers, and
 * the module's metrics and admin commands.
 *
 * The daemon (cachedir/main.c) only parses config and hands the server its
 * loop, metrics registry and admin socket; unit tests run it the same way on
 * a private loop with port 0. Everything runs on the loop's thread.
 */
#ifndef KVF_CD_SERVER_H
#define KVF_CD_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cachedir/cd_index.h"
#include "common/kvf_admin.h"
#include "common/kvf_config.h"
#include "common/kvf_daemon.h"
#include "common/kvf_loop.h"
#include "common/kvf_metrics.h"

typedef struct cd_server cd_server;

/* The server's keys of the `cachedir { }` config section. */
typedef struct cd_server_opts {
	char *listen;               /* "host:port" of the protocol listener */
	uint64_t heartbeat_ms;      /* interval the server asks workers to heartbeat at */
	uint64_t lease_ms;          /* no heartbeat for this long: the worker and its blocks go */
	uint64_t warmup_ms;         /* after start, LOOKUP replies carry the WARMING flag */
	uint64_t max_frame_bytes;   /* largest frame accepted, header included */
	int64_t max_keys;           /* keys in one STORED / REMOVED / LOOKUP */
	int64_t max_workers;
	int64_t max_blocks;         /* distinct keys in the index */
	int64_t max_clients;        /* protocol connections */
	uint64_t max_output_bytes;  /* a client that lets more replies pile up is closed */
	uint64_t watch_buffer_bytes;/* a WATCH subscriber further behind is resynced */
	int64_t expected_blocks;    /* sizes the table at start (saves rehashing) */
} cd_server_opts;

/* Defaults as in docs/cachedir.md (a caller not using kvf_config). */
void cd_server_opts_default(cd_server_opts *o);

/* The whole `cachedir { }` section: the daemon's common keys and the
 * server's; kvf_cachedir_section (kvf_cachedir.h) is bound to it. */
typedef struct cd_daemon_cfg {
	kvf_daemon_cfg d;
	cd_server_opts srv;
} cd_daemon_cfg;

/* Cross-key checks (lease >= 2 heartbeats, ...). */
int cd_server_opts_validate(const cd_server_opts *o);

/*
 * Creates the server and starts listening on o->listen (copied). metrics and
 * admin may be NULL (unit tests); otherwise the server registers its metric
 * families and its admin commands (show workers, show blocks, show clients)
 * there. All three are borrowed and must outlive the server.
 */
int cd_server_new(kvf_loop *loop, const cd_server_opts *o, kvf_metrics *metrics, kvf_admin *admin,
		  cd_server **out);
/* Closes every connection and frees the index. NULL ok. */
void cd_server_destroy(cd_server *s);

/* The bound protocol port (useful with port 0). */
uint16_t cd_server_port(const cd_server *s);
cd_index *cd_server_index(cd_server *s);
/* Number of open protocol connections. */
size_t cd_server_clients(const cd_server *s);

#endif
