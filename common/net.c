/*
 * net.c: socket helpers. Name resolution uses getaddrinfo with AI_NUMERICSERV;
 * daemons resolve at start-up and on reconnect, never on a data path.
 */
#include "common/kvf_net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/kvf_err.h"

int kvf_net_parse_hostport(const char *s, char *host, size_t host_len, uint16_t *port)
{
	if (!s || !*s)
		return kvf_errf(KVF_E_INVAL, "empty address (expected host:port)");
	const char *colon;
	const char *h = s;
	size_t hl;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return kvf_errf(KVF_E_INVAL, "'%s': expected [ipv6]:port", s);
		h = s + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return kvf_errf(KVF_E_INVAL, "'%s': missing ':port'", s);
		if (memchr(s, ':', (size_t)(colon - s)))
			return kvf_errf(KVF_E_INVAL, "'%s': IPv6 addresses need brackets", s);
		hl = (size_t)(colon - s);
	}
	if (hl + 1 > host_len)
		return kvf_errf(KVF_E_INVAL, "'%s': host name too long", s);
	char *end;
	errno = 0;
	long p = strtol(colon + 1, &end, 10);
	if (colon[1] == '\0' || *end != '\0' || errno || p < 0 || p > 65535)
		return kvf_errf(KVF_E_INVAL, "'%s': port must be 0..65535", s);
	memcpy(host, h, hl);
	host[hl] = '\0';
	*port = (uint16_t)p;
	return 0;
}

static int resolve(const char *hostport, int passive, struct addrinfo **res)
{
	char host[KVF_NET_HOST_MAX], portstr[8];
	uint16_t port;
	int rc = kvf_net_parse_hostport(hostport, host, sizeof(host), &port);
	if (rc)
		return rc;
	snprintf(portstr, sizeof(portstr), "%u", port);
	struct addrinfo hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
	int g = getaddrinfo(host[0] ? host : NULL, portstr, &hints, res);
	if (g != 0)
		return kvf_errf(KVF_E_NOTFOUND, "cannot resolve '%s': %s", hostport, gai_strerror(g));
	return 0;
}

int kvf_net_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0)
		return kvf_errf(kvf_err_from_errno(errno), "fcntl: %s", strerror(errno));
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	if (fcntl(fd, F_SETFL, fl) < 0)
		return kvf_errf(kvf_err_from_errno(errno), "fcntl: %s", strerror(errno));
	return 0;
}

int kvf_net_set_nodelay(int fd, int on)
{
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0)
		return kvf_errf(kvf_err_from_errno(errno), "TCP_NODELAY: %s", strerror(errno));
	return 0;
}

int kvf_net_listen_tcp(const char *hostport, int backlog, int *fd_out)
{
	struct addrinfo *res, *ai;
	int rc = resolve(hostport, 1, &res);
	if (rc)
		return rc;
	int err = 0;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		int one = 1;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) {
			freeaddrinfo(res);
			*fd_out = fd;
			return 0;
		}
		err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return kvf_errf(kvf_err_from_errno(err), "listen on %s: %s", hostport, strerror(err));
}

int kvf_net_listen_unix(const char *path, unsigned mode, int backlog, int *fd_out)
{
	struct sockaddr_un sa = {0};
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		return kvf_errf(KVF_E_INVAL, "unix socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kvf_errf(kvf_err_from_errno(errno), "socket: %s", strerror(errno));
	/* Replace a stale socket file, but never another kind of file, and
	 * never a socket another process still serves. */
	struct stat st;
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			close(fd);
			return kvf_errf(KVF_E_EXISTS, "%s exists and is not a socket", path);
		}
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
			close(probe);
			close(fd);
			return kvf_errf(KVF_E_EXISTS, "%s is in use by another process", path);
		}
		if (probe >= 0)
			close(probe);
		unlink(path);
	}
	/* Create with the final mode: no window where others can connect. */
	mode_t old = umask(0777 & ~mode);
	int brc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	int berr = errno;
	umask(old);
	if (brc != 0) {
		close(fd);
		return kvf_errf(kvf_err_from_errno(berr), "bind %s: %s", path, strerror(berr));
	}
	if (chmod(path, mode) != 0 || listen(fd, backlog) != 0) {
		int e = errno;
		close(fd);
		unlink(path);
		return kvf_errf(kvf_err_from_errno(e), "listen %s: %s", path, strerror(e));
	}
	*fd_out = fd;
	return 0;
}

int kvf_net_connect_tcp(const char *hostport, int nonblock, int *fd_out)
{
	struct addrinfo *res, *ai;
	int rc = resolve(hostport, 0, &res);
	if (rc)
		return rc;
	int err = 0;
	for (ai = res; ai; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || (nonblock && errno == EINPROGRESS)) {
			int family = ai->ai_family;
			freeaddrinfo(res);
			if (family != AF_UNIX)
				kvf_net_set_nodelay(fd, 1);
			*fd_out = fd;
			return 0;
		}
		err = errno;
		close(fd);
	}
	freeaddrinfo(res);
	return kvf_errf(kvf_err_from_errno(err), "connect to %s: %s", hostport, strerror(err));
}

int kvf_net_connect_result(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err)
		return kvf_errf(kvf_err_from_errno(err), "connect: %s", strerror(err));
	return 0;
}

int kvf_net_connect_unix(const char *path, int *fd_out)
{
	struct sockaddr_un sa = {0};
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path))
		return kvf_errf(KVF_E_INVAL, "unix socket path too long: %s", path);
	strcpy(sa.sun_path, path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return kvf_errf(kvf_err_from_errno(errno), "socket: %s", strerror(errno));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		int e = errno;
		close(fd);
		return kvf_errf(kvf_err_from_errno(e), "connect %s: %s", path, strerror(e));
	}
	*fd_out = fd;
	return 0;
}

int kvf_net_local_port(int fd, uint16_t *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
		return kvf_errf(kvf_err_from_errno(errno), "getsockname: %s", strerror(errno));
	if (ss.ss_family == AF_INET)
		*port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	else if (ss.ss_family == AF_INET6)
		*port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	else
		return kvf_errf(KVF_E_INVAL, "not an IP socket");
	return 0;
}

void kvf_net_peer_name(int fd, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char ip[INET6_ADDRSTRLEN];
	snprintf(out, len, "?");
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
		snprintf(out, len, "%s:%u", ip, ntohs(s4->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
		snprintf(out, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
	} else if (ss.ss_family == AF_UNIX) {
		snprintf(out, len, "unix");
	}
}
