/*
 * kvf_net.h: small socket helpers every daemon needs (Redis's anet.c in
 * spirit): parse "host:port", listen and connect on TCP and Unix sockets,
 * non-blocking and low-latency options. All return 0 or a negative KVF_E_*
 * with a message in kvf_errmsg().
 */
#ifndef KVF_NET_H
#define KVF_NET_H

#include <stddef.h>
#include <stdint.h>

#define KVF_NET_HOST_MAX 256

/* Splits "host:port", "[v6]:port" or ":port" (host "" = any). */
int kvf_net_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port);

/* Listening TCP socket, non-blocking, SO_REUSEADDR, backlog given.
 * Port 0 binds an ephemeral port: read it back with kvf_net_local_port(). */
int kvf_net_listen_tcp(const char *hostport, int backlog, int *fd_out);

/* Listening Unix socket at path (a stale socket file is replaced), chmod mode. */
int kvf_net_listen_unix(const char *path, unsigned mode, int backlog, int *fd_out);

/* Connects to "host:port". With nonblock, returns 0 with the connect in
 * progress (wait for writability, then kvf_net_connect_result()). */
int kvf_net_connect_tcp(const char *hostport, int nonblock, int *fd_out);

/* After a non-blocking connect became writable: 0 or the error. */
int kvf_net_connect_result(int fd);

int kvf_net_connect_unix(const char *path, int *fd_out);

int kvf_net_set_nonblock(int fd, int on);
int kvf_net_set_nodelay(int fd, int on);
int kvf_net_local_port(int fd, uint16_t *port);

/* Peer "ip:port" into out (for logs); "?" when unknown. */
void kvf_net_peer_name(int fd, char *out, size_t len);

#endif
