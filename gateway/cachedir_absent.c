/*
 * cachedir_absent.c: linked instead of index_cachedir.c when the tree has no
 * cachedir client library (cachedir/kvf_cachedir.h). The gateway then routes
 * with the local or no index, and `index = cachedir` is a configuration
 * error that says so; nothing pretends to talk to a directory.
 */
#include "common/kvf_err.h"
#include "gateway/gw_core.h"

int gw_cachedir_supported(void)
{
	return 0;
}

int gw_cachedir_start(kvf_gateway *gw)
{
	return kvf_errf(KVF_E_UNSUPPORTED, "this build has no cachedir client");
}

void gw_cachedir_stop(kvf_gateway *gw)
{
}

void gw_cachedir_info(kvf_gateway *gw, kvf_buf *out)
{
}
