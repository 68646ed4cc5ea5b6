/*
 * safetensors.c: maps a .safetensors file and lists its tensors.
 *
 * Format: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [b, e]}, ...},
 * then the data (offsets relative to its start). The file is mmapped
 * read-only and the tensors point into the mapping, so loading a model costs
 * no copy and the page cache is shared between processes serving the same
 * weights. Every offset and size is checked against the file length before a
 * pointer is formed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/kvf_alloc.h"
#include "common/kvf_err.h"
#include "engine/safetensors.h"

static int dtype_from_st(const char *s, kvf_dtype *dt, size_t *esize)
{
	if (!strcmp(s, "F32")) {
		*dt = KVF_DTYPE_F32;
		*esize = 4;
	} else if (!strcmp(s, "BF16")) {
		*dt = KVF_DTYPE_BF16;
		*esize = 2;
	} else if (!strcmp(s, "F16")) {
		*dt = KVF_DTYPE_F16;
		*esize = 2;
	} else {
		*dt = KVF_DTYPE_AUTO;
		*esize = 0;
	}
	return 0;
}

int kvf_st_parse(const void *buf, size_t len, const char *path, kvf_st_file *f)
{
	memset(f, 0, sizeof *f);
	int rc = 0;
	if (len < 8)
		return kvf_errf(KVF_E_MODEL, "%s: too short for a safetensors file", path);
	uint64_t hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = (hlen << 8) | ((const uint8_t *)buf)[i];
	if (hlen > len - 8 || hlen > (100u << 20)) {
		rc = kvf_errf(KVF_E_MODEL, "%s: header length %llu beyond the file (%zu bytes)", path,
			      (unsigned long long)hlen, len);
		return rc;
	}
	const uint8_t *data = (const uint8_t *)buf + 8 + hlen;
	size_t data_len = len - 8 - hlen;

	json_error_t jerr;
	json_t *root = json_loadb((const char *)buf + 8, hlen, 0, &jerr);
	if (!root || !json_is_object(root)) {
		rc = kvf_errf(KVF_E_MODEL, "%s: header is not a JSON object: %s", path,
			      root ? "" : jerr.text);
		json_decref(root);
		return rc;
	}
	size_t n = json_object_size(root);
	f->tensors = kvf_calloc(n ? n : 1, sizeof *f->tensors);
	if (!f->tensors) {
		json_decref(root);
		return KVF_E_NOMEM;
	}
	const char *name;
	json_t *v;
	json_object_foreach(root, name, v)
	{
		if (!strcmp(name, "__metadata__"))
			continue;
		kvf_st_tensor *t = &f->tensors[f->n_tensors];
		json_t *jd = json_object_get(v, "dtype");
		json_t *js = json_object_get(v, "shape");
		json_t *jo = json_object_get(v, "data_offsets");
		if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
		    json_array_size(jo) != 2 || json_array_size(js) > 4) {
			rc = kvf_errf(KVF_E_MODEL, "%s: tensor %s: bad header entry", path, name);
			break;
		}
		t->name = kvf_strdup(name);
		if (!t->name) {
			rc = KVF_E_NOMEM;
			break;
		}
		f->n_tensors++;
		snprintf(t->st_dtype, sizeof t->st_dtype, "%s", json_string_value(jd));
		size_t esize;
		dtype_from_st(t->st_dtype, &t->dtype, &esize);
		t->ndim = (int)json_array_size(js);
		uint64_t count = 1;
		for (int d = 0; d < t->ndim; d++) {
			json_t *x = json_array_get(js, (size_t)d);
			if (!json_is_integer(x) || json_integer_value(x) < 0) {
				rc = kvf_errf(KVF_E_MODEL, "%s: tensor %s: bad shape", path, name);
				goto done;
			}
			t->shape[d] = json_integer_value(x);
			if (t->shape[d] && count > UINT64_MAX / (uint64_t)t->shape[d]) {
				rc = kvf_errf(KVF_E_MODEL, "%s: tensor %s: shape overflows", path,
					      name);
				goto done;
			}
			count *= (uint64_t)t->shape[d];
		}
		json_t *b = json_array_get(jo, 0), *e = json_array_get(jo, 1);
		if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
		    json_integer_value(e) < json_integer_value(b) ||
		    (uint64_t)json_integer_value(e) > data_len) {
			rc = kvf_errf(KVF_E_MODEL, "%s: tensor %s: data_offsets outside the file",
				      path, name);
			break;
		}
		t->nbytes = (size_t)(json_integer_value(e) - json_integer_value(b));
		t->data = data + json_integer_value(b);
		if (esize && (uint64_t)t->nbytes != count * esize) {
			rc = kvf_errf(KVF_E_MODEL,
				      "%s: tensor %s: %zu bytes for %llu elements of %s", path,
				      name, t->nbytes, (unsigned long long)count, t->st_dtype);
			break;
		}
	}
done:
	json_decref(root);
	if (rc) {
		for (int i = 0; i < f->n_tensors; i++)
			kvf_free(f->tensors[i].name);
		kvf_free(f->tensors);
		memset(f, 0, sizeof *f);
		return rc;
	}
	return 0;
}

int kvf_st_open(const char *path, kvf_st_file *f)
{
	memset(f, 0, sizeof *f);
	int rc = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kvf_errf(kvf_err_from_errno(errno), "%s: %s", path, strerror(errno));
	struct stat st;
	if (fstat(fd, &st) < 0) {
		rc = kvf_errf(KVF_E_IO, "%s: %s", path, strerror(errno));
		goto err_close;
	}
	if (st.st_size < 8) {
		rc = kvf_errf(KVF_E_MODEL, "%s: too short for a safetensors file", path);
		goto err_close;
	}
	size_t len = (size_t)st.st_size;
	void *base = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (base == MAP_FAILED) {
		rc = kvf_errf(KVF_E_IO, "%s: mmap: %s", path, strerror(errno));
		goto err_close;
	}
	close(fd);
	if ((rc = kvf_st_parse(base, len, path, f))) {
		munmap(base, len);
		return rc;
	}
	f->base = base;
	f->len = len;
	return 0;
err_close:
	close(fd);
	return rc;
}

void kvf_st_close(kvf_st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n_tensors; i++)
		kvf_free(f->tensors[i].name);
	kvf_free(f->tensors);
	if (f->base)
		munmap(f->base, f->len);
	memset(f, 0, sizeof *f);
}
