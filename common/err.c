/*
 * err.c: the error table turned into strings, and the per-thread detail
 * message that lets a deep failure (a config line, a JSON path, a tensor name)
 * reach the user without every layer passing buffers around.
 */
#include "common/kvf_err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define KVF_ERRMSG_MAX 512

static _Thread_local char errmsg[KVF_ERRMSG_MAX];
static _Thread_local int errcode;

const char *kvf_strerror(int err)
{
	switch (err) {
#define KVF_ERR_CASE(name, val, msg) case val: return msg;
	KVF_ERRORS(KVF_ERR_CASE)
#undef KVF_ERR_CASE
	}
	return "unknown error";
}

const char *kvf_errname(int err)
{
	switch (err) {
#define KVF_ERR_CASE(name, val, msg) case val: return #name;
	KVF_ERRORS(KVF_ERR_CASE)
#undef KVF_ERR_CASE
	}
	return "UNKNOWN";
}

int kvf_err_from_errno(int errnum)
{
	switch (errnum) {
	case 0: return KVF_E_OK;
	case ENOMEM: return KVF_E_NOMEM;
	case EINVAL: return KVF_E_INVAL;
	case EAGAIN: return KVF_E_AGAIN;
	case ETIMEDOUT: return KVF_E_TIMEOUT;
	case EPIPE: case ECONNRESET: case ENOTCONN: return KVF_E_CLOSED;
	case ECONNREFUSED: return KVF_E_CONNREFUSED;
	case E2BIG: case EMSGSIZE: case EFBIG: return KVF_E_TOOBIG;
	case ERANGE: case EOVERFLOW: return KVF_E_RANGE;
	case ENOENT: case ESRCH: return KVF_E_NOTFOUND;
	case EEXIST: case EADDRINUSE: return KVF_E_EXISTS;
	case EBUSY: return KVF_E_BUSY;
	case EACCES: case EPERM: return KVF_E_ACCESS;
	case ENOSYS: case EOPNOTSUPP: case EPROTONOSUPPORT: case EAFNOSUPPORT: return KVF_E_UNSUPPORTED;
	case ENODEV: case ENXIO: return KVF_E_NODEV;
	case ENOSPC: return KVF_E_FULL;
	case ECANCELED: return KVF_E_CANCELED;
	case EPROTO: case EBADMSG: return KVF_E_PROTO;
	default: return KVF_E_IO;
	}
}

int kvf_verrf(int err, const char *fmt, va_list ap)
{
	/* Format aside first: callers often wrap the previous message,
	 * kvf_errf(rc, "context: %s", kvf_errmsg()). */
	char tmp[KVF_ERRMSG_MAX];
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	memcpy(errmsg, tmp, sizeof(errmsg));
	errcode = err;
	return err;
}

int kvf_errf(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kvf_verrf(err, fmt, ap);
	va_end(ap);
	return err;
}

const char *kvf_errmsg(void)
{
	if (errmsg[0])
		return errmsg;
	return kvf_strerror(errcode);
}

void kvf_err_clear(void)
{
	errmsg[0] = '\0';
	errcode = 0;
}
